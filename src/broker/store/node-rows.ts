/**
 * Rows of the broker stores (messages, nodes, alerts, tokens) as records, and the SQL
 * fragments both stores' node upsert shares (the SQLite store and the
 * PostgreSQL one write the same columns the same way).
 */
import type { BatchBody } from '../../protocol/batch.js'
import { storedStats } from '../node-stats.js'
import type { AlertRecord, FoundToken, NodeRecord, StoredMessage, TokenRecord, TokenRole } from './types.js'

export interface NodeRow {
  node: string
  epoch: string
  direct: number
  first_seen: number
  last_contact: number
  last_sync: number | null
  clock_skew: number
  last_clock: number
  backlog_pending: number
  backlog_bytes: number
  backlog_oldest_ts: number | null
  low_mark: number
  stats: string | null
  received: number
  duplicates: number
  late: number
  batches: number
  epoch_batches: number
  epoch_received: number
  epoch_max_seq: number
}

export interface AlertRow {
  id: number
  key: string
  rule: AlertRecord['rule']
  node: string
  state: AlertRecord['state']
  severity: AlertRecord['severity']
  message: string
  value: number
  threshold: number
  fired_at: number
  updated_at: number
  resolved_at: number | null
}

export function toNode(r: NodeRow): NodeRecord {
  return {
    node: r.node,
    epoch: r.epoch,
    direct: r.direct === 1,
    firstSeen: r.first_seen,
    lastContact: r.last_contact,
    lastSync: r.last_sync,
    clockSkew: r.clock_skew,
    lastClock: r.last_clock,
    backlog: { pending: r.backlog_pending, bytes: r.backlog_bytes, oldestTs: r.backlog_oldest_ts },
    lowMark: r.low_mark,
    // Parsed once per report, not on every status read or scrape.
    stats: storedStats(r.node, r.last_contact, r.stats),
    counters: { received: r.received, duplicates: r.duplicates, late: r.late, batches: r.batches },
    epochBatches: r.epoch_batches,
    epochReceived: r.epoch_received,
    epochMaxSeq: r.epoch_max_seq,
  }
}

/** The columns of NodeRow in the order nodeFromValues reads them (a SELECT of these, raw). */
export const NODE_COLUMNS =
  'node, epoch, direct, first_seen, last_contact, last_sync, clock_skew, last_clock, backlog_pending, ' +
  'backlog_bytes, backlog_oldest_ts, low_mark, stats, received, duplicates, late, batches, epoch_batches, ' +
  'epoch_received, epoch_max_seq'

/**
 * A node row read as an array of NODE_COLUMNS' values: a scrape or status
 * read of a thousand nodes takes half the time of rows read as objects.
 */
export function nodeFromValues(v: unknown[]): NodeRecord {
  return toNode({
    node: v[0] as string,
    epoch: v[1] as string,
    direct: v[2] as number,
    first_seen: v[3] as number,
    last_contact: v[4] as number,
    last_sync: v[5] as number | null,
    clock_skew: v[6] as number,
    last_clock: v[7] as number,
    backlog_pending: v[8] as number,
    backlog_bytes: v[9] as number,
    backlog_oldest_ts: v[10] as number | null,
    low_mark: v[11] as number,
    stats: v[12] as string | null,
    received: v[13] as number,
    duplicates: v[14] as number,
    late: v[15] as number,
    batches: v[16] as number,
    epoch_batches: v[17] as number,
    epoch_received: v[18] as number,
    epoch_max_seq: v[19] as number,
  })
}

export function toAlert(r: AlertRow): AlertRecord {
  return {
    id: r.id,
    key: r.key,
    rule: r.rule,
    node: r.node,
    state: r.state,
    severity: r.severity,
    message: r.message,
    value: r.value,
    threshold: r.threshold,
    firedAt: r.fired_at,
    updatedAt: r.updated_at,
    resolvedAt: r.resolved_at,
  }
}

/** `rule:node`, the identity of an alert. */
export function alertKey(rule: string, node: string): string {
  return `${rule}:${node}`
}

/**
 * The node's report (clock, backlog, stats, low mark, last batch) as a batch
 * updates it, in both stores' upsert of the node row (`n`: the row before).
 * A batch is the node's latest word unless the last committed batch named it
 * in backlog.unacked (`waiting_for`): it was sent earlier and committed later,
 * so that report stands, and its low mark no longer has to leave this batch
 * out (`ahead_low_mark`). Otherwise the low mark leaves out the batch this
 * one names unless that is the last committed one (docs/protocol.md).
 * Parameters: @batch, @unacked, @lowMark; excluded.low_mark is the low mark
 * with the unacknowledged batch's oldest ts.
 */
