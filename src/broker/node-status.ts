/**
 * What the broker tells about each node: the stored NodeRecord plus derived
 * values (ages, success rate, losses) and a health state. One place for the
 * rules, shared by GET /v1/nodes, the alerts, /metrics and the dashboard
 * (docs/monitoring.md "Health").
 */
import { formatAge, formatDuration } from '../shared/units.js'
import type { RmqConfig } from '../core/config/schema.js'
import type { FleetStatus, Health, HealthRules, NodeStatus } from '../protocol/fleet-status.js'
import type { FleetRowsRead } from './fleet-rows.js'
import type { BrokerStore, NodeRecord, NodeTokenRecord } from './store/types.js'

export type { FleetStatus, Health, HealthRules, NodeStatus } from '../protocol/fleet-status.js'
export { HEALTH_STATES } from '../protocol/fleet-status.js'

/** The broker options the health and alert rules read (a part of BrokerOptions). */
export interface HealthOptions {
  /** broker.alerts.* (dataLossClearAfter and neverSyncedFor default to 1h when left out). */
  alerts: Omit<RmqConfig['broker']['alerts'], 'dataLossClearAfter' | 'neverSyncedFor'> & {
    dataLossClearAfter?: number
    neverSyncedFor?: number
  }
  /** broker.ordering.maxLateness, ms. */
  maxLateness: number
  /** broker.ordering.maxHoldBack, ms (default 15m when left out; 0: no bound). */
  maxHoldBack?: number
}

const DEFAULT_STALE_AFTER = 15 * 60_000
export const DEFAULT_NEVER_SYNCED_FOR = 3_600_000
export const DEFAULT_MAX_HOLD_BACK = 15 * 60_000

export function healthRules(options: HealthOptions): HealthRules {
  return {
    staleAfter: options.alerts.noSyncFor > 0 ? options.alerts.noSyncFor : DEFAULT_STALE_AFTER,
    behindAfter: options.maxLateness,
    neverSyncedAfter: options.alerts.neverSyncedFor ?? DEFAULT_NEVER_SYNCED_FOR,
    holdBackAfter: options.maxHoldBack ?? DEFAULT_MAX_HOLD_BACK,
  }
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
}

/**
 * Dropped and expired totals a node reported in its last batch (0 when it
 * never said). Expired counts the messages past their TTL still waiting for
 * the node's cleanup (`expiredPending`) too: they will never be sent.
 */
export function reportedLosses(stats: Record<string, unknown> | null): { dropped: number; expired: number } {
  const storage = obj(stats?.storage)
  return {
    dropped: num(storage?.droppedTotal) ?? 0,
    expired: (num(storage?.expiredTotal) ?? 0) + (num(storage?.expiredPending) ?? 0),
  }
}

export function backlogAgeOf(r: NodeRecord, now: number): number | null {
  if (r.backlog.pending <= 0 || r.backlog.oldestTs === null) return null
  return Math.max(0, r.lastClock - r.backlog.oldestTs) + Math.max(0, now - r.lastContact)
}

/** The node's attempts and successes: its report, with what the broker accepted as the floor. */
function syncCounts(
  sync: Record<string, unknown> | null,
  epochBatches: number,
): { attempts: number; successes: number } | null {
  const reported = num(sync?.attempts)
  if (reported === undefined) return null
  const successes = Math.max(num(sync?.successes) ?? 0, epochBatches)
  return { attempts: Math.max(reported, successes), successes }
}

/** What of a node's status changes with broker time alone (docs/monitoring.md "Health rules"). */
export interface NodeHealthAt {
  health: Health
  sinceContact: number
  backlogAge: number | null
  holdBack: number | null
  live: boolean
}

/**
 * A node row's health at `now` and the ages it comes from; with `reasons`,
 * why (pushed to it). nodeStatus and /metrics (which needs no reasons) share it.
 */
export function healthAt(
  r: NodeRecord,
  now: number,
  rules: HealthRules,
  maxLateness: number,
  reasons?: string[],
): NodeHealthAt {
  const sinceContact = Math.max(0, now - r.lastContact)
  const backlogAge = backlogAgeOf(r, now)
  let health: Health = 'ok'
  const live = !r.direct && now - r.lastContact <= maxLateness
  const behindBy = now - r.lowMark
  const holdBack = live && rules.holdBackAfter > 0 && behindBy > rules.holdBackAfter ? behindBy : null
  if (holdBack !== null) {
    health = 'holding-back'
    reasons?.push(
      `low mark ${formatAge(holdBack)} behind broker time (limit ${formatDuration(rules.holdBackAfter)}): ` +
        'it no longer holds the watermark back, so its older messages arrive late',
    )
  }
  if (!r.direct && sinceContact > rules.staleAfter) {
    health = 'stale'
    reasons?.push(`no sync for ${formatAge(sinceContact)} (limit ${formatDuration(rules.staleAfter)})`)
  }
  if (!r.direct && backlogAge !== null && backlogAge > rules.behindAfter) {
    if (health === 'ok') health = 'behind'
    reasons?.push(
      `oldest pending message is ${formatAge(backlogAge)} old (limit ${formatDuration(rules.behindAfter)})`,
    )
  }
  return { health, sinceContact, backlogAge, holdBack, live: live && holdBack === null }
}

