/**
 * What the broker reports about its fleet on `GET /v1/nodes`, `/v1/nodes/:id`
 * and `/v1/alerts` (docs/monitoring.md): the shapes `rmq status`, the
 * dashboard and any monitoring script read. The rules that fill them live in
 * src/broker/node-status.ts and src/broker/alerts.ts.
 */

export type Health = 'ok' | 'behind' | 'holding-back' | 'stale' | 'never-seen' | 'never-synced'
export const HEALTH_STATES: readonly Health[] = [
  'ok',
  'behind',
  'holding-back',
  'stale',
  'never-seen',
  'never-synced',
]

export interface HealthRules {
  /** No batch or heartbeat for longer than this: stale (broker.alerts.noSyncFor, or 15m when that is 0). */
  staleAfter: number
  /** Oldest pending message older than this: behind (broker.ordering.maxLateness). */
  behindAfter: number
  /**
   * A token this old whose node never synced: never-synced, else never-seen
   * (broker.alerts.neverSyncedFor; 0: never-seen however old).
   */
  neverSyncedAfter: number
  /**
   * A live node whose low mark is further behind broker time than this no
   * longer holds the watermark back: holding-back (broker.ordering.maxHoldBack; 0: never).
   */
  holdBackAfter: number
}

export interface NodeCounters {
  received: number
  duplicates: number
  late: number
  batches: number
}

export interface NodeStatus {
  node: string
  health: Health
  /** Why the node is not ok, in words (empty when ok). */
  reasons: string[]
  epoch: string | null
  /** Last batch came from a direct-mode producer (nothing held on the node). */
  direct: boolean
  firstSeen: number | null
  /** Last batch or heartbeat the broker accepted (a successful sync), broker time. */
  lastContact: number | null
  /** Last accepted batch that carried messages, broker time. */
  lastSync: number | null
  /** now - lastContact, ms. */
  sinceContact: number | null
  /**
   * The last successful sync request: when the broker accepted it (its own
   * clock; the same as lastContact), whatever the node reported.
   */
  lastSuccessAt: number | null
  /**
   * Sync requests of the node's current outbox: `attempts` as the node
   * reports them (only it sees the requests that never arrived), `successes`
   * as it reports them but never fewer than the broker accepted from this
   * epoch (`epochBatches`), attempts never fewer than successes. The node's
   * report includes the request that carries it. Null when the node reports
   * no sync counters (direct producers). docs/monitoring.md.
   */
  attempts: number | null
  successes: number | null
  /** successes / attempts; null when unknown. */
  successRate: number | null
  /** Pending on the node at its last report. */
  backlog: { pending: number; bytes: number; oldestTs: number | null }
  /**
   * Age of the oldest pending message now: its age on the node's clock at the
   * last report plus the time since that report (skew-free); null when none pending.
   */
  backlogAge: number | null
  /** Messages accepted from this node, duplicates ignored, late ones among the accepted. */
  received: number
  duplicates: number
  late: number
  batches: number
  /** Node clock minus broker time at the last contact, ms. */
  clockSkew: number | null
  /**
   * Messages the node reports it dropped (overflow) or that expired unsent
   * (removed, or past their TTL and waiting for cleanup), since its store was created.
   */
  dropped: number
  expired: number
  /** Outbox size and limit as last reported (bytes); null when unknown. */
  storage: { totalBytes: number; maxBytes: number } | null
  /** Node-reported sync details of its last report (attempts, failures, last error, backoff). */
  sync: Record<string, unknown> | null
  /**
   * Seqs of the node's current epoch below the highest the broker received
   * that it never received: messages still pending on the node (sent in
   * priority order), lost on it (dropped, expired), or skipped.
   */
  gaps: number
  /**
   * Reported losses (dropped + expired) beyond `gaps`: claims no missing seq
   * accounts for, so they raise no data-loss alert (docs/monitoring.md).
   */
  unverifiedLosses: number
  /** The node's low mark (the oldest ts it may still send, docs/ordering.md); null when never seen. */
  lowMark: number | null
  /**
   * How far the low mark of a live node is behind broker time, when that is more
   * than broker.ordering.maxHoldBack (health holding-back: it no longer holds the
   * watermark back); else null.
   */
  holdBack: number | null
  /**
   * Holding the watermark back: an edge node heard from within broker.ordering.maxLateness
   * whose low mark is within broker.ordering.maxHoldBack of broker time.
   */
  live: boolean
  /** Raw counters as the store keeps them. */
  counters: NodeCounters
  /** Requests accepted from the node's current epoch (outbox), as the broker counted them. */
  epochBatches: number
  /** When the node's token was created; null when it has none (auth=none, or revoked). */
  tokenCreatedAt: number | null
}

export interface FleetStatus {
  now: number
  rules: HealthRules
  summary: Record<Health, number> & { total: number }
  nodes: NodeStatus[]
}

/** Alert rules the broker evaluates (src/broker/alerts.ts, docs/monitoring.md). */
export type AlertRule = 'no-sync' | 'backlog-age' | 'data-loss' | 'never-synced' | 'hold-back'

/**
 * One alert: fired once when its condition starts, resolved once when it
 * clears. At most one alert per `key` (`rule:node`) is active at a time, in
 * the whole store, so several brokers sharing it fire and resolve each alert
 * exactly once between them.
 */
export interface AlertRecord {
  id: number
  /** `rule:node`. */
  key: string
  rule: AlertRule
  node: string
  state: 'active' | 'resolved'
  severity: 'warning' | 'critical'
  /** Human summary, e.g. "gw-17 has not synced for 16m (limit 15m)". */
  message: string
  /** The measured value that fired it (ms for ages, a count for data loss); updated while active. */
  value: number
  /** The configured limit it crossed (ms, or 0 for data loss). */
  threshold: number
  firedAt: number
  /** Last change of value/message, broker time. */
  updatedAt: number
  resolvedAt: number | null
}
