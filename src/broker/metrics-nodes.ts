/**
 * The per-node series of GET /metrics, and rmq_alert_active, as exposition
 * text (metrics.ts adds the broker and process series). One series per node
 * and family: with a thousand nodes some 20,000 lines, which prom-client's
 * per-label bookkeeping takes tens of ms to render, so they are plain text,
 * kept between scrapes as far as they stay the same:
 * - a node's lines of the families that change only with its report, written
 *   once per row read (FleetRows keeps a row's record until it changes), and
 *   those families as one Buffer while no node's lines changed;
 * - rmq_node_health as one Buffer while no node's state changed (each node's
 *   lines per state written once);
 * - the two age families, written at each scrape from the health view (no
 *   full node status per scrape: healthAt only).
 * Names and meanings: docs/monitoring.md "Metrics".
 */
import type { FleetRowsRead } from './fleet-rows.js'
import {
  HEALTH_STATES,
  emptySummary,
  healthAt,
  healthRules,
  neverSeenHealth,
  nodeStatus,
  type FleetStatus,
  type Health,
  type HealthOptions,
  type NodeHealthAt,
  type NodeStatus,
} from './node-status.js'
import type { AlertRecord, NodeRecord, NodeTokenRecord } from './store/types.js'

export const sec = (ms: number) => ms / 1000

/** A label value in the exposition format: backslash, double quote and line feed escaped. */
export function escapeLabel(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v
}

/** A sample value as prom-client writes it. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Infinity) return '+Inf'
  if (v === -Infinity) return '-Inf'
  return String(v)
}

/** '', '.001' … '.999' without trailing zeros ('.1' for 100 ms): the fraction String(ms / 1000) ends with. */
const MS_FRACTIONS = Array.from({ length: 1000 }, (_, ms) =>
  ms === 0 ? '' : `.${String(ms).padStart(3, '0').replace(/0+$/, '')}`,
)

/**
 * formatValue(ms / 1000) for a duration in ms: for whole ms, the integer part
 * and a fraction from MS_FRACTIONS, which is the same text and several times
 * cheaper than formatting the double (two age lines per node per scrape).
 */
export function formatSeconds(ms: number): string {
  if (Number.isInteger(ms) && ms >= 0 && ms < 1e15)
    return String(Math.floor(ms / 1000)) + MS_FRACTIONS[ms % 1000]
  return formatValue(ms / 1000)
}

export function family(name: string, help: string, type: 'gauge' | 'counter'): string {
  return `# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${name} ${type}\n`
}

type Kind = 'gauge' | 'counter'
/** A family written from a node's report (`of`), or at each scrape from its health now (`at`). */
type PerNode =
  | { kind: Kind; name: string; help: string; of: (n: NodeStatus) => number | null }
  | { kind: Kind; name: string; help: string; atMs: (h: NodeHealthAt) => number }

const PER_NODE: PerNode[] = [
  {
    kind: 'gauge',
    name: 'rmq_node_backlog_messages',
    help: 'Messages pending on the node at its last report.',
    of: (n) => n.backlog.pending,
  },
  {
    kind: 'gauge',
    name: 'rmq_node_backlog_bytes',
    help: 'Bytes pending on the node at its last report.',
    of: (n) => n.backlog.bytes,
  },
  {
    kind: 'gauge',
    name: 'rmq_node_backlog_oldest_age_seconds',
    help: 'Age of the oldest message pending on the node (0 when none).',
    atMs: (h) => h.backlogAge ?? 0,
  },
  {
    kind: 'gauge',
    name: 'rmq_node_last_sync_age_seconds',
    help: 'Time since the last batch or heartbeat the broker accepted from the node.',
    atMs: (h) => h.sinceContact,
  },
  {
    kind: 'gauge',
    name: 'rmq_node_last_sync_timestamp_seconds',
    help: 'When the broker last accepted a batch or heartbeat from the node.',
    of: (n) => sec(n.lastContact ?? 0),
  },
  {
    kind: 'counter',
    name: 'rmq_node_messages_received_total',
    help: 'Messages accepted from the node.',
    of: (n) => n.received,
  },
  {
    kind: 'counter',
    name: 'rmq_node_duplicates_total',
    help: 'Messages the node sent again that the broker already had.',
    of: (n) => n.duplicates,
  },
  {
    kind: 'counter',
    name: 'rmq_node_late_messages_total',
    help: 'Messages from the node that arrived below the watermark (released flagged late).',
    of: (n) => n.late,
  },
  {
    kind: 'counter',
    name: 'rmq_node_batches_total',
    help: 'Batches and heartbeats accepted from the node.',
    of: (n) => n.batches,
  },
  {
    kind: 'counter',
    name: 'rmq_node_dropped_messages_total',
    help: 'Messages the node reports it dropped to make room (storage.overflow=drop-oldest).',
    of: (n) => n.dropped,
  },
  {
    kind: 'counter',
    name: 'rmq_node_expired_messages_total',
    help: 'Messages the node reports expired before they could be sent.',
    of: (n) => n.expired,
  },
  {
    kind: 'gauge',
    name: 'rmq_node_seq_gaps',
    help: "Seqs of the node's current epoch below the highest received that the broker never received.",
    of: (n) => n.gaps,
  },
  {
    kind: 'gauge',
    name: 'rmq_node_clock_skew_seconds',
    help: "Node clock minus broker clock at the node's last contact.",
    of: (n) => (n.clockSkew === null ? null : sec(n.clockSkew)),
  },
  {
    kind: 'gauge',
    name: 'rmq_node_sync_success_ratio',
    help: 'Successful sync requests over attempts (node-reported, at least what the broker accepted).',
    of: (n) => n.successRate,
  },
]

