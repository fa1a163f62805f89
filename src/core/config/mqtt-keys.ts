/**
 * The `mqtt.*` configuration keys of `rmq mqtt ingest` and `rmq mqtt forward`
 * (docs/mqtt.md), kept apart from schema.ts so each file reads in one sitting.
 */
import type { KeyDef } from './key-def.js'

/** Why an MQTT broker URL is unusable (undefined when it is fine). */
export function mqttUrlProblem(v: string): string | undefined {
  let u: URL
  try {
    u = new URL(v)
  } catch {
    return 'not a URL'
  }
  if (!['mqtt:', 'mqtts:'].includes(u.protocol)) return `scheme ${u.protocol} is not mqtt: or mqtts:`
  if (!u.hostname) return 'no host'
  return undefined
}

export const MQTT_KEYS: readonly KeyDef[] = [
  {
    key: 'mqtt.url',
    type: 'string',
    default: 'mqtt://127.0.0.1:1883',
    description:
      'The MQTT broker of `rmq mqtt ingest` (edge) or `rmq mqtt forward` (central): mqtt:// or mqtts://.',
    check: {
      problem: (v) => mqttUrlProblem(v),
      rule: 'an mqtt:// or mqtts:// URL, e.g. mqtt://127.0.0.1:1883',
    },
  },
  { key: 'mqtt.username', type: 'string', default: '', description: 'MQTT user name (empty: none).' },
  { key: 'mqtt.password', type: 'string', default: '', secret: true, description: 'MQTT password.' },
  {
    key: 'mqtt.clientId',
    type: 'string',
    default: '',
    description:
      'MQTT client id; fixed ids keep a persistent session between runs (default: rmq-ingest-<nodeId> or rmq-forward-<group>).',
  },
  {
    key: 'mqtt.tls.ca',
    type: 'string',
    default: '',
    description:
      'PEM file of the CA that signs the MQTT broker certificate (mqtts://); default: the system CAs.',
  },
  {
    key: 'mqtt.tls.cert',
    type: 'string',
    default: '',
    description: 'PEM client certificate for the MQTT broker.',
  },
  { key: 'mqtt.tls.key', type: 'string', default: '', description: 'PEM private key of mqtt.tls.cert.' },
  {
    key: 'mqtt.connectTimeout',
    type: 'duration',
    default: '10s',
    description: 'How long to wait for the MQTT broker to accept the connection (then exit 69).',
  },
  {
    key: 'mqtt.topics',
    type: 'list',
    default: ['#'],
    description: 'MQTT topic filters `rmq mqtt ingest` subscribes to (comma-separated in env).',
  },
  {
    key: 'mqtt.qos',
    type: 'int',
    default: 1,
    min: 0,
    max: 1,
    description: 'QoS of the ingest subscriptions: 1 (acknowledged after the outbox commit) or 0.',
  },
  {
    key: 'mqtt.topicPrefix',
    type: 'string',
    default: '',
    description: 'Prefix added to every MQTT topic to make the rmq topic (ingest), e.g. site1/.',
  },
  {
    key: 'mqtt.tsField',
    type: 'string',
    default: '',
    description:
      'JSON field of the payload holding the event time (ms or ISO 8601); default: MQTT 5 user property ts, else arrival time.',
  },
  {
    key: 'mqtt.onBadTimestamp',
    type: 'enum',
    values: ['arrival', 'reject'],
    default: 'arrival',
    description:
      'A payload without a usable mqtt.tsField: arrival (store with arrival time, counted) or reject (count, do not store, acknowledge).',
  },
  {
    key: 'mqtt.retained',
    type: 'bool',
    default: false,
    description:
      'Ingest retained messages too (by default they are skipped: they are old state, not new events).',
  },
  {
    key: 'mqtt.sys',
    type: 'bool',
    default: false,
    description: 'Ingest $SYS/... (broker status) topics too (by default they are skipped and counted).',
  },
  {
    key: 'mqtt.rules',
    type: 'list',
    default: [],
    description:
      'Per-topic rules "FILTER key=value ...": topic=REWRITE (+N/# refer to levels), priority=0-9, ttl=DURATION, skip.',
  },
  {
    key: 'mqtt.batchSize',
    type: 'int',
    default: 1000,
    min: 1,
    max: 100000,
    description: 'Most MQTT messages `rmq mqtt ingest` commits to the outbox in one transaction.',
  },
  {
    key: 'mqtt.commitInterval',
    type: 'duration',
    default: '20ms',
    description: 'Longest a received message waits for its group commit (and so for its PUBACK).',
  },
  {
    key: 'mqtt.forward.group',
    type: 'string',
    default: 'mqtt-forward',
    description: 'Consumer group `rmq mqtt forward` reads with; its position advances only after PUBACKs.',
  },
  {
    key: 'mqtt.forward.filter',
    type: 'string',
    default: '#',
    description: 'rmq topic filter `rmq mqtt forward` reads.',
  },
  {
    key: 'mqtt.forward.topicPrefix',
    type: 'string',
    default: '',
    description: 'Prefix added to the rmq topic to make the MQTT topic (forward).',
  },
  {
    key: 'mqtt.forward.window',
    type: 'int',
    default: 10000,
    min: 1,
    max: 1000000,
    description:
      'Most messages `rmq mqtt forward` publishes past the committed group position, acknowledged or not: what a crash can send twice.',
  },
  {
    key: 'mqtt.forward.order',
    type: 'enum',
    values: ['event', 'arrival'],
    default: 'event',
    description: 'Forward in event-time order (released up to the watermark) or arrival order.',
  },
]
