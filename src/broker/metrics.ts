/**
 * GET /metrics: Prometheus text exposition through prom-client, one Registry
 * per app instance (several brokers in one process, as in tests, never
 * collide). Node and fleet series are read from the store at scrape time, so
 * every broker sharing a store exports the same values; the HTTP series are
 * this process's own. Names and meanings: docs/monitoring.md "Metrics".
 */
import type * as PromClient from 'prom-client'
import { HEALTH_STATES, type FleetStatus, type NodeStatus } from './node-status.js'
import type { AlertRecord, StreamHeads } from './store/types.js'

export interface MetricsSnapshot {
  fleet: FleetStatus
  heads: StreamHeads
  /** Active alerts. */
  alerts: AlertRecord[]
}

export interface BrokerMetrics {
  readonly registry: PromClient.Registry
  readonly contentType: string
  /** Take a fresh snapshot and render every series. */
  render(): Promise<string>
  /** Count one HTTP request (process-local series). */
  observeRequest(method: string, route: string, status: number, seconds: number): void
}

export interface MetricsDeps {
  snapshot: () => Promise<MetricsSnapshot>
  storeKind: string
  version: string
  instance: string
  /** Add prom-client's process_* and nodejs_* series (default true). */
  defaultMetrics?: boolean
}

const sec = (ms: number) => ms / 1000

