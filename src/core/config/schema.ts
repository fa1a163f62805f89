/**
 * The one list of configuration keys. Everything else (env var names, the
 * README reference, `config list`, validation) is derived from it.
 */
import { NODE_ID_RULE, nodeIdProblem } from '../../protocol/node-id.js'
import type { KeyDef } from './key-def.js'
import { MQTT_KEYS } from './mqtt-keys.js'

export type { KeyDef, KeyType } from './key-def.js'

export const CONFIG_KEYS: readonly KeyDef[] = [
  // identity and connection
  {
    key: 'nodeId',
    type: 'string',
    default: '',
    description: 'Unique id of this edge node (default: the host name).',
    check: { problem: (v) => (v === '' ? undefined : nodeIdProblem(v)), rule: NODE_ID_RULE },
  },
  {
    key: 'brokerUrl',
    type: 'url',
    default: 'http://127.0.0.1:7878',
    description: 'Base URL of the main broker.',
  },
  {
    key: 'token',
    type: 'string',
    default: '',
    secret: true,
    description: 'Bearer token of this node at the broker.',
  },
  {
    key: 'tokenFile',
    type: 'string',
    default: '',
    description:
      'File holding the token (used when token is empty; default $CREDENTIALS_DIRECTORY/rmq-token under systemd).',
  },
  {
    key: 'tls.ca',
    type: 'string',
    default: '',
    description:
      'PEM file of the CA(s) that sign the broker certificate (a private CA); default: the system CAs.',
  },
  {
    key: 'tls.cert',
    type: 'string',
    default: '',
    description: 'PEM client certificate for a broker with broker.auth=mtls or token+mtls.',
  },
  { key: 'tls.key', type: 'string', default: '', description: 'PEM private key of tls.cert.' },
  {
    key: 'allowInsecureHttp',
    type: 'bool',
    default: false,
    description: 'Allow plain http:// to a broker that is not on loopback (sends the token in clear).',
  },
  {
    key: 'mode',
    type: 'enum',
    values: ['edge', 'direct'],
    default: 'edge',
    description: 'edge: store in the local outbox first; direct: send straight to the broker.',
  },
  {
    key: 'forward',
    type: 'enum',
    values: ['deferred', 'immediate'],
    default: 'deferred',
    description:
      'Edge mode: leave stored messages for sync (deferred) or try to deliver at once (immediate).',
  },
  // storage
  {
    key: 'storage.driver',
    type: 'string',
    default: 'sqlite',
    description: 'Outbox driver: sqlite, memory, or a module specifier.',
  },
  {
    key: 'storage.path',
    type: 'string',
    default: '.rmq/outbox.db',
    description: 'Outbox database file (relative to the working directory).',
  },
  {
    key: 'storage.maxBytes',
    type: 'size',
    default: '512MB',
    description: 'Largest outbox size (payload and metadata bytes).',
  },
  {
    key: 'storage.maxMessages',
    type: 'int',
    default: 0,
    min: 0,
    description: 'Most messages kept in the outbox (0: no limit).',
  },
  {
    key: 'storage.overflow',
    type: 'enum',
    values: ['reject', 'drop-oldest'],
    default: 'reject',
    description: 'When full: refuse new messages (exit 73) or drop the oldest pending ones.',
  },
  {
    key: 'storage.durability',
    type: 'enum',
    values: ['full', 'normal'],
    default: 'full',
    description:
      'SQLite synchronous mode: full survives power loss; normal is faster and may lose the last writes.',
  },
  // sync
  {
    key: 'sync.interval',
    type: 'duration',
    default: '30s',
    description: 'Pause between runs of `rmq sync --watch` and the schedule timers.',
  },
  {
    key: 'sync.batchSize',
    type: 'int',
    default: 2000,
    min: 1,
    max: 100000,
    description: 'Most messages in one batch.',
  },
  {
    key: 'sync.batchBytes',
    type: 'size',
    default: '1MB',
    description: 'Most uncompressed payload bytes in one batch.',
  },
  {
    key: 'sync.maxBytesPerRun',
    type: 'size',
    default: 0,
    description: 'Byte budget of one sync run on the wire (0: no limit).',
  },
  {
    key: 'sync.rateLimit',
    type: 'size',
    default: 0,
    description: 'Most bytes per second on the wire (0: no limit).',
  },
  {
    key: 'sync.timeout',
    type: 'duration',
    default: '30s',
    description: 'Timeout of one request to the broker.',
  },
  {
    key: 'sync.backoff.initial',
    type: 'duration',
    default: '1s',
    description: 'First retry delay after a failed sync.',
  },
  { key: 'sync.backoff.max', type: 'duration', default: '5m', description: 'Longest retry delay.' },
  {
    key: 'sync.backoff.multiplier',
    type: 'number',
    default: 2,
    min: 1,
    max: 10,
    description: 'Growth of the retry delay per failure.',
  },
  // compression
  {
    key: 'compression.codec',
    type: 'string',
    default: 'zstd',
    description: 'Batch compression: zstd, gzip, none, or a module specifier.',
  },
  {
    key: 'compression.level',
    type: 'int',
    default: 3,
    min: 0,
    max: 22,
    description: 'Compression level (codec-specific).',
  },
  // cleanup and messages
  {
    key: 'cleanup.sentRetention',
    type: 'duration',
    default: '24h',
    description: 'How long sent messages stay in the outbox.',
  },
  {
    key: 'cleanup.interval',
    type: 'duration',
    default: '1h',
    description: 'How often the schedule runs `rmq cleanup`.',
  },
  {
    key: 'message.defaultTtl',
    type: 'duration',
    default: 0,
    description: 'Expiry of messages published without --ttl (0: never).',
  },
  { key: 'message.maxBytes', type: 'size', default: '1MB', description: 'Largest payload of one message.' },
  // consuming
  {
    key: 'consume.maxPageBytes',
    type: 'size',
    default: '64MB',
    description:
      'Largest answer `rmq consume` and the Consumer API read for one page; pages are asked for at half of it.',
  },
  // broker
  { key: 'broker.host', type: 'string', default: '127.0.0.1', description: 'Address the broker listens on.' },
  {
    key: 'broker.port',
    type: 'int',
    default: 7878,
    min: 0,
    max: 65535,
    description: 'Port the broker listens on.',
  },
  {
    key: 'broker.dataDir',
    type: 'string',
    default: '.rmq-broker',
    description: 'Broker data directory (SQLite store).',
  },
  {
    key: 'broker.store',
    type: 'enum',
    values: ['sqlite', 'postgres'],
    default: 'sqlite',
    description: 'Broker store.',
  },
  {
    key: 'broker.postgres.url',
    type: 'string',
    default: '',
    secret: true,
    description:
      'PostgreSQL connection URL (or PG* variables). Several hosts as libpq accepts them (postgres://u:p@h1:5432,h2:5433/rmq?target_session_attrs=read-write): the broker uses the primary and follows a promotion (docs/scaling.md).',
  },
  {
    key: 'broker.auth',
    type: 'enum',
    values: ['token', 'mtls', 'token+mtls', 'none'],
    default: 'token',
    description:
      'token: bearer tokens; mtls: client certificates (broker.tls.clientCa) name the node; token+mtls: both; none: no authentication (loopback only unless forced).',
  },
  {
    key: 'broker.tls.cert',
    type: 'string',
    default: '',
    description: 'PEM server certificate (chain): serve HTTPS. Reloaded on SIGHUP.',
  },
  { key: 'broker.tls.key', type: 'string', default: '', description: 'PEM private key of broker.tls.cert.' },
  {
    key: 'broker.tls.clientCa',
    type: 'string',
    default: '',
    description: 'PEM CA that signs client certificates: request and verify them (needed by auth mtls).',
  },
  {
    key: 'broker.metrics.public',
    type: 'bool',
    default: false,
    description:
      'Serve GET /metrics without a credential (a scrape on a private network); otherwise it needs a monitor or admin token.',
  },
  {
    key: 'broker.limits.bodyBytes',
    type: 'size',
    default: '8MB',
    description: 'Largest compressed request body.',
  },
  {
    key: 'broker.limits.decompressedBytes',
    type: 'size',
    default: '64MB',
    description: 'Largest decompressed batch.',
  },
  {
    key: 'broker.limits.ratePerNode',
    type: 'int',
    default: 200,
    min: 0,
    description: 'Batches per second per node before 429 (0: no limit).',
  },
  {
    key: 'broker.limits.requestTimeout',
    type: 'duration',
    default: '60s',
    description:
      'Longest time to receive one request (headers and body); slow or stalled clients are cut off (408).',
  },
  {
    key: 'broker.limits.messageBytes',
    type: 'size',
    default: '1MB',
    description: 'Largest payload of one message (decoded); a batch holding a larger one is refused (413).',
  },
  {
    key: 'broker.limits.inFlightPerNode',
    type: 'int',
    default: 4,
    min: 0,
    description: 'Batch requests one node may have in progress at once before 429 (0: no limit).',
  },
  {
    key: 'broker.limits.inFlightBytes',
    type: 'size',
    default: '80MB',
    description:
      'Decompressed bytes of all requests in progress together; a batch that does not fit gets 503 with Retry-After.',
  },
  {
    key: 'broker.limits.pageBytes',
    type: 'size',
    default: '16MB',
    description: 'Largest consumer page (messages by stored size; always at least one message).',
  },
  {
    key: 'broker.limits.authFailures',
    type: 'int',
    default: 20,
    min: 0,
    description:
      'Failed authentications one client address may make in a burst; then 429 with Retry-After before any token is checked (0: no limit).',
  },
  {
    key: 'broker.limits.authFailureRate',
    type: 'number',
    default: 2,
    min: 0,
    description:
      'Failed authentications per second an address earns back after the burst (refill of authFailures; 0: one a minute).',
  },
  {
    key: 'broker.limits.longPollsPerCredential',
    type: 'int',
    default: 16,
    min: 0,
    description:
      'Long-polls (GET /v1/messages with wait) one credential may hold open at once before 429 (0: no limit).',
  },
  {
    key: 'broker.limits.longPolls',
    type: 'int',
    default: 1000,
    min: 0,
    description:
      'Long-polls open at once on this broker, all credentials together, before 429 (0: no limit).',
  },
  {
    key: 'broker.ordering.maxLateness',
    type: 'duration',
    default: '5m',
    description: 'A node silent this long stops holding the watermark back.',
  },
  {
    key: 'broker.ordering.maxHoldBack',
    type: 'duration',
    default: '15m',
    description:
      'A live node whose low mark is further behind broker time than this stops holding the watermark back (its older messages arrive late; health holding-back); 0: no bound.',
  },
  {
    key: 'broker.ordering.maxFutureSkew',
    type: 'duration',
    default: '5m',
    description:
      'A message or node clock further ahead of broker time than this is refused (400 TS_IN_FUTURE) or clamped (futurePolicy).',
  },
  {
    key: 'broker.ordering.futurePolicy',
    type: 'enum',
    values: ['reject', 'clamp'],
    default: 'reject',
    description:
      'reject: refuse a batch that is too far in the future; clamp: store those timestamps as broker receive time, the original in header rmq-original-ts.',
  },
  {
    key: 'broker.retention',
    type: 'duration',
    default: '7d',
    description: 'How long the broker keeps messages.',
  },
  {
    key: 'broker.alerts.noSyncFor',
    type: 'duration',
    default: '15m',
    description: 'Alert when a node has not synced for this long (0: off).',
  },
  {
    key: 'broker.alerts.backlogAge',
    type: 'duration',
    default: '1h',
    description: 'Alert when a node reports pending messages older than this (0: off).',
  },
  {
    key: 'broker.alerts.neverSyncedFor',
    type: 'duration',
    default: '1h',
    description:
      'Alert when a node given a token has never synced this long after the token was made (0: off).',
  },
  {
    key: 'broker.alerts.dataLoss',
    type: 'bool',
    default: true,
    description: 'Alert when a node reports dropped or expired messages.',
  },
  {
    key: 'broker.alerts.dataLossClearAfter',
    type: 'duration',
    default: '1h',
    description: 'A data-loss alert resolves after the node reports no new losses for this long.',
  },
  {
    key: 'broker.alerts.interval',
    type: 'duration',
    default: '10s',
    description: 'How often alert rules are evaluated.',
  },
  {
    key: 'broker.alerts.webhooks',
    type: 'list',
    default: [],
    description: 'URLs that receive alert events (comma-separated in env).',
  },
  ...MQTT_KEYS,
] as const

