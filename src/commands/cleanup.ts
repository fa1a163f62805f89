import { Flags } from '@oclif/core'
import { BaseCommand } from '../cli/base-command.js'
import { Progress } from '../cli/progress.js'
import { renderPairs } from '../cli/render.js'
import type { CleanupResult } from '../core/cleanup.js'
import { formatBytes, formatDuration } from '../shared/units.js'

export default class Cleanup extends BaseCommand<typeof Cleanup> {
  static override summary =
    'Delete sent and expired messages, apply the size limits and shrink the outbox file.'
  static override description =
    'Deletes sent messages older than cleanup.sentRetention and expired messages (sent or not; unsent ones count as ' +
    'expired), applies storage.maxBytes / storage.maxMessages under storage.overflow (drop-oldest drops the ' +
    'oldest pending messages; reject never deletes one), then gives the freed space back to the file system ' +
    '(incremental vacuum and a WAL checkpoint) so the database file shrinks. A pending message that has not ' +
    'expired is never deleted otherwise. Works in transactions of about a millisecond with pauses between ' +
    'them, so a `rmq publish` running at the same time waits a few milliseconds at most. Meant for cron and ' +
    'systemd timers (see `rmq schedule`); an overlapping run exits 0 saying another cleanup is running. ' +
    'Exit codes: 0 done (also: nothing to delete, another cleanup running); 78 configuration error.'
  static override examples = [
    '<%= config.bin %> cleanup',
    '<%= config.bin %> cleanup --dry-run',
    'RMQ_CLEANUP_SENT_RETENTION=1h <%= config.bin %> cleanup --json',
  ]
  static override flags = {
    'dry-run': Flags.boolean({ description: 'Report what would be deleted; change nothing.' }),
  }

  async run(): Promise<CleanupResult> {
    const loaded = await this.loadConfig()
    const { cleanupOutbox } = await import('../core/cleanup.js')
    const progress = new Progress('cleanup')
    try {
      const r = await cleanupOutbox(loaded.config, loaded.cwd, {
        dryRun: this.flags['dry-run'],
        signal: this.abortSignal(),
        onProgress: (p) =>
          progress.update(
            p.phase === 'compact'
              ? `shrinking the file: ${p.freePages} free page(s) left`
              : `${p.sentDeleted} sent, ${p.expiredDeleted} expired, ${p.dropped} dropped deleted`,
          ),
      })
      progress.done()
      this.say(cleanupSummary(r))
      return r
    } finally {
      progress.done()
    }
  }
}

/** Human text: one headline (cron logs) and the figures. */
function cleanupSummary(r: CleanupResult): string {
  if (r.status === 'locked') return 'another cleanup is running on this outbox; nothing done'
  const verb = r.dryRun ? 'would delete' : 'deleted'
  const head =
    `${r.dryRun ? 'dry run: ' : ''}${verb} ${r.sentDeleted} sent (retention ${formatDuration(r.sentRetentionMs)}) ` +
    `and ${r.expiredDeleted} expired message(s)` +
    (r.dryRun ? '' : `, dropped ${r.dropped} pending to meet the limits`) +
    `, ${formatBytes(r.bytesFreed)}` +
    (r.interrupted ? '; interrupted (the next run continues)' : '')
  const pairs: Array<[string, string | number]> = [
    ['sent deleted', r.sentDeleted],
    ['expired deleted', r.expiredDeleted],
  ]
  if (!r.dryRun) {
    pairs.push(['dropped (limits)', r.dropped], ['other deleted (limits)', r.limitDeleted])
  }
  pairs.push(
    ['bytes freed', formatBytes(r.bytesFreed)],
    [
      r.dryRun ? 'would remain' : 'remaining',
      `${r.remaining.messages} message(s), ${formatBytes(r.remaining.bytes)} ` +
        `(${r.remaining.pending} pending, ${r.remaining.sentKept} sent)`,
    ],
  )
  if (r.limits.overBytes > 0 || r.limits.overMessages > 0)
    pairs.push([
      'over the limits',
      `${formatBytes(r.limits.overBytes)} / ${r.limits.overMessages} message(s) ` +
        (r.limits.overflow === 'drop-oldest'
          ? `(${r.dryRun ? 'a real run drops' : 'still over: drop'} the oldest pending messages)`
          : '(overflow=reject: new publishes fail until `rmq sync` sends the backlog)'),
    ])
  if (r.fileBytesBefore !== null)
    pairs.push([
      'file size',
      r.fileBytesAfter === null
        ? formatBytes(r.fileBytesBefore)
        : `${formatBytes(r.fileBytesBefore)} -> ${formatBytes(r.fileBytesAfter)}`,
    ])
  if (!r.dryRun)
    pairs.push([
      'took',
      `${formatDuration(r.durationMs)} in ${r.transactions} transaction(s), longest ${r.longestTransactionMs} ms`,
    ])
  return `${head}\n${renderPairs(pairs)}`
}
