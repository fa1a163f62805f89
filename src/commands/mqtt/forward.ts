import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import type { ForwardSummary } from '../../core/mqtt/forward.js'
import { UsageError } from '../../shared/errors.js'
import { DURATION_FORMS, parseDuration } from '../../shared/units.js'

export default class MqttForward extends BaseCommand<typeof MqttForward> {
  static override summary =
    "Republish the broker's stream to an MQTT broker with QoS 1, in order, as a consumer group."
  static override description =
    'Central side (docs/mqtt.md): reads the broker at brokerUrl with token as the consumer group ' +
    'mqtt.forward.group and publishes each message QoS 1, in event order (or arrival order), on one ' +
    'connection to mqtt.url, on the topic mqtt.forward.topicPrefix + the rmq topic, payload bytes unchanged, ' +
    'with MQTT 5 user properties node, epoch, seq, ts, position and late (receivers dedup by node+epoch+seq). ' +
    'The group position is committed only after the PUBACKs of every message up to it, so a crash re-sends ' +
    'at most the tail past the committed position (at most mqtt.forward.window messages). Resident by ' +
    'default (long-poll; a lost MQTT connection is retried with backoff from the committed position); ' +
    '--until-idle DURATION exits 0 once the stream was empty that long and everything is acknowledged and ' +
    'committed. SIGTERM or Ctrl-C: waits for the PUBACKs in flight, commits, exits 0. ' +
    'Exit codes: 0 done; 69 the MQTT broker or the rmq broker unreachable (the URL is named), or the MQTT ' +
    'connection lost in --until-idle mode; 78 bad MQTT credentials, a bad rmq token, or a token without ' +
    'read access to the filter and group, or a topic the MQTT broker ACL refuses (PUBACK 0x87); 65 a message ' +
    'the MQTT broker cannot take (over its Maximum Packet Size, or an invalid topic); 2 bad flags.'
  static override examples = [
    '<%= config.bin %> mqtt forward --url mqtt://historian.local:1883',
    "<%= config.bin %> mqtt forward 'plant/#' --topic-prefix rmq/ --group historian",
    '<%= config.bin %> mqtt forward --until-idle 30s --json',
    '<%= config.bin %> mqtt forward --order arrival --url mqtts://emqx.example.com:8883',
  ]
  static override args = {
    filter: Args.string({ description: 'rmq topic filter to forward (mqtt.forward.filter, default #).' }),
  }
  static override flags = {
    url: Flags.string({ description: 'MQTT broker URL, mqtt:// or mqtts:// (mqtt.url).' }),
    group: Flags.string({ description: 'Consumer group whose position is committed (mqtt.forward.group).' }),
    filter: Flags.string({ description: 'rmq topic filter, like the argument (mqtt.forward.filter).' }),
    'topic-prefix': Flags.string({
      description: 'Prefix added to the rmq topic to make the MQTT topic (mqtt.forward.topicPrefix).',
    }),
    order: Flags.string({
      description:
        'event: by original time, up to the watermark; arrival: ingest order (mqtt.forward.order).',
      options: ['event', 'arrival'],
    }),
    'until-idle': Flags.string({
      description: 'Exit 0 once the stream was empty this long and everything is acknowledged (e.g. 30s).',
      helpValue: 'DURATION',
    }),
    'broker-url': Flags.string({ description: 'rmq broker URL (brokerUrl).' }),
  }

  async run(): Promise<ForwardSummary> {
    const f = this.flags
    if (f.filter !== undefined && this.args.filter !== undefined && f.filter !== this.args.filter)
      throw new UsageError('give the topic filter once: as the argument or with --filter')
    const filter = f.filter ?? this.args.filter
    if (filter !== undefined) {
      const { topicFilterProblem } = await import('../../protocol/topic-filter.js')
      const problem = topicFilterProblem(filter)
      if (problem) throw new UsageError(`invalid topic filter ${JSON.stringify(filter)}: ${problem}`)
    }
    const prefix = f['topic-prefix']
    if (prefix !== undefined && /[+#\0]/.test(prefix))
      throw new UsageError(`--topic-prefix ${JSON.stringify(prefix)} contains + or #`, {
        suggestion: 'an MQTT topic name has no wildcards: e.g. --topic-prefix rmq/',
      })
    let untilIdleMs: number | undefined
    if (f['until-idle'] !== undefined) {
      untilIdleMs = parseDuration(f['until-idle'])
      if (untilIdleMs === undefined)
        throw new UsageError(`--until-idle ${JSON.stringify(f['until-idle'])} is not a duration`, {
          suggestion: `use ${DURATION_FORMS}`,
        })
    }
    const flagValues: Record<string, unknown> = {}
    if (f.url !== undefined) flagValues['mqtt.url'] = f.url
    if (f.group !== undefined) flagValues['mqtt.forward.group'] = f.group
    if (filter !== undefined) flagValues['mqtt.forward.filter'] = filter
    if (prefix !== undefined) flagValues['mqtt.forward.topicPrefix'] = prefix
    if (f.order !== undefined) flagValues['mqtt.forward.order'] = f.order
    if (f['broker-url'] !== undefined) flagValues.brokerUrl = f['broker-url']
    const loaded = await this.loadConfig(flagValues)
    const { runForward } = await import('../../core/mqtt/forward.js')
    const summary = await runForward(
      loaded,
      { untilIdleMs, signal: this.abortSignal() },
      {
        notice: (t) => this.note(t),
        onConnect: (c) =>
          this.note(
            `rmq mqtt forward: connected to ${c.url} as ${c.clientId} (window ${c.window}, ${c.inflight} in flight), ` +
              `forwarding ${loaded.config.mqtt.forward.filter} as group ${loaded.config.mqtt.forward.group}`,
          ),
      },
    )
    const held = summary.held ? `; ${summary.held} held behind the watermark` : ''
    this.say(
      `forwarded ${summary.forwarded} messages to ${summary.url}; group ${summary.group} committed at ` +
        `position ${summary.committed ?? 'none (nothing new)'}${held}`,
    )
    return summary
  }
}