export async function createMetrics(deps: MetricsDeps): Promise<BrokerMetrics> {
  const prom = await import('prom-client')
  const registry = new prom.Registry()
  if (deps.defaultMetrics !== false) prom.collectDefaultMetrics({ register: registry })
  let snap: MetricsSnapshot | undefined
  const registers = [registry]

  /** A gauge whose values are set from the snapshot at each scrape. */
  const gauge = <L extends string>(
    name: string,
    help: string,
    labelNames: L[],
    fill: (set: (labels: Partial<Record<L, string>>, v: number) => void, s: MetricsSnapshot) => void,
  ) =>
    new prom.Gauge<L>({
      name,
      help,
      labelNames,
      registers,
      collect() {
        this.reset()
        if (snap) fill((labels, v) => this.set(labels as PromClient.LabelValues<L>, v), snap)
      },
    })
  /** A counter whose cumulative values come from the store at each scrape. */
  const counter = <L extends string>(
    name: string,
    help: string,
    labelNames: L[],
    fill: (inc: (labels: Partial<Record<L, string>>, v: number) => void, s: MetricsSnapshot) => void,
  ) =>
    new prom.Counter<L>({
      name,
      help,
      labelNames,
      registers,
      collect() {
        this.reset()
        if (snap) fill((labels, v) => this.inc(labels as PromClient.LabelValues<L>, Math.max(0, v)), snap)
      },
    })

  // ---- broker ----
  gauge('rmq_broker_info', 'Broker build and store (always 1).', ['store', 'version', 'instance'], (set) =>
    set({ store: deps.storeKind, version: deps.version, instance: deps.instance }, 1),
  )
  gauge('rmq_broker_nodes', 'Nodes by derived health state.', ['health'], (set, s) => {
    for (const h of HEALTH_STATES) set({ health: h }, s.fleet.summary[h])
  })
  counter('rmq_broker_messages_received_total', 'Messages accepted from all nodes.', [], (inc, s) =>
    inc(
      {},
      s.fleet.nodes.reduce((t, n) => t + n.received, 0),
    ),
  )
  gauge('rmq_broker_messages_stored', 'Messages the broker store holds.', [], (set, s) =>
    set({}, s.heads.total),
  )
  gauge(
    'rmq_broker_messages_held',
    'Messages stored but held back by the watermark (not yet in the event stream).',
    [],
    (set, s) => set({}, s.heads.held),
  )
  gauge(
    'rmq_broker_watermark_timestamp_seconds',
    'Event-time watermark: messages up to it are released in order.',
    [],
    (set, s) => {
      if (s.heads.watermark !== null) set({}, sec(s.heads.watermark))
    },
  )
  gauge('rmq_broker_alerts_active', 'Active alerts by rule.', ['rule', 'severity'], (set, s) => {
    const counts = new Map<string, { rule: string; severity: string; n: number }>()
    for (const a of s.alerts) {
      const k = `${a.rule}\u0000${a.severity}`
      const c = counts.get(k) ?? { rule: a.rule, severity: a.severity, n: 0 }
      c.n++
      counts.set(k, c)
    }
    for (const c of counts.values()) set({ rule: c.rule, severity: c.severity }, c.n)
  })
  const requests = new prom.Counter({
    name: 'rmq_broker_http_requests_total',
    help: 'HTTP requests answered by this broker process.',
    labelNames: ['method', 'route', 'status'],
    registers,
  })
  const duration = new prom.Histogram({
    name: 'rmq_broker_http_request_duration_seconds',
    help: 'Time to answer HTTP requests in this broker process.',
    labelNames: ['method', 'route'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  })

  // ---- per node ----
  gauge(
    'rmq_node_health',
    'Derived health of each node: 1 for its current state, 0 for the others.',
    ['node', 'state'],
    (set, s) => {
      for (const n of s.fleet.nodes)
        for (const h of HEALTH_STATES) set({ node: n.node, state: h }, +(n.health === h))
    },
  )
  // One series per edge node (never-seen and never-synced nodes have only rmq_node_health).
  type PerNode = [kind: 'gauge' | 'counter', name: string, help: string, of: (n: NodeStatus) => number | null]
  const perNode: PerNode[] = [
    [
      'gauge',
      'rmq_node_backlog_messages',
      'Messages pending on the node at its last report.',
      (n) => n.backlog.pending,
    ],
    [
      'gauge',
      'rmq_node_backlog_bytes',
      'Bytes pending on the node at its last report.',
      (n) => n.backlog.bytes,
    ],
    [
      'gauge',
      'rmq_node_backlog_oldest_age_seconds',
      'Age of the oldest message pending on the node (0 when none).',
      (n) => sec(n.backlogAge ?? 0),
    ],
    [
      'gauge',
      'rmq_node_last_sync_age_seconds',
      'Time since the last batch or heartbeat the broker accepted from the node.',
      (n) => sec(n.sinceContact ?? 0),
    ],
    [
      'gauge',
      'rmq_node_last_sync_timestamp_seconds',
      'When the broker last accepted a batch or heartbeat from the node.',
      (n) => sec(n.lastContact ?? 0),
    ],
    ['counter', 'rmq_node_messages_received_total', 'Messages accepted from the node.', (n) => n.received],
    [
      'counter',
      'rmq_node_duplicates_total',
      'Messages the node sent again that the broker already had.',
      (n) => n.duplicates,
    ],
    [
      'counter',
      'rmq_node_late_messages_total',
      'Messages from the node that arrived below the watermark (released flagged late).',
      (n) => n.late,
    ],
    ['counter', 'rmq_node_batches_total', 'Batches and heartbeats accepted from the node.', (n) => n.batches],
    [
      'counter',
      'rmq_node_dropped_messages_total',
      'Messages the node reports it dropped to make room (storage.overflow=drop-oldest).',
      (n) => n.dropped,
    ],
    [
      'counter',
      'rmq_node_expired_messages_total',
      'Messages the node reports expired before they could be sent.',
      (n) => n.expired,
    ],
    [
      'gauge',
      'rmq_node_seq_gaps',
      "Seqs of the node's current epoch below the highest received that the broker never received.",
      (n) => n.gaps,
    ],
    [
      'gauge',
      'rmq_node_clock_skew_seconds',
      "Node clock minus broker clock at the node's last contact.",
      (n) => (n.clockSkew === null ? null : sec(n.clockSkew)),
    ],
    [
      'gauge',
      'rmq_node_sync_success_ratio',
      'Successful sync requests over attempts (node-reported, at least what the broker accepted).',
      (n) => n.successRate,
    ],
  ]
  for (const [kind, name, help, of] of perNode)
    (kind === 'gauge' ? gauge : counter)(name, help, ['node'], (put, s) => {
      for (const n of s.fleet.nodes) {
        const v = n.lastContact === null ? null : of(n)
        if (v !== null) put({ node: n.node }, v)
      }
    })
  gauge(
    'rmq_alert_active',
    'One series per active alert (value 1).',
    ['rule', 'node', 'severity'],
    (set, s) => {
      for (const a of s.alerts) set({ rule: a.rule, node: a.node, severity: a.severity }, 1)
    },
  )

  return {
    registry,
    contentType: prom.Registry.PROMETHEUS_CONTENT_TYPE,
    async render() {
      // Collectors read the newest snapshot; overlapping scrapes at worst both see the newer one.
      snap = await deps.snapshot()
      return registry.metrics()
    },
    observeRequest(method, route, status, seconds) {
      requests.inc({ method, route, status: String(status) })
      duration.observe({ method, route }, seconds)
    },
  }
}
