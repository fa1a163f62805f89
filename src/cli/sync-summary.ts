/**
 * The words of `rmq sync` and `rmq drain` for a person: the one-line summary
 * of a run and the fix for each way a run can fail. The engine (src/core/sync/)
 * returns figures and a problem code (`details.problem`, SyncProblem); what to
 * do about it, in commands and flags of this CLI, is said here.
 */
import type { SyncProblem, SyncResult } from '../core/sync.js'
import { isRmqError } from '../shared/errors.js'
import { formatBytes, formatDuration } from '../shared/units.js'

/** One line about a sync or drain run, for people and cron logs. */
export function syncSummary(r: SyncResult): string {
  if (r.status === 'backoff') return `${r.message ?? r.status}; use --force to try now`
  if (r.status !== 'ok') return r.message ?? r.status
  const parts: string[] = []
  if (r.messages > 0) {
    const ratio = r.bytesWire > 0 ? ` (${(r.bytesRaw / r.bytesWire).toFixed(1)}x)` : ''
    parts.push(
      `sent ${r.messages} message(s) in ${r.batches} batch(es): ${formatBytes(r.bytesRaw)} -> ` +
        `${formatBytes(r.bytesWire)} ${r.codec}${ratio}`,
    )
    if (r.duplicates > 0) parts.push(`${r.duplicates} already at the broker`)
    if (r.order === 'newest') parts.push('newest first (backlog larger than the budget)')
  } else if (r.heartbeat) parts.push('nothing to send; heartbeat sent')
  else parts.push('nothing sent')
  if (r.retries > 0) parts.push(`${r.retries} failed attempt(s) retried`)
  const why: Record<string, string> = {
    budget: `budget of ${formatBytes(r.budget)} reached`,
    'max-batches': 'batch limit reached',
    deadline: 'time limit reached',
    aborted: 'interrupted',
    'lease-lost': 'another sync took over',
  }
  if (r.stoppedBy && why[r.stoppedBy]) parts.push(why[r.stoppedBy])
  parts.push(`${r.pending} pending${r.pending > 0 ? ` (${formatBytes(r.pendingBytes)})` : ''}`)
  parts.push(`in ${formatDuration(r.durationMs)}`)
  return parts.join('; ')
}

/** A run's result as `--json` shows it: `message` in the words of syncSummary. */
export function syncResultJson(r: SyncResult): SyncResult {
  return r.status === 'ok' ? r : { ...r, message: syncSummary(r) }
}

const ADVICE: Record<SyncProblem, (d: Record<string, unknown>) => string> = {
  'drain-locked': () =>
    'wait for the other `rmq sync` / `rmq drain` to finish (see `rmq status`), then run `rmq drain` again',
  'drain-interrupted': () =>
    'run `rmq drain` again to send the rest (a batch cut off in flight is sent again; the broker keeps one copy)',
  'drain-timeout': () =>
    'check that the broker is reachable (`rmq status --broker`), then run `rmq drain` again',
  'token-refused': (d) =>
    `set \`token\` (RMQ_TOKEN) to a token made with \`rmq broker token create ${String(d.node)}\` on the broker`,
  'token-other-node': (d) =>
    'the token is bound to another node: set nodeId to its node, or create one with ' +
    `\`rmq broker token create ${String(d.node)}\``,
  'batch-rejected': () =>
    'fix the cause the broker gives (or upgrade the broker/edge so they agree), then run `rmq sync` again',
  'message-too-large': () =>
    'one message is larger than the broker accepts: raise broker.limits.* on the broker or lower sync.batchBytes',
  'attempt-failed': () =>
    'the messages are safe in the outbox; later runs retry after the backoff (`rmq sync --force` tries now)',
}

/** The fix for an error of the sync engine (by its `details.problem`), else undefined. */
export function syncAdvice(err: unknown): string | undefined {
  if (!isRmqError(err)) return undefined
  const problem = err.details?.problem
  if (typeof problem !== 'string' || !Object.hasOwn(ADVICE, problem)) return undefined
  return ADVICE[problem as SyncProblem](err.details ?? {})
}

/**
 * The error with the CLI's fix when the engine left it to the caller (the
 * `suggestion` shown as `fix:` and in `--json`); any other error unchanged.
 */
export function withAdvice(err: unknown): unknown {
  if (!isRmqError(err) || err.suggestion) return err
  const suggestion = syncAdvice(err)
  if (suggestion) (err as { suggestion?: string }).suggestion = suggestion
  return err
}