export const NODE_REPORT_UPDATE = (n: string, p = (name: string) => `@${name}`) => {
  const late = `${n}.waiting_for = ${p('batch')}`
  const keep = (col: string, value: string) => `${col} = CASE WHEN ${late} THEN ${n}.${col} ELSE ${value} END`
  return [
    keep('clock_skew', 'excluded.clock_skew'),
    keep('last_clock', 'excluded.last_clock'),
    keep('backlog_pending', 'excluded.backlog_pending'),
    keep('backlog_bytes', 'excluded.backlog_bytes'),
    keep('backlog_oldest_ts', 'excluded.backlog_oldest_ts'),
    keep('stats', `COALESCE(excluded.stats, ${n}.stats)`),
    keep('last_batch', 'excluded.last_batch'),
    `low_mark = CASE WHEN ${late} THEN ${n}.ahead_low_mark
      WHEN ${n}.last_batch = ${p('unacked')} THEN ${p('lowMark')} ELSE excluded.low_mark END`,
    `waiting_for = CASE WHEN ${late} OR ${n}.last_batch = ${p('unacked')} THEN NULL ELSE excluded.waiting_for END`,
    `ahead_low_mark = CASE WHEN ${late} THEN NULL ELSE excluded.ahead_low_mark END`,
  ].join(',\n')
}

/**
 * Requests the broker accepted from the node's current outbox (epoch), in
 * both stores' upsert of the node row (`n`: the row before): one more, or 1
 * when the epoch changed (the node's outbox was recreated, its own sync
 * counters start from 0 too). A lower bound of the node's successes
 * (node-status.ts).
 */
export const EPOCH_BATCHES_UPDATE = (n: string) =>
  `epoch_batches = CASE WHEN ${n}.epoch = excluded.epoch THEN ${n}.epoch_batches + 1 ELSE 1 END`

/**
 * Messages accepted from, and the highest seq seen of, the node's current
 * epoch, in both stores' upsert of the node row (`greatest`: the SQL of the
 * larger of two values). Their difference is the node's seq gaps
 * (node-status.ts): seqs below the highest the broker never received.
 */
export const EPOCH_SEQS_UPDATE = (n: string, greatest: (a: string, b: string) => string) =>
  `epoch_received = CASE WHEN ${n}.epoch = excluded.epoch THEN ${n}.epoch_received + excluded.epoch_received
     ELSE excluded.epoch_received END,
   epoch_max_seq = CASE WHEN ${n}.epoch = excluded.epoch THEN ${greatest(`${n}.epoch_max_seq`, 'excluded.epoch_max_seq')}
     ELSE excluded.epoch_max_seq END`

/** The highest seq in a batch (0 for a heartbeat). */
export function maxSeqOf(batch: BatchBody): number {
  let max = 0
  for (const m of batch.messages) if (m.seq > max) max = m.seq
  return max
}

/**
 * A node's low mark: the oldest ts it still holds, but never above its clock.
 * That is `lowMark` when the batch's `backlog.unacked` batch is committed
 * (the node's last batch), else `unackedLowMark`, which counts that batch's
 * messages as still to come (docs/protocol.md, pipelining).
 */
export function lowMarkOf(batch: BatchBody): { lowMark: number; unackedLowMark: number } {
  const oldest = batch.backlog.oldestTs
  const lowMark = oldest === null || oldest === undefined ? batch.clock : Math.min(oldest, batch.clock)
  const unacked = batch.backlog.unacked
  return { lowMark, unackedLowMark: unacked ? Math.min(lowMark, unacked.oldestTs) : lowMark }
}

/** A message row as both stores read it back (node and epoch joined in, position NULL while held). */
export interface MessageRow {
  arrival: number
  node: string
  epoch: string
  seq: number
  topic: string
  ts: number
  payload: string
  enc: 'utf8' | 'base64'
  content_type: string | null
  priority: number
  expires_at: number | null
  headers: string | null
  received_at: number
  position: number | null
  late: number
}

export function toMessage(r: MessageRow): StoredMessage {
  return {
    node: r.node,
    epoch: r.epoch,
    seq: r.seq,
    topic: r.topic,
    ts: r.ts,
    payload: r.payload,
    enc: r.enc,
    contentType: r.content_type,
    priority: r.priority,
    expiresAt: r.expires_at,
    headers: r.headers === null ? null : (JSON.parse(r.headers) as Record<string, string>),
    receivedAt: r.received_at,
    arrival: r.arrival,
    position: r.position,
    late: r.late === 1,
  }
}

/** A token row as both stores read it (topic and group grants as JSON arrays, NULL when none). */
export interface TokenRow {
  name: string
  role: string
  topic_grants: string | null
  group_grants: string | null
  created_at: number
  last_used_at: number | null
  expires_at: number | null
  previous_until: number | null
  /** findToken only: 1 when the presented digest was the rotated-out one. */
  previous?: number | boolean
}

/** The columns of TokenRow in both stores' SELECTs. */
export const TOKEN_COLUMNS =
  'name, role, topic_grants, group_grants, created_at, last_used_at, expires_at, previous_until'

/** A grant list as stored: NULL when empty. */
export function grantsColumn(list: readonly string[]): string | null {
  return list.length === 0 ? null : JSON.stringify(list)
}

export function toToken(r: TokenRow): TokenRecord {
  return {
    name: r.name,
    role: r.role as TokenRole,
    topics: r.topic_grants === null ? [] : (JSON.parse(r.topic_grants) as string[]),
    groups: r.group_grants === null ? [] : (JSON.parse(r.group_grants) as string[]),
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
    expiresAt: r.expires_at,
    previousUntil: r.previous_until,
  }
}

export function toFoundToken(r: TokenRow): FoundToken {
  return { ...toToken(r), previous: r.previous === true || r.previous === 1 }
}
