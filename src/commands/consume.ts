import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../cli/base-command.js'
import type { ConsumeSummary } from '../core/consumer.js'
import { UsageError } from '../shared/errors.js'

export default class Consume extends BaseCommand<typeof Consume> {
  static override summary = 'Print messages from the broker, one per line, in event-time or arrival order.'
  static override description =
    'Reads GET /v1/messages of the broker at brokerUrl with token. Event order (default) is (ts, node, seq) ' +
    'up to the watermark; messages that arrived below it are marked late. With --group the broker keeps the ' +
    'position: a restarted consumer continues after the last message it printed. --follow waits for new ' +
    'messages and rides out broker restarts. --json prints NDJSON: one object per message. When an ' +
    'event-order read ends with matching messages held behind the watermark, one line on stderr says how many ' +
    'and which node they wait for (with --json also a last line with "type":"held").'
  static override examples = [
    "<%= config.bin %> consume 'plant/#'",
    "<%= config.bin %> consume 'plant/+/temp' --follow --group dashboard --json",
    "<%= config.bin %> consume '#' --order arrival --from now --follow",
    "<%= config.bin %> consume 'plant/#' --from 1200 --limit 100",
  ]
  static override args = {
    filter: Args.string({ description: 'MQTT-style topic filter: + one level, # the rest.', required: true }),
  }
  static override flags = {
    follow: Flags.boolean({ char: 'f', description: 'Keep waiting for new messages (long-poll).' }),
    order: Flags.string({
      description: 'event: by original time; arrival: ingest order.',
      options: ['event', 'arrival'],
      default: 'event',
    }),
    from: Flags.string({
      description: 'start, now, or a position (inclusive). Default: the group position, else start.',
    }),
    group: Flags.string({ description: 'Consumer group name: the broker remembers its position.' }),
    limit: Flags.integer({ description: 'Stop after this many messages.', min: 1 }),
    'broker-url': Flags.string({ description: 'Broker URL (brokerUrl).' }),
  }

  async run(): Promise<void> {
    const f = this.flags
    let from: 'start' | 'now' | number | undefined
    if (f.from === undefined) from = f.group ? undefined : 'start'
    else if (f.from === 'start' || f.from === 'now') from = f.from
    else if (/^\d+$/.test(f.from) && Number(f.from) >= 1) from = Number(f.from)
    else
      throw new UsageError(`--from must be start, now or a position >= 1, got ${JSON.stringify(f.from)}`, {
        suggestion: 'e.g. --from start, --from now or --from 1200',
      })
    const { topicFilterProblem } = await import('../protocol/topic-filter.js')
    const problem = topicFilterProblem(this.args.filter)
    if (problem) throw new UsageError(`invalid topic filter ${JSON.stringify(this.args.filter)}: ${problem}`)
    const loaded = await this.loadConfig(f['broker-url'] ? { brokerUrl: f['broker-url'] } : {})
    const { runConsume, heldExplanation, formatHeldJson } = await import('../core/consumer.js')
    const { tlsFromConfig } = await import('../core/tls.js')
    const summary: ConsumeSummary = await runConsume({
      brokerUrl: loaded.config.brokerUrl,
      token: loaded.config.token || undefined,
      topic: this.args.filter,
      order: f.order as 'event' | 'arrival',
      from,
      group: f.group,
      follow: f.follow,
      limit: f.limit,
      json: this.jsonEnabled(),
      timeoutMs: loaded.config.sync.timeout,
      maxPageBytes: loaded.config.consume.maxPageBytes,
      tls: tlsFromConfig(loaded.config, loaded.cwd),
      signal: this.abortSignal(),
    })
    if (f.follow || summary.readerGone) return
    if (summary.held && (summary.held.count > 0 || summary.held.capped)) {
      // Held behind the watermark: say for whom, on stderr, and as the last NDJSON line with --json.
      const now = Date.now()
      this.note(`rmq consume: ${heldExplanation(summary.held, now)}`)
      if (this.jsonEnabled())
        process.stdout.write(formatHeldJson(summary.held, summary.watermark ?? null, now) + '\n')
    } else if (!this.jsonEnabled() && summary.printed === 0) this.note('no messages')
  }
}