export function nodeStatus(
  r: NodeRecord,
  now: number,
  rules: HealthRules,
  maxLateness: number,
  token?: NodeTokenRecord,
): NodeStatus {
  const stats = r.stats
  const sync = obj(stats?.sync) ?? null
  const storage = obj(stats?.storage)
  const counts = syncCounts(sync, r.epochBatches)
  const reasons: string[] = []
  const { health, sinceContact, backlogAge, holdBack, live } = healthAt(r, now, rules, maxLateness, reasons)
  const maxBytes = num(storage?.maxBytes)
  const totalBytes = num(storage?.totalBytes)
  const losses = reportedLosses(stats)
  const gaps = Math.max(0, r.epochMaxSeq - r.epochReceived)
  const unverifiedLosses = Math.max(0, losses.dropped + losses.expired - gaps)
  if (unverifiedLosses > 0)
    reasons.push(
      `reports ${losses.dropped + losses.expired} lost message(s) but only ${gaps} seq(s) are missing: ` +
        `${unverifiedLosses} not accounted for (no alert)`,
    )
  return {
    node: r.node,
    health,
    reasons,
    epoch: r.epoch,
    direct: r.direct,
    firstSeen: r.firstSeen,
    lastContact: r.lastContact,
    lastSync: r.lastSync,
    sinceContact,
    lastSuccessAt: r.lastContact,
    attempts: counts?.attempts ?? null,
    successes: counts?.successes ?? null,
    successRate: counts && counts.attempts > 0 ? counts.successes / counts.attempts : null,
    backlog: { ...r.backlog },
    backlogAge,
    received: r.counters.received,
    duplicates: r.counters.duplicates,
    late: r.counters.late,
    batches: r.counters.batches,
    clockSkew: r.clockSkew,
    ...losses,
    gaps,
    unverifiedLosses,
    storage: maxBytes !== undefined && totalBytes !== undefined ? { totalBytes, maxBytes } : null,
    sync,
    lowMark: r.lowMark,
    holdBack,
    live,
    counters: { ...r.counters },
    epochBatches: r.epochBatches,
    tokenCreatedAt: token?.createdAt ?? null,
  }
}

/**
 * A node that has a token but never sent a batch or heartbeat: never-seen,
 * or never-synced once its token is older than rules.neverSyncedAfter.
 */
/** The health of a node with a token and no row: never-synced once the token is older than the rule. */
export function neverSeenHealth(token: NodeTokenRecord, now: number, rules: HealthRules): Health {
  const age = Math.max(0, now - token.createdAt)
  return rules.neverSyncedAfter > 0 && age > rules.neverSyncedAfter ? 'never-synced' : 'never-seen'
}

export function neverSeenStatus(token: NodeTokenRecord, now: number, rules: HealthRules): NodeStatus {
  const age = Math.max(0, now - token.createdAt)
  const health = neverSeenHealth(token, now, rules)
  const overdue = health === 'never-synced'
  return {
    node: token.name,
    health,
    reasons: [
      overdue
        ? `has had a token for ${formatAge(age)} but never synced (limit ${formatDuration(rules.neverSyncedAfter)})`
        : 'has a token but never synced',
    ],
    epoch: null,
    direct: false,
    firstSeen: null,
    lastContact: null,
    lastSync: null,
    sinceContact: null,
    lastSuccessAt: null,
    attempts: null,
    successes: null,
    successRate: null,
    backlog: { pending: 0, bytes: 0, oldestTs: null },
    backlogAge: null,
    received: 0,
    duplicates: 0,
    late: 0,
    batches: 0,
    clockSkew: null,
    dropped: 0,
    expired: 0,
    storage: null,
    sync: null,
    gaps: 0,
    unverifiedLosses: 0,
    lowMark: null,
    holdBack: null,
    live: false,
    counters: { received: 0, duplicates: 0, late: 0, batches: 0 },
    epochBatches: 0,
    tokenCreatedAt: token.createdAt,
  }
}

/** A fleet summary of `total` nodes with every health count at zero. */
export function emptySummary(total: number): FleetStatus['summary'] {
  return { ok: 0, behind: 0, 'holding-back': 0, stale: 0, 'never-seen': 0, 'never-synced': 0, total }
}

export function summarize(nodes: NodeStatus[]): FleetStatus['summary'] {
  const summary = emptySummary(nodes.length)
  for (const n of nodes) summary[n.health]++
  return summary
}

/** Every node the store knows, plus token holders never heard from, sorted by id. */
export async function fleetStatus(
  store: BrokerStore,
  options: HealthOptions,
  now: number,
): Promise<FleetStatus> {
  const [records, tokens] = await Promise.all([store.nodes(), store.nodeTokens()])
  return fleetStatusOf({ records, tokens }, options, now)
}

/** Node credentials by name, and the node ids with a row, per array read (FleetRows hands out the same ones while unchanged). */
const tokensByName = new WeakMap<readonly NodeTokenRecord[], Map<string, NodeTokenRecord>>()
const idsOf = new WeakMap<readonly NodeRecord[], Set<string>>()

const byId = (a: NodeStatus, b: NodeStatus) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0)

/** fleetStatus of rows already read (a FleetRows read: fleet-rows.ts). */
export function fleetStatusOf(rows: FleetRowsRead, options: HealthOptions, now: number): FleetStatus {
  const rules = healthRules(options)
  const { records, tokens } = rows
  let byNode = tokensByName.get(tokens)
  if (!byNode) tokensByName.set(tokens, (byNode = new Map(tokens.map((t) => [t.name, t]))))
  let known = idsOf.get(records)
  if (!known) idsOf.set(records, (known = new Set(records.map((r) => r.node))))
  const nodes = records.map((r) => nodeStatus(r, now, rules, options.maxLateness, byNode.get(r.node)))
  for (const t of tokens) if (!known.has(t.name)) nodes.push(neverSeenStatus(t, now, rules))
  // Rows come by id in the store's collation: sorted again only when not in this one's order.
  if (nodes.some((n, i) => i > 0 && byId(nodes[i - 1], n) > 0)) nodes.sort(byId)
  return { now, rules, summary: summarize(nodes), nodes }
}