const line = (kind: Kind, name: string, label: string, v: number | null) =>
  v === null ? '' : `${name}{${label}} ${formatValue(kind === 'counter' ? Math.max(0, v) : v)}\n`

const HEADERS = PER_NODE.map((f) => family(f.name, f.help, f.kind))
const HEALTH_HEADER = family(
  'rmq_node_health',
  'Derived health of each node: 1 for its current state, 0 for the others.',
  'gauge',
)
const ALERT_HEADER = family('rmq_alert_active', 'One series per active alert (value 1).', 'gauge')

/**
 * The per-node families in their order, as runs: a family written at each
 * scrape (`at`), or consecutive families that change only with reports.
 */
type Run = { at: number } | { families: number[] }
const RUNS: Run[] = []
PER_NODE.forEach((f, i) => {
  const last = RUNS[RUNS.length - 1]
  if ('atMs' in f) RUNS.push({ at: i })
  else if (last && 'families' in last) last.families.push(i)
  else RUNS.push({ families: [i] })
})

/** One node of the fleet: its row, or none for a node credential never heard from. */
export interface FleetEntry {
  node: string
  record: NodeRecord | null
  token: NodeTokenRecord | null
}

/** The fleet at one scrape: what the per-node series and the broker's node gauges need. */
export interface FleetView {
  /** Every node, by id (the same array while the rows and credentials read are). */
  entries: readonly FleetEntry[]
  /** Each entry's health and ages now (null for a node without a row). */
  at: (NodeHealthAt | null)[]
  states: Health[]
  summary: FleetStatus['summary']
  /** Messages accepted from all nodes. */
  received: number
}

/** Never-seen and never-synced nodes have only rmq_node_health. */
const NO_LINES: string[] = PER_NODE.map(() => '')

const byNode = (a: FleetEntry, b: FleetEntry) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0)
const same = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i])

/** The per-node series of one broker app, with what it keeps between scrapes. */
export class NodeSeries {
  private entriesOf: {
    rows: FleetRowsRead['records']
    tokens: FleetRowsRead['tokens']
    entries: FleetEntry[]
  } = { rows: [], tokens: [], entries: [] }
  /** A node's label and its rmq_node_health lines per state. */
  private readonly labels = new Map<string, { label: string; health: Partial<Record<Health, string>> }>()
  /** Per family written at each scrape, each entry's `name{node="…"} ` (kept while the entries are the same). */
  private prefixes: { entries: readonly FleetEntry[]; byFamily: (string[] | undefined)[] } = {
    entries: [],
    byFamily: [],
  }
  /** A row's lines of the families written from reports (PER_NODE order; '' for the others). */
  private lines = new WeakMap<NodeRecord, string[]>()
  private keptLines: string[][] = []
  private keptRuns: (Buffer | undefined)[] = RUNS.map(() => undefined)
  private keptEntries: readonly FleetEntry[] = []
  private keptStates: Health[] = []
  private keptHealth: Buffer | undefined

  constructor(private readonly options: HealthOptions) {}

  /** Every node with its health at `now`. */
  view(rows: FleetRowsRead, now: number): FleetView {
    const entries = this.entries(rows)
    const rules = healthRules(this.options)
    const at: (NodeHealthAt | null)[] = []
    const states: Health[] = []
    const summary = emptySummary(entries.length)
    let received = 0
    for (const e of entries) {
      let state: Health
      if (e.record) {
        const h = healthAt(e.record, now, rules, this.options.maxLateness)
        at.push(h)
        state = h.health
        received += e.record.counters.received
      } else {
        at.push(null)
        state = neverSeenHealth(e.token!, now, rules)
      }
      states.push(state)
      summary[state]++
    }
    return { entries, at, states, summary, received }
  }

