import { Flags } from '@oclif/core'
import { BaseCommand } from '../cli/base-command.js'
import { syncResultJson, syncSummary } from '../cli/sync-summary.js'
import { UsageError } from '../shared/errors.js'
import type { SyncResult, WatchSummary } from '../core/sync.js'
import { formatBytes, parseSize, SIZE_FORMS } from '../shared/units.js'

export default class Sync extends BaseCommand<typeof Sync> {
  static override summary = 'Forward pending messages to the broker in compressed batches (one bounded run).'
  static override description =
    'Meant for cron and systemd timers: sends batches until the outbox is empty (or --max-batches / the byte ' +
    'budget is reached), and a heartbeat when there is nothing to send. A failed attempt sets a backoff kept ' +
    'in the outbox: runs during the backoff exit 0 and say when the next attempt is due (--force tries now). ' +
    'Overlapping runs never send the same batch: a second run exits 0 saying another sync is running. ' +
    'When the backlog is larger than the budget, higher priority and newest messages go first. ' +
    'Exit codes: 0 sent, nothing to send, backing off or another sync running; 75 the attempt failed ' +
    '(broker down, 5xx, 429, timeout; retry later); 65 the broker permanently rejected a batch (messages stay ' +
    'pending); 78 configuration error (e.g. token refused).'
  static override examples = [
    '<%= config.bin %> sync',
    '<%= config.bin %> sync --budget 5MB',
    '<%= config.bin %> sync --watch',
    '<%= config.bin %> sync --force --max-batches 10 --json',
  ]
  static override flags = {
    watch: Flags.boolean({
      char: 'w',
      description: 'Repeat every sync.interval in this process until SIGINT/SIGTERM.',
    }),
    force: Flags.boolean({ description: 'Try now even while a backoff is in force.' }),
    'max-batches': Flags.integer({ description: 'Send at most N batches in this run.', min: 1 }),
    budget: Flags.string({
      description: 'Most bytes on the wire in this run (default sync.maxBytesPerRun), e.g. 5MB.',
      helpValue: 'SIZE',
    }),
  }

  async run(): Promise<SyncResult | WatchSummary> {
    const f = this.flags
    let budget: number | undefined
    if (f.budget !== undefined) {
      budget = parseSize(f.budget)
      if (budget === undefined)
        throw new UsageError(`--budget: ${JSON.stringify(f.budget)} is not a size`, {
          suggestion: `use ${SIZE_FORMS}`,
        })
    }
    const loaded = await this.loadConfig()
    const { openOutbox } = await import('../core/outbox.js')
    const { syncOnce, watchSync } = await import('../core/sync.js')
    const driver = await openOutbox(loaded.config, loaded.cwd)
    const deps = { driver, config: loaded.config, cwd: loaded.cwd }
    try {
      if (!f.watch) {
        const result = await syncOnce(deps, { force: f.force, maxBatches: f['max-batches'], budget })
        this.say(syncSummary(result))
        return syncResultJson(result)
      }
      this.note(
        `rmq sync --watch: every ${loaded.config.sync.interval} ms to ${loaded.config.brokerUrl}; Ctrl-C stops`,
      )
      const summary = await watchSync(deps, {
        interval: loaded.config.sync.interval,
        signal: this.abortSignal(),
        force: f.force,
        maxBatches: f['max-batches'],
        budget,
        onRun: ({ result, error }) =>
          this.note(
            `${new Date().toISOString()} ${result ? syncSummary(result) : `failed: ${error!.message}`}`,
          ),
      })
      this.say(
        `stopped after ${summary.runs} run(s): ${summary.messages} message(s) sent, ` +
          `${formatBytes(summary.bytesRaw)} -> ${formatBytes(summary.bytesWire)}, ${summary.failures} failed run(s), ` +
          `${summary.pending} pending`,
      )
      return summary
    } finally {
      await driver.close()
    }
  }
}
