import { Flags } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import { UsageError } from '../../shared/errors.js'
import { DURATION_FORMS, parseDuration } from '../../shared/units.js'
import type { IngestSummary } from '../../core/mqtt/ingest.js'

export default class MqttIngest extends BaseCommand<typeof MqttIngest> {
  static override summary =
    "Store the messages of the gateway's MQTT broker in the outbox, acknowledging each only after its commit."
  static override description =
    'Subscribes to mqtt.topics (QoS 1) with a persistent session (fixed client id, default rmq-ingest-<nodeId>) ' +
    'and commits the messages in groups (mqtt.batchSize, mqtt.commitInterval); a PUBACK leaves only after the ' +
    'commit, so a crash means redelivery, and a redelivery (DUP) of a stored message is not stored twice. ' +
    'Resident by default (reconnects with backoff; run it as a systemd service with Restart=always); with ' +
    '--until-idle it drains what the broker queued and exits, for a timer. A message whose mapped topic or ' +
    'payload is invalid is not stored and is answered with an MQTT 5 error reason code (144 or 153); when the ' +
    'outbox is full (storage.overflow=reject) nothing is acknowledged until there is room. SIGINT/SIGTERM ' +
    'commit what was received and exit 0. See docs/mqtt.md. Exit codes: 0 done; 69 the MQTT broker cannot be ' +
    'reached; 73 the outbox stayed full for --until-idle; 78 configuration error or credentials refused.'
  static override examples = [
    '<%= config.bin %> mqtt ingest --url mqtt://127.0.0.1:1883 --topic "sensors/#"',
    '<%= config.bin %> mqtt ingest --until-idle 30s --json',
    '<%= config.bin %> mqtt ingest --topic "plant/+/temp" --topic-prefix site1/ --ts-field ts',
    'RMQ_MQTT_RULES="debug/# skip" <%= config.bin %> mqtt ingest',
  ]
  static override flags = {
    url: Flags.string({ description: 'MQTT broker URL (default mqtt.url).', helpValue: 'URL' }),
    topic: Flags.string({
      description: 'Topic filter to subscribe to (repeatable; replaces mqtt.topics).',
      multiple: true,
      helpValue: 'FILTER',
    }),
    'topic-prefix': Flags.string({
      description: 'Prefix of every rmq topic (mqtt.topicPrefix).',
      helpValue: 'PREFIX',
    }),
    'ts-field': Flags.string({
      description: 'JSON field of the payload with the event time, ms or ISO 8601 (mqtt.tsField).',
      helpValue: 'FIELD',
    }),
    'client-id': Flags.string({ description: 'MQTT client id (mqtt.clientId).', helpValue: 'ID' }),
    qos: Flags.integer({ description: 'Subscription QoS, 0 or 1 (mqtt.qos).', min: 0, max: 1 }),
    'until-idle': Flags.string({
      description: 'Drain and exit 0 after DURATION without a message (timer mode), e.g. 30s.',
      helpValue: 'DURATION',
    }),
  }

  async run(): Promise<IngestSummary> {
    const f = this.flags
    let untilIdle: number | undefined
    if (f['until-idle'] !== undefined) {
      untilIdle = parseDuration(f['until-idle'])
      if (untilIdle === undefined || untilIdle <= 0)
        throw new UsageError(`--until-idle: ${JSON.stringify(f['until-idle'])} is not a duration`, {
          suggestion: `use ${DURATION_FORMS}, e.g. 30s`,
        })
    }
    const loaded = await this.loadConfig({
      ...(f.url !== undefined ? { 'mqtt.url': f.url } : {}),
      ...(f.topic !== undefined ? { 'mqtt.topics': f.topic } : {}),
      ...(f['topic-prefix'] !== undefined ? { 'mqtt.topicPrefix': f['topic-prefix'] } : {}),
      ...(f['ts-field'] !== undefined ? { 'mqtt.tsField': f['ts-field'] } : {}),
      ...(f['client-id'] !== undefined ? { 'mqtt.clientId': f['client-id'] } : {}),
      ...(f.qos !== undefined ? { 'mqtt.qos': f.qos } : {}),
    })
    const { runIngest } = await import('../../core/mqtt/ingest.js')
    const { ingestSummaryLine } = await import('../../cli/ingest-summary.js')
    const summary = await runIngest(
      loaded,
      { untilIdle, signal: this.abortSignal() },
      {
        onConnect: (c) =>
          this.note(
            `rmq mqtt ingest: ${c.reconnect ? 'reconnected to' : 'connected to'} ${c.url} as ${c.clientId} ` +
              `(${c.sessionPresent ? 'session resumed' : 'new session'})` +
              (c.reconnect ? '' : untilIdle ? `; exits after ${f['until-idle']} idle` : '; Ctrl-C stops'),
          ),
        onWarning: (t) => this.note(`warning: ${t}`),
        onProgress: (s) => this.note(`${new Date().toISOString()} ${ingestSummaryLine(s)}`),
      },
    )
    this.say(ingestSummaryLine(summary))
    return summary
  }
}