export const KEY_INDEX: ReadonlyMap<string, KeyDef> = new Map(CONFIG_KEYS.map((k) => [k.key, k]))

/** `sync.batchSize` -> `RMQ_SYNC_BATCH_SIZE` */
export function envVarFor(key: string): string {
  return (
    'RMQ_' +
    key
      .split('.')
      .map((part) => part.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase())
      .join('_')
  )
}

export const ENV_TO_KEY: ReadonlyMap<string, string> = new Map(
  CONFIG_KEYS.map((k) => [envVarFor(k.key), k.key]),
)

/** RMQ_* variables that are not configuration keys. */
export const RESERVED_ENV = new Set([
  'RMQ_CONFIG',
  'RMQ_DEBUG',
  'RMQ_FAILPOINTS',
  'RMQ_CLOCK_OFFSET',
  'RMQ_FAULTS',
  'RMQ_LOG_LEVEL',
  'RMQ_NO_FAST_PATH',
])

/** The effective, typed configuration. Durations are milliseconds, sizes bytes. */
export interface RmqConfig {
  nodeId: string
  brokerUrl: string
  token: string
  tokenFile: string
  tls: { ca: string; cert: string; key: string }
  allowInsecureHttp: boolean
  mode: 'edge' | 'direct'
  forward: 'deferred' | 'immediate'
  storage: {
    driver: string
    path: string
    maxBytes: number
    maxMessages: number
    overflow: 'reject' | 'drop-oldest'
    durability: 'full' | 'normal'
  }
  sync: {
    interval: number
    batchSize: number
    batchBytes: number
    maxBytesPerRun: number
    rateLimit: number
    timeout: number
    backoff: { initial: number; max: number; multiplier: number }
  }
  compression: { codec: string; level: number }
  cleanup: { sentRetention: number; interval: number }
  message: { defaultTtl: number; maxBytes: number }
  consume: { maxPageBytes: number }
  mqtt: {
    url: string
    username: string
    password: string
    clientId: string
    tls: { ca: string; cert: string; key: string }
    connectTimeout: number
    topics: string[]
    qos: number
    topicPrefix: string
    tsField: string
    onBadTimestamp: 'arrival' | 'reject'
    retained: boolean
    sys: boolean
    rules: string[]
    batchSize: number
    commitInterval: number
    forward: {
      group: string
      filter: string
      topicPrefix: string
      window: number
      order: 'event' | 'arrival'
    }
  }
  broker: {
    host: string
    port: number
    dataDir: string
    store: 'sqlite' | 'postgres'
    postgres: { url: string }
    auth: 'token' | 'mtls' | 'token+mtls' | 'none'
    tls: { cert: string; key: string; clientCa: string }
    metrics: { public: boolean }
    limits: {
      bodyBytes: number
      decompressedBytes: number
      ratePerNode: number
      requestTimeout: number
      messageBytes: number
      inFlightPerNode: number
      inFlightBytes: number
      pageBytes: number
      authFailures: number
      authFailureRate: number
      longPollsPerCredential: number
      longPolls: number
    }
    ordering: {
      maxLateness: number
      maxHoldBack: number
      maxFutureSkew: number
      futurePolicy: 'reject' | 'clamp'
    }
    retention: number
    alerts: {
      noSyncFor: number
      backlogAge: number
      neverSyncedFor: number
      dataLoss: boolean
      dataLossClearAfter: number
      interval: number
      webhooks: string[]
    }
  }
}
