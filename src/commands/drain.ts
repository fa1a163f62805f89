import { Flags } from '@oclif/core'
import { BaseCommand } from '../cli/base-command.js'
import { Progress } from '../cli/progress.js'
import { syncResultJson, syncSummary } from '../cli/sync-summary.js'
import type { SyncResult } from '../core/sync.js'
import { formatBytes } from '../shared/units.js'
import { parseDurationFlag } from '../cli/duration-flag.js'

export default class Drain extends BaseCommand<typeof Drain> {
  static override summary = 'Forward everything pending until the outbox is empty or --timeout passes.'
  static override description =
    'For a shutdown, a firmware update or a maintenance window: sends batches oldest first, retrying ' +
    'failures with backoff inside the run (ignoring a backoff left by earlier runs), and waits for another ' +
    'running sync to finish. Shows progress on a terminal and a summary at the end. ' +
    'Exit codes: 0 the outbox is empty; 75 messages are left at the timeout (they stay stored); 65 the ' +
    'broker permanently rejected a batch; 78 configuration error.'
  static override examples = [
    '<%= config.bin %> drain',
    '<%= config.bin %> drain --timeout 30s',
    '<%= config.bin %> drain --timeout 10m --json',
  ]
  static override flags = {
    timeout: Flags.string({ description: 'Give up after this long.', default: '5m', helpValue: 'DURATION' }),
  }

  async run(): Promise<SyncResult> {
    const timeout = parseDurationFlag(this.flags.timeout, '--timeout')
    const loaded = await this.loadConfig()
    const { openOutbox } = await import('../core/outbox.js')
    const { drain } = await import('../core/sync.js')
    const driver = await openOutbox(loaded.config, loaded.cwd)
    const progress = new Progress('draining')
    const signal = this.abortSignal()
    try {
      const start = await driver.stats(Date.now())
      const total = start.pending
      progress.update(`0/${total} messages`, true)
      const result = await drain(
        { driver, config: loaded.config, cwd: loaded.cwd },
        {
          timeout,
          signal,
          onProgress: (p) =>
            progress.update(
              `${p.messages}/${Math.max(total, p.messages + p.pending)} messages, ${formatBytes(p.bytesWire)} sent, ` +
                `${p.pending} pending`,
            ),
        },
      )
      progress.done()
      this.say(`drained: ${syncSummary(result)}`)
      return syncResultJson(result)
    } finally {
      progress.done()
      await driver.close()
    }
  }
}
