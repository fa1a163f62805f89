import type { RmqConfig } from '../core/config/schema.js'
import type { MonitoringOptions } from './monitoring.js'
import { DEFAULT_MAX_HOLD_BACK, type HealthOptions } from './node-status.js'
import type { EventTimeBound } from './event-time.js'
import type { BrokerStore } from './store/types.js'
import type { BrokerTlsOptions } from './tls.js'

export type LogFormat = 'json' | 'pretty' | 'silent'

/** broker.limits.* (docs/guarantees.md "Bounds"); the optional ones default to DEFAULT_LIMITS. */
export interface BrokerLimits {
  bodyBytes: number
  decompressedBytes: number
  ratePerNode: number
  requestTimeout?: number
  /** Largest decoded payload of one message (413 MESSAGE_TOO_LARGE). */
  messageBytes?: number
  /** Batch requests in progress per node (429 TOO_MANY_IN_FLIGHT; 0: no limit). */
  inFlightPerNode?: number
  /** Decompressed bytes of all requests in progress (503 BROKER_BUSY when full; 0: no limit). */
  inFlightBytes?: number
  /** Largest consumer page by stored message size (always at least one message). */
  pageBytes?: number
}

export const DEFAULT_LIMITS = {
  messageBytes: 1 << 20,
  inFlightPerNode: 4,
  inFlightBytes: 80 << 20,
  pageBytes: 16 << 20,
} as const

/** The limit `key` in force: the configured value, else its default. */
export function limitOf(limits: BrokerLimits, key: keyof typeof DEFAULT_LIMITS): number {
  return limits[key] ?? DEFAULT_LIMITS[key]
}

export interface BrokerOptions {
  host: string
  port: number
  dataDir: string
  store: 'sqlite' | 'postgres' | (string & {})
  postgresUrl?: string
  /** token: bearer tokens; mtls: the client certificate names the node; token+mtls: both, and they agree. */
  auth: 'token' | 'mtls' | 'token+mtls' | 'none'
  /** Serve HTTPS (broker.tls.*); clientCa requests and verifies client certificates. */
  tls?: BrokerTlsOptions
  /** GET /metrics without a credential (broker.metrics.public); otherwise monitor or admin. */
  metricsPublic?: boolean
  /** Allow auth=none, or plain HTTP, on a non-loopback address. */
  insecure?: boolean
  /** requestTimeout (ms): the whole request must arrive within it; default 60 s. The rest: BrokerLimits. */
  limits: BrokerLimits
  maxLateness: HealthOptions['maxLateness']
  /** broker.ordering.maxHoldBack (ms): how long one node may hold everyone's event order back (0: no bound). */
  maxHoldBack?: HealthOptions['maxHoldBack']
  /** broker.ordering.maxFutureSkew (ms) and futurePolicy: how far ahead of broker time event time may be. */
  futureSkew?: EventTimeBound
  /** broker.retention, ms (0: keep forever). */
  retention: number
  alerts: HealthOptions['alerts']
  logFormat?: LogFormat
  logLevel?: string
  /** How often the watermark is recomputed without traffic (ms). */
  releaseIntervalMs?: number
  /** How often retention runs (ms). */
  retentionIntervalMs?: number
  /** Use this store instead of opening one (tests, embedding). Closed with the app. */
  storeInstance?: BrokerStore
  /** Broker clock (tests). */
  now?: () => number
  /** Monitoring internals: history sampling, webhook delivery timing (tests). */
  monitoring?: MonitoringOptions
}

/** Broker options from the effective configuration (broker.* keys). */
export function brokerOptionsFromConfig(
  config: RmqConfig,
  overrides: Partial<BrokerOptions> = {},
): BrokerOptions {
  const b = config.broker
  return {
    host: b.host,
    port: b.port,
    dataDir: b.dataDir,
    store: b.store,
    postgresUrl: b.postgres.url || undefined,
    auth: b.auth,
    tls:
      b.tls.cert || b.tls.key || b.tls.clientCa
        ? { cert: b.tls.cert, key: b.tls.key, ...(b.tls.clientCa ? { clientCa: b.tls.clientCa } : {}) }
        : undefined,
    limits: { ...b.limits },
    metricsPublic: b.metrics.public,
    maxLateness: b.ordering.maxLateness,
    maxHoldBack: b.ordering.maxHoldBack,
    futureSkew: { maxMs: b.ordering.maxFutureSkew, policy: b.ordering.futurePolicy },
    retention: b.retention,
    alerts: b.alerts,
    ...overrides,
  }
}

export { isLoopback } from '../core/tls.js'
/** The ordering bounds a store needs with broker time `now` (ingest, release, held reports). */
export function orderingContext(
  options: Pick<BrokerOptions, 'maxLateness' | 'maxHoldBack'>,
  now: number,
): { now: number; maxLateness: number; maxHoldBack: number } {
  return { now, maxLateness: options.maxLateness, maxHoldBack: options.maxHoldBack ?? DEFAULT_MAX_HOLD_BACK }
}
