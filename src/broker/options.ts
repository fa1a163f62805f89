import type { RmqConfig } from '../core/config/schema.js'
import type { MonitoringOptions } from './monitoring.js'
import type { HealthOptions } from './node-status.js'
import type { BrokerStore } from './store/types.js'
import type { BrokerTlsOptions } from './tls.js'

export type LogFormat = 'json' | 'pretty' | 'silent'

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
  /** Allow auth=none, or plain HTTP, on a non-loopback address. */
  insecure?: boolean
  /** requestTimeout (ms): the whole request must arrive within it; default 60 s. */
  limits: { bodyBytes: number; decompressedBytes: number; ratePerNode: number; requestTimeout?: number }
  maxLateness: HealthOptions['maxLateness']
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
    maxLateness: b.ordering.maxLateness,
    retention: b.retention,
    alerts: b.alerts,
    ...overrides,
  }
}

export { isLoopback } from '../core/tls.js'