  /** The per-node families and rmq_alert_active, as buffers to send one after the other. */
  render(view: FleetView, alerts: readonly AlertRecord[], now: number): Buffer[] {
    const { entries, at, states } = view
    const lines = entries.map((e) => (e.record ? this.linesOf(e, now) : NO_LINES))
    if (!same(lines, this.keptLines)) this.keptRuns = RUNS.map(() => undefined)
    this.keptLines = lines
    if (!this.keptHealth || entries !== this.keptEntries || !same(states, this.keptStates)) {
      const parts = [HEALTH_HEADER]
      for (let i = 0; i < entries.length; i++) {
        const l = this.labelOf(entries[i].node)
        const state = states[i]
        parts.push(
          (l.health[state] ??= HEALTH_STATES.map(
            (h) => `rmq_node_health{${l.label},state="${h}"} ${h === state ? 1 : 0}\n`,
          ).join('')),
        )
      }
      this.keptHealth = Buffer.from(parts.join(''))
      this.keptEntries = entries
      this.keptStates = states
    }
    const out: Buffer[] = [this.keptHealth]
    RUNS.forEach((r, k) => {
      if ('at' in r) {
        // Written at every scrape: each line is the node's kept prefix and its age now.
        const f = PER_NODE[r.at] as Extract<PerNode, { atMs: unknown }>
        const prefixes = this.prefixesOf(entries, r.at)
        let text = `\n${HEADERS[r.at]}`
        for (let i = 0; i < entries.length; i++) {
          const h = at[i]
          if (h) text += `${prefixes[i]}${formatSeconds(f.atMs(h))}\n`
        }
        out.push(Buffer.from(text))
        return
      }
      let bytes = this.keptRuns[k]
      if (!bytes) {
        const parts: string[] = []
        for (const f of r.families) {
          parts.push('\n', HEADERS[f])
          for (const l of lines) parts.push(l[f])
        }
        this.keptRuns[k] = bytes = Buffer.from(parts.join(''))
      }
      out.push(bytes)
    })
    let text = `\n${ALERT_HEADER}`
    for (const a of alerts)
      text += `rmq_alert_active{rule="${escapeLabel(a.rule)}",node="${escapeLabel(a.node)}",severity="${escapeLabel(a.severity)}"} 1\n`
    out.push(Buffer.from(text))
    return out
  }

  /** The entries of these rows and credentials, by id (kept while both arrays are the same). */
  private entries(rows: FleetRowsRead): FleetEntry[] {
    const kept = this.entriesOf
    if (kept.rows === rows.records && kept.tokens === rows.tokens) return kept.entries
    const tokens = new Map(rows.tokens.map((t) => [t.name, t]))
    const entries: FleetEntry[] = rows.records.map((r) => ({
      node: r.node,
      record: r,
      token: tokens.get(r.node) ?? null,
    }))
    const known = new Set(rows.records.map((r) => r.node))
    for (const t of rows.tokens)
      if (!known.has(t.name)) entries.push({ node: t.name, record: null, token: t })
    // Rows come by id in the store's collation: sorted again unless already in this one's order.
    if (entries.some((e, i) => i > 0 && byNode(entries[i - 1], e) > 0)) entries.sort(byNode)
    this.entriesOf = { rows: rows.records, tokens: rows.tokens, entries }
    return entries
  }

  /** Each entry's line prefix of family `f` (a family written at each scrape). */
  private prefixesOf(entries: readonly FleetEntry[], f: number): string[] {
    if (this.prefixes.entries !== entries) this.prefixes = { entries, byFamily: [] }
    return (this.prefixes.byFamily[f] ??= entries.map(
      (e) => `${PER_NODE[f].name}{${this.labelOf(e.node).label}} `,
    ))
  }

  private labelOf(node: string) {
    let l = this.labels.get(node)
    if (!l) {
      if (this.labels.size >= 100_000) this.labels.clear()
      this.labels.set(node, (l = { label: `node="${escapeLabel(node)}"`, health: {} }))
    }
    return l
  }

  /** A row's report lines, written once per row read (none of them depends on `now`). */
  private linesOf(e: FleetEntry, now: number): string[] {
    const r = e.record!
    let l = this.lines.get(r)
    if (!l) {
      const n = nodeStatus(r, now, healthRules(this.options), this.options.maxLateness, e.token ?? undefined)
      const { label } = this.labelOf(r.node)
      l = PER_NODE.map((f) => ('of' in f ? line(f.kind, f.name, label, f.of(n)) : ''))
      this.lines.set(r, l)
    }
    return l
  }
}
