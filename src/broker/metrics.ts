/**
 * GET /metrics: Prometheus text exposition, one set of registries per app
 * instance (several brokers in one process, as in tests, never collide).
 * Node and fleet series are read from the store at scrape time (through the
 * monitoring plugin's FleetRows, which reads again only changed rows), so
 * every broker sharing a store exports the same values; the HTTP series are
 * this process's own, and prom-client's process_* and nodejs_* series are
 * written at most once a second. The per-node series (metrics-nodes.ts) are
 * plain text kept per node report; render() returns a few Buffers, which
 * the route sends as one. Names and meanings: docs/monitoring.md "Metrics".
 */
import type * as PromClient from 'prom-client'
import type { FleetRowsRead } from './fleet-rows.js'
import { NodeSeries, sec, type FleetView } from './metrics-nodes.js'
import { HEALTH_STATES, type HealthOptions } from './node-status.js'
import type { AlertRecord, StreamHeads } from './store/types.js'

export interface MetricsSnapshot {
  /** The fleet's rows and node credentials (a FleetRows read). */
  rows: FleetRowsRead
  /** Broker time of the scrape, epoch ms. */
  now: number
  heads: StreamHeads
  /** Active alerts. */
  alerts: AlertRecord[]
}

/** A snapshot with the fleet's health at its time. */
type Scrape = MetricsSnapshot & { view: FleetView }

export interface BrokerMetrics {
  readonly registry: PromClient.Registry
  readonly contentType: string
  /**
   * Take a fresh snapshot and render every series: the reply's body, as the
   * buffers to send one after the other (some are kept from one scrape to the
   * next: never modify them).
   */
  render(): Promise<Buffer[]>
  /** Count one HTTP request (process-local series). */
  observeRequest(method: string, route: string, status: number, seconds: number): void
}

export interface MetricsDeps {
  snapshot: () => Promise<MetricsSnapshot>
  /** The health rules' options (broker.alerts, broker.ordering). */
  health: HealthOptions
  storeKind: string
  version: string
  instance: string
  /** Add prom-client's process_* and nodejs_* series (default true). */
  defaultMetrics?: boolean
}

/** prom-client's process_* and nodejs_* series are written again at most this often (ms). */
const PROCESS_METRICS_MS = 1000

export async function createMetrics(deps: MetricsDeps): Promise<BrokerMetrics> {
  const prom = await import('prom-client')
  const registry = new prom.Registry()
  // prom-client's process_* and nodejs_* series, in their own registry: written at most once a second.
  const processRegistry = new prom.Registry()
  if (deps.defaultMetrics !== false) prom.collectDefaultMetrics({ register: processRegistry })
  let processText: { at: number; text: Promise<string> } | undefined
  const processMetrics = () => {
    const t = performance.now()
    if (!processText || t - processText.at >= PROCESS_METRICS_MS) {
      const text = processRegistry.metrics()
      processText = { at: t, text }
      text.catch(() => (processText = undefined))
    }
    return processText.text
  }
  let snap: Scrape | undefined
  const registers = [registry]

  /** A gauge whose values are set from the snapshot at each scrape. */
  const gauge = <L extends string>(
    name: string,
    help: string,
    labelNames: L[],
    fill: (set: (labels: Partial<Record<L, string>>, v: number) => void, s: Scrape) => void,
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
    fill: (inc: (labels: Partial<Record<L, string>>, v: number) => void, s: Scrape) => void,
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
    for (const h of HEALTH_STATES) set({ health: h }, s.view.summary[h])
  })
  counter('rmq_broker_messages_received_total', 'Messages accepted from all nodes.', [], (inc, s) =>
    inc({}, s.view.received),
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
  // PostgreSQL: ingests wait after their commit for a release pass; an open transaction anywhere on
  // the server holds those back (docs/scaling.md). Absent on SQLite, which has no such wait.
  gauge(
    'rmq_broker_store_position_wait_seconds',
    'Longest wait now of an ingest on this broker for its positions (PostgreSQL release pass; 0: none waits).',
    [],
    (set, s) => {
      if (s.heads.positionWaits) set({}, s.heads.positionWaits.oldestWaitMs / 1000)
    },
  )
  gauge(
    'rmq_broker_store_position_waiting',
    'Ingests and release calls on this broker waiting for a PostgreSQL release pass.',
    [],
    (set, s) => {
      if (s.heads.positionWaits) set({}, s.heads.positionWaits.waiting)
    },
  )
  counter(
    'rmq_broker_store_position_stalls_total',
    'Ingests answered 503 because an open transaction held their positions back past the bound (PostgreSQL).',
    [],
    (inc, s) => {
      if (s.heads.positionWaits) inc({}, s.heads.positionWaits.stalled)
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

  // ---- per node (metrics-nodes.ts) ----
  const nodeSeries = new NodeSeries(deps.health)

  return {
    registry,
    contentType: prom.Registry.PROMETHEUS_CONTENT_TYPE,
    async render() {
      // Collectors read the newest snapshot; overlapping scrapes at worst both see the newer one.
      const s = await deps.snapshot()
      const scrape: Scrape = { ...s, view: nodeSeries.view(s.rows, s.now) }
      snap = scrape
      const [own, processSeries] = await Promise.all([registry.metrics(), processMetrics()])
      const broker = Buffer.from(processSeries ? `${processSeries}\n${own}\n` : `${own}\n`)
      // The route joins them into one buffer (routes/metrics.ts says why).
      return [broker, ...nodeSeries.render(scrape.view, s.alerts, s.now)]
    },
    observeRequest(method, route, status, seconds) {
      requests.inc({ method, route, status: String(status) })
      duration.observe({ method, route }, seconds)
    },
  }
}
