import { Flags } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import type { WatermarkReport } from '../../broker/watermark.js'

export default class BrokerWatermark extends BaseCommand<typeof BrokerWatermark> {
  static override summary =
    'Show the event-order watermark, which node holds it and why; repair a poisoned one.'
  static override description =
    'Reads the broker store (broker.dataDir or broker.postgres.url) directly: works with the broker running ' +
    'or stopped. Lists the live edge nodes lowest low mark first; the first one still holding is what the ' +
    'watermark waits for. A node further behind than broker.ordering.maxHoldBack is shown as not holding. ' +
    '--reset-to TIME moves a watermark that a bad clock pushed into the future back to TIME (admin: needs ' +
    'access to the store); a running broker logs the change. docs/ordering.md.'
  static override examples = [
    '<%= config.bin %> broker watermark',
    '<%= config.bin %> broker watermark --json',
    '<%= config.bin %> broker watermark --reset-to 2026-12-03T12:00:00Z',
  ]
  static override flags = {
    'data-dir': Flags.string({ description: 'Broker data directory (broker.dataDir).' }),
    'reset-to': Flags.string({
      description: 'Move the watermark back to this time (ISO 8601 or epoch ms); only backwards.',
    }),
  }

  async run(): Promise<WatermarkReport & { reset?: { before: number | null; after: number } }> {
    const { withBrokerStore } = await import('../../broker/admin.js')
    const { resetWatermark, watermarkReport } = await import('../../broker/watermark.js')
    const { renderTable } = await import('../../cli/render.js')
    const loaded = await this.loadConfig(
      this.flags['data-dir'] ? { 'broker.dataDir': this.flags['data-dir'] } : {},
    )
    const o = loaded.config.broker.ordering
    const bounds = { maxLateness: o.maxLateness, maxHoldBack: o.maxHoldBack, maxFutureSkew: o.maxFutureSkew }
    const iso = (t: number | null) => (t === null ? 'none yet' : new Date(t).toISOString())
    return withBrokerStore(
      loaded.config,
      async (store) => {
        const resetTo = this.flags['reset-to']
        const reset =
          resetTo === undefined ? undefined : await resetWatermark(store, resetTo, bounds, Date.now())
        if (reset) this.say(`watermark reset from ${iso(reset.before)} to ${iso(reset.after)}`)
        const report = await watermarkReport(store, bounds, Date.now())
        const holder = report.holders.find((h) => h.holding)
        this.say(`watermark  ${iso(report.watermark)}`)
        this.say(`held       ${report.held} message(s)`)
        this.say(
          `held by    ${holder ? `${holder.node}: ${holder.reason}` : 'no live node (everything stored is released)'}`,
        )
        if (report.holders.length > 0)
          this.say(
            '\n' +
              renderTable(
                ['node', 'low mark', 'holding', 'why'],
                report.holders.map((h) => [h.node, iso(h.lowMark), h.holding ? 'yes' : 'no', h.reason]),
              ),
          )
        return reset ? { ...report, reset } : report
      },
      { existing: true },
    )
  }
}
