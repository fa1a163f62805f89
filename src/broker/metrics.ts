/**
 * GET /metrics: Prometheus text exposition, one set of registries per app
 * instance (several brokers in one process, as in tests, never collide).
 * Node and fleet series are read from the store at scrape time (through the
 * monitoring plugin's FleetRows, which reads again only changed rows), so
 * every broker sharing a store exports the same values; the HTTP series are
 * this process's own, and prom-client's process_* and nodejs_* series are
 * written at most once a second. The per-node series are plain text kept per
 * node report; the reply is a few Buffers, sent as they are. Names and meanings: docs/monitoring.md
 * "Metrics".
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
  storeKind: string
  version: string
  instance: string
  /** Add prom-client's process_* and nodejs_* series (default true). */
  defaultMetrics?: boolean
}

const sec = (ms: number) => ms / 1000

/** prom-client's process_* and nodejs_* series are written again at most this often (ms). */
const PROCESS_METRICS_MS = 1000

/** A label value in the exposition format: backslash, double quote and line feed escaped. */
function escapeLabel(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v
}

/** A sample value as prom-client writes it. */
function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Infinity) return '+Inf'
  if (v === -Infinity) return '-Inf'
  return String(v)
}

function family(name: string, help: string, type: 'gauge' | 'counter'): string {
  return `# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${name} ${type}\n`
}

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
  // One series per node and family: with a thousand nodes that is some 20,000 lines, which
  // prom-client's per-label bookkeeping takes tens of ms to render. These are plain text, written
  // in one pass per family from the snapshot (docs/monitoring.md: a scrape stays under 20 ms).
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

  /** Families whose values change with broker time, not only with a node's report. */
  const live = new Set(['rmq_node_backlog_oldest_age_seconds', 'rmq_node_last_sync_age_seconds'])
  const line = (kind: PerNode[0], name: string, label: string, v: number | null) =>
    v === null ? '' : `${name}{${label}} ${formatValue(kind === 'counter' ? Math.max(0, v) : v)}\n`

  /** A node's label and its rmq_node_health lines for each state it was in (written when first needed). */
  interface NodeLabel {
    label: string
    health: Partial<Record<string, string>>
  }
  const labels = new Map<string, NodeLabel>()
  const labelOf = (node: string): NodeLabel => {
    let l = labels.get(node)
    if (!l) {
      if (labels.size >= 100_000) labels.clear()
      labels.set(node, (l = { label: `node="${escapeLabel(node)}"`, health: {} }))
    }
    return l
  }

  /**
   * Each node's lines, written once per report: keyed by (last contact,
   * requests accepted), which changes with every accepted batch or heartbeat.
   * Only the age lines are written again at each scrape.
   */
  interface NodeLines {
    lastContact: number | null
    batches: number
    label: string
    health: NodeLabel['health']
    lines: string[]
  }
  const lineCache = new Map<string, NodeLines>()
  const linesOf = (n: NodeStatus): NodeLines => {
    const hit = lineCache.get(n.node)
    if (hit && hit.lastContact === n.lastContact && hit.batches === n.batches) return hit
    const { label, health } = labelOf(n.node)
    const entry: NodeLines = {
      lastContact: n.lastContact,
      batches: n.batches,
      label,
      health,
      // Never-seen and never-synced nodes have only rmq_node_health.
      lines: perNode.map(([kind, name, , of]) =>
        n.lastContact === null || live.has(name) ? '' : line(kind, name, label, of(n)),
      ),
    }
    if (lineCache.size >= 100_000) lineCache.clear()
    lineCache.set(n.node, entry)
    return entry
  }

  /**
   * The per-node families in their order, as runs: a family written at each
   * scrape (`live`), or consecutive families that change only with a node's
   * report, kept as one Buffer while every node's lines stay the same.
   */
  type Run = { live: number } | { families: number[]; bytes?: Buffer }
  const runs: Run[] = []
  perNode.forEach(([, name], f) => {
    const last = runs[runs.length - 1]
    if (live.has(name)) runs.push({ live: f })
    else if (last && 'families' in last) last.families.push(f)
    else runs.push({ families: [f] })
  })
  const headers = perNode.map(([kind, name, help]) => family(name, help, kind))
  const healthHeader = family(
    'rmq_node_health',
    'Derived health of each node: 1 for its current state, 0 for the others.',
    'gauge',
  )
  /** What the kept Buffers were written from: each node's lines, and the health of each. */
  let keptLines: NodeLines[] = []
  let keptStates: string[] = []
  let keptHealth: Buffer | undefined
  const same = <T>(a: T[], b: T[]) => a.length === b.length && a.every((x, i) => x === b[i])

  /** The per-node families and rmq_alert_active as exposition text (one family after another). */
  const renderNodes = (s: MetricsSnapshot): Buffer[] => {
    const nodes = s.fleet.nodes
    const cached = nodes.map(linesOf)
    const states = nodes.map((n) => n.health)
    const linesKept = same(cached, keptLines)
    if (!linesKept) for (const r of runs) if ('families' in r) r.bytes = undefined
    if (!keptHealth || !linesKept || !same(states, keptStates)) {
      const parts = [healthHeader]
      for (let i = 0; i < nodes.length; i++) {
        const c = cached[i]
        const state = states[i]
        parts.push(
          (c.health[state] ??= HEALTH_STATES.map(
            (h) => `rmq_node_health{${c.label},state="${h}"} ${h === state ? 1 : 0}\n`,
          ).join('')),
        )
      }
      keptHealth = Buffer.from(parts.join(''))
    }
    keptLines = cached
    keptStates = states
    const out: Buffer[] = [keptHealth]
    for (const r of runs) {
      if ('live' in r) {
        const [kind, name, , of] = perNode[r.live]
        const parts = ['\n', headers[r.live]]
        for (let i = 0; i < nodes.length; i++)
          if (nodes[i].lastContact !== null) parts.push(line(kind, name, cached[i].label, of(nodes[i])))
        out.push(Buffer.from(parts.join('')))
      } else {
        if (!r.bytes) {
          const parts: string[] = []
          for (const f of r.families) {
            parts.push('\n', headers[f])
            for (const c of cached) parts.push(c.lines[f])
          }
          r.bytes = Buffer.from(parts.join(''))
        }
        out.push(r.bytes)
      }
    }
    let text = `\n${family('rmq_alert_active', 'One series per active alert (value 1).', 'gauge')}`
    for (const a of s.alerts)
      text += `rmq_alert_active{rule="${escapeLabel(a.rule)}",node="${escapeLabel(a.node)}",severity="${escapeLabel(a.severity)}"} 1\n`
    out.push(Buffer.from(text))
    return out
  }

  return {
    registry,
    contentType: prom.Registry.PROMETHEUS_CONTENT_TYPE,
    async render() {
      // Collectors read the newest snapshot; overlapping scrapes at worst both see the newer one.
      const s = await deps.snapshot()
      snap = s
      const [own, processSeries] = await Promise.all([registry.metrics(), processMetrics()])
      const broker = Buffer.from(processSeries ? `${processSeries}\n${own}\n` : `${own}\n`)
      // Not copied into one buffer: a fresh megabyte per scrape costs more than writing the parts.
      return [broker, ...renderNodes(s)]
    },
    observeRequest(method, route, status, seconds) {
      requests.inc({ method, route, status: String(status) })
      duration.observe({ method, route }, seconds)
    },
  }
}
