/**
 * Embedded BrokerStore on SQLite (better-sqlite3): WAL, synchronous=FULL,
 * one BEGIN IMMEDIATE transaction per batch. The SQL sticks to what
 * PostgreSQL also speaks (ON CONFLICT, UPDATE ... FROM, partial indexes,
 * window functions) so the PostgreSQL store can mirror it.
 */
import fs from 'node:fs'
import path from 'node:path'
import type BetterSqlite3 from 'better-sqlite3'
import type { BatchAck, BatchBody, WireMessage } from '../../core/protocol.js'
import { topicMatcher } from '../topic-filter.js'
import {
  StoreUnavailableError,
  type BrokerStore,
  type BrokerStoreOptions,
  type AlertQuery,
  type AlertRecord,
  type GroupRecord,
  type IngestContext,
  type NewAlert,
  type NodeRecord,
  type ReadOrder,
  type ReadQuery,
  type ReadResult,
  type ReleaseResult,
  type StoredMessage,
  type StreamHeads,
  type TokenRecord,
} from './types.js'

const SCHEMA = `
CREATE TABLE IF NOT EXISTS broker_meta (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  schema_version INTEGER NOT NULL,
  watermark INTEGER,
  next_position INTEGER NOT NULL,
  next_arrival INTEGER NOT NULL
);
INSERT INTO broker_meta (id, schema_version, watermark, next_position, next_arrival)
  VALUES (1, 1, NULL, 1, 1) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS messages (
  arrival INTEGER PRIMARY KEY,
  node TEXT NOT NULL,
  epoch TEXT NOT NULL,
  seq INTEGER NOT NULL,
  topic TEXT NOT NULL,
  ts INTEGER NOT NULL,
  payload TEXT NOT NULL,
  enc TEXT NOT NULL,
  content_type TEXT,
  priority INTEGER NOT NULL,
  expires_at INTEGER,
  headers TEXT,
  received_at INTEGER NOT NULL,
  position INTEGER,
  late INTEGER NOT NULL DEFAULT 0,
  UNIQUE (node, epoch, seq)
);
CREATE INDEX IF NOT EXISTS messages_held ON messages (ts, node, seq, epoch) WHERE position IS NULL;
CREATE TABLE IF NOT EXISTS nodes (
  node TEXT PRIMARY KEY,
  epoch TEXT NOT NULL,
  direct INTEGER NOT NULL,
  first_seen INTEGER NOT NULL,
  last_contact INTEGER NOT NULL,
  last_sync INTEGER,
  clock_skew INTEGER NOT NULL,
  last_clock INTEGER NOT NULL,
  backlog_pending INTEGER NOT NULL,
  backlog_bytes INTEGER NOT NULL,
  backlog_oldest_ts INTEGER,
  low_mark INTEGER NOT NULL,
  stats TEXT,
  received INTEGER NOT NULL,
  duplicates INTEGER NOT NULL,
  late INTEGER NOT NULL,
  batches INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
  node TEXT PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  last_used_at INTEGER
);
CREATE TABLE IF NOT EXISTS consumer_groups (
  name TEXT NOT NULL,
  ord TEXT NOT NULL,
  position INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (name, ord)
);
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL,
  rule TEXT NOT NULL,
  node TEXT NOT NULL,
  state TEXT NOT NULL,
  severity TEXT NOT NULL,
  message TEXT NOT NULL,
  value INTEGER NOT NULL,
  threshold INTEGER NOT NULL,
  fired_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  resolved_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_active ON alerts (key) WHERE state = 'active';
`

interface MetaRow {
  watermark: number | null
  next_position: number
  next_arrival: number
}

interface MessageRow {
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

interface NodeRow {
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

/** Rows examined per query when a topic filter skips non-matching messages. */
const SCAN_CHUNK = 2000
const SCAN_MAX_ROWS = 50_000

const UNAVAILABLE_CODES = /^SQLITE_(FULL|BUSY|LOCKED|IOERR|READONLY|CANTOPEN|NOMEM|PROTOCOL)/
/** Most batches sharing one commit. */
const MAX_GROUP = 64
/** Rows per multi-row INSERT on the fast ingest path. */
const INSERT_ROWS = 32
const INSERT_COLUMNS = 15
/**
 * Stores made before the position index became partial declare `position
 * INTEGER UNIQUE` (an index entry for every held NULL too); both work.
 */
const POSITION_INDEX =
  'CREATE UNIQUE INDEX IF NOT EXISTS messages_position ON messages (position) WHERE position IS NOT NULL'

/** Thrown inside the fast group transaction: roll it back and ingest the group on the general path. */
class SlowPath extends Error {}

/** An accepted message on the fast ingest path, in arrival order (with its event-order key). */
interface Fresh {
  ts: number
  node: string
  seq: number
  epoch: string
  m: WireMessage
  receivedAt: number
  late: number
  position: number | null
}

/** SQLite's BINARY order of TEXT (UTF-8 bytes, i.e. code points), not JS's UTF-16 code units. */
export function compareText(a: string, b: string): number {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x === y) continue
    // Surrogates (astral code points) sort after U+E000..U+FFFF in code point order.
    if (x >= 0xd800) x = x <= 0xdfff ? x + 0x2000 : x - 0x800
    if (y >= 0xd800) y = y <= 0xdfff ? y + 0x2000 : y - 0x800
    return x - y
  }
  return a.length - b.length
}

/** The event order: (ts, node, seq, epoch), as ORDER BY in releaseUpTo. */
function compareEvent(
  a: { ts: number; node: string; seq: number; epoch: string },
  b: { ts: number; node: string; seq: number; epoch: string },
): number {
  return a.ts - b.ts || compareText(a.node, b.node) || a.seq - b.seq || compareText(a.epoch, b.epoch)
}

interface IngestJob {
  batch: BatchBody
  ctx: IngestContext
  resolve: (ack: BatchAck) => void
  reject: (err: unknown) => void
  result?: BatchAck
  error?: unknown
}

function mapError(err: unknown): unknown {
  const code = (err as { code?: string })?.code
  if (typeof code === 'string' && UNAVAILABLE_CODES.test(code))
    return new StoreUnavailableError(`the broker store cannot commit (${code})`, { cause: err })
  return err
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
    stats: r.stats === null ? null : (JSON.parse(r.stats) as Record<string, unknown>),
    counters: { received: r.received, duplicates: r.duplicates, late: r.late, batches: r.batches },
  }
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

/** A node's low mark: the oldest ts it still holds, but never above its clock. */
export function lowMarkOf(batch: BatchBody): number {
  const oldest = batch.backlog.oldestTs
  return oldest === null || oldest === undefined ? batch.clock : Math.min(oldest, batch.clock)
}

export class SqliteBrokerStore implements BrokerStore {
  readonly kind = 'sqlite'
  private readonly db: BetterSqlite3.Database
  private readonly stmts: ReturnType<SqliteBrokerStore['prepare']>
  private readonly insertTx: BetterSqlite3.Transaction<
    (batch: BatchBody, ctx: IngestContext, before: number | null) => Omit<BatchAck, 'watermark'>
  >
  private readonly groupTx: BetterSqlite3.Transaction<(jobs: IngestJob[]) => void>
  private readonly fastGroupTx: BetterSqlite3.Transaction<(jobs: IngestJob[]) => void>
  private readonly nodeTx: BetterSqlite3.Transaction<(job: IngestJob, before: number | null) => Fresh[]>
  private queue: IngestJob[] = []
  private flushScheduled = false
  private readonly releaseTx: BetterSqlite3.Transaction<(ctx: IngestContext) => ReleaseResult>
  private closed = false
  /** Take fastGroupSync first (tests turn it off to compare it with the general path). */
  fastIngest = true

  constructor(db: BetterSqlite3.Database) {
    this.db = db
    this.stmts = this.prepare()
    // Nested inside groupTx, each batch runs in its own SAVEPOINT: one bad batch spoils only itself.
    this.insertTx = db.transaction((batch: BatchBody, ctx: IngestContext, before: number | null) =>
      this.insertSync(batch, ctx, before),
    )
    this.groupTx = db.transaction((jobs: IngestJob[]) => this.groupSync(jobs))
    this.fastGroupTx = db.transaction((jobs: IngestJob[]) => this.fastGroupSync(jobs))
    this.nodeTx = db.transaction((job: IngestJob, before: number | null) => this.acceptSync(job, before))
    this.releaseTx = db.transaction((ctx: IngestContext) => this.releaseSync(ctx))
  }

  private prepare() {
    const db = this.db
    return {
      meta: db.prepare<[], MetaRow>(
        'SELECT watermark, next_position, next_arrival FROM broker_meta WHERE id = 1',
      ),
      setArrival: db.prepare<[number]>('UPDATE broker_meta SET next_arrival = ? WHERE id = 1'),
      setRelease: db.prepare<[number | null, number]>(
        'UPDATE broker_meta SET watermark = ?, next_position = ? WHERE id = 1',
      ),
      insert: db.prepare(
        `INSERT INTO messages (arrival, node, epoch, seq, topic, ts, payload, enc, content_type, priority,
           expires_at, headers, received_at, position, late)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)
         ON CONFLICT (node, epoch, seq) DO NOTHING`,
      ),
      insertOne: db.prepare(insertSql(1)),
      insertMany: db.prepare(insertSql(INSERT_ROWS)),
      existingRange: db
        .prepare<[string, string, number, number], number>(
          'SELECT seq FROM messages WHERE node = ? AND epoch = ? AND seq BETWEEN ? AND ?',
        )
        .pluck(),
      existingList: db
        .prepare<[string, string, string], number>(
          'SELECT seq FROM messages WHERE node = ? AND epoch = ? AND seq IN (SELECT value FROM json_each(?))',
        )
        .pluck(),
      heldBelow: db.prepare<
        [number],
        { arrival: number; ts: number; node: string; seq: number; epoch: string }
      >(
        `SELECT arrival, ts, node, seq, epoch FROM messages WHERE position IS NULL AND ts < ?
         ORDER BY ts, node, seq, epoch`,
      ),
      placeHeld: db.prepare<[string]>(
        `UPDATE messages SET position = p.value ->> 1
         FROM json_each(?) AS p WHERE messages.arrival = p.value ->> 0`,
      ),
      setAll: db.prepare<[number | null, number, number]>(
        'UPDATE broker_meta SET watermark = ?, next_position = ?, next_arrival = ? WHERE id = 1',
      ),
      upsertNode: db.prepare(
        `INSERT INTO nodes (node, epoch, direct, first_seen, last_contact, last_sync, clock_skew, last_clock,
           backlog_pending, backlog_bytes, backlog_oldest_ts, low_mark, stats, received, duplicates, late, batches)
         VALUES (@node, @epoch, @direct, @now, @now, @lastSync, @skew, @clock, @pending, @bytes, @oldest, @lowMark,
           @stats, @received, @duplicates, @late, @batches)
         ON CONFLICT (node) DO UPDATE SET
           epoch = excluded.epoch, direct = excluded.direct, last_contact = excluded.last_contact,
           last_sync = COALESCE(excluded.last_sync, nodes.last_sync), clock_skew = excluded.clock_skew,
           last_clock = excluded.last_clock, backlog_pending = excluded.backlog_pending,
           backlog_bytes = excluded.backlog_bytes, backlog_oldest_ts = excluded.backlog_oldest_ts,
           low_mark = excluded.low_mark, stats = COALESCE(excluded.stats, nodes.stats),
           received = nodes.received + excluded.received, duplicates = nodes.duplicates + excluded.duplicates,
           late = nodes.late + excluded.late, batches = nodes.batches + excluded.batches`,
      ),
      liveLowMark: db.prepare<[number], { lm: number | null; n: number }>(
        'SELECT MIN(low_mark) AS lm, COUNT(*) AS n FROM nodes WHERE direct = 0 AND last_contact >= ?',
      ),
      maxHeldTs: db.prepare<[], { m: number | null }>(
        'SELECT MAX(ts) AS m FROM messages WHERE position IS NULL',
      ),
      releaseUpTo: db.prepare<[number, number]>(
        `UPDATE messages SET position = r.p
         FROM (SELECT arrival, ? + ROW_NUMBER() OVER (ORDER BY ts, node, seq, epoch) - 1 AS p
               FROM messages WHERE position IS NULL AND ts < ?) AS r
         WHERE messages.arrival = r.arrival`,
      ),
      readEvent: db.prepare<[number, number], MessageRow>(
        'SELECT * FROM messages WHERE position > ? ORDER BY position LIMIT ?',
      ),
      readArrival: db.prepare<[number, number], MessageRow>(
        'SELECT * FROM messages WHERE arrival > ? ORDER BY arrival LIMIT ?',
      ),
      counts: db.prepare<[], { held: number; total: number }>(
        'SELECT COUNT(position) AS released, COUNT(*) AS total, COUNT(*) - COUNT(position) AS held FROM messages',
      ),
      nodes: db.prepare<[], NodeRow>('SELECT * FROM nodes ORDER BY node'),
      node: db.prepare<[string], NodeRow>('SELECT * FROM nodes WHERE node = ?'),
      putToken: db.prepare<[string, string, number]>(
        `INSERT INTO tokens (node, hash, created_at, last_used_at) VALUES (?, ?, ?, NULL)
         ON CONFLICT (node) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at,
           last_used_at = NULL`,
      ),
      findToken: db.prepare<[string], { node: string; created_at: number; last_used_at: number | null }>(
        'SELECT node, created_at, last_used_at FROM tokens WHERE hash = ?',
      ),
      touchToken: db.prepare<[number, string]>('UPDATE tokens SET last_used_at = ? WHERE node = ?'),
      listTokens: db.prepare<[], { node: string; created_at: number; last_used_at: number | null }>(
        'SELECT node, created_at, last_used_at FROM tokens ORDER BY node',
      ),
      revokeToken: db.prepare<[string]>('DELETE FROM tokens WHERE node = ?'),
      group: db.prepare<[string, string], { position: number }>(
        'SELECT position FROM consumer_groups WHERE name = ? AND ord = ?',
      ),
      commitGroup: db.prepare<[string, string, number, number]>(
        `INSERT INTO consumer_groups (name, ord, position, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (name, ord) DO UPDATE SET
           position = CASE WHEN excluded.position > consumer_groups.position
                           THEN excluded.position ELSE consumer_groups.position END,
           updated_at = excluded.updated_at`,
      ),
      listGroups: db.prepare<[], { name: string; ord: ReadOrder; position: number; updated_at: number }>(
        'SELECT name, ord, position, updated_at FROM consumer_groups ORDER BY name, ord',
      ),
      listAlerts: db.prepare<[number], AlertRow>('SELECT * FROM alerts ORDER BY id DESC LIMIT ?'),
      listAlertsIn: db.prepare<[string, number], AlertRow>(
        'SELECT * FROM alerts WHERE state = ? ORDER BY id DESC LIMIT ?',
      ),
      latestAlerts: db.prepare<[], AlertRow>(
        'SELECT * FROM alerts WHERE id IN (SELECT MAX(id) FROM alerts GROUP BY key) ORDER BY id',
      ),
      fireAlert: db.prepare<
        [string, string, string, string, string, number, number, number, number],
        AlertRow
      >(
        `INSERT INTO alerts (key, rule, node, state, severity, message, value, threshold, fired_at, updated_at,
           resolved_at)
         VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, NULL)
         ON CONFLICT (key) WHERE state = 'active' DO NOTHING
         RETURNING *`,
      ),
      updateAlert: db.prepare<[number, string, number, string]>(
        `UPDATE alerts SET value = ?, message = ?, updated_at = ? WHERE key = ? AND state = 'active'`,
      ),
      resolveAlert: db.prepare<[number, number, string], AlertRow>(
        `UPDATE alerts SET state = 'resolved', resolved_at = ?, updated_at = ? WHERE key = ? AND state = 'active'
         RETURNING *`,
      ),
      purge: db.prepare<[number, number]>(
        `DELETE FROM messages WHERE arrival IN (
           SELECT arrival FROM messages WHERE position IS NOT NULL AND received_at < ? ORDER BY arrival LIMIT ?)`,
      ),
    }
  }

  /**
   * Group commit: batches that arrive while a commit is in progress wait for
   * the next one and share its fsync. Each still gets its own SAVEPOINT, its
   * own result, and its answer only after the shared commit. Messages of one
   * group count as arriving together: late means below W before the group.
   */
  private groupSync(jobs: IngestJob[]): void {
    const before = this.stmts.meta.get()!.watermark
    let ctx = jobs[0].ctx
    for (const job of jobs) {
      try {
        job.result = { ...this.insertTx(job.batch, job.ctx, before), watermark: null }
      } catch (err) {
        // A full disk or I/O error can abort the whole transaction: then nothing of the group commits.
        if (!this.db.inTransaction || mapError(err) instanceof StoreUnavailableError) throw err
        job.error = err
      }
      if (job.ctx.now > ctx.now) ctx = job.ctx
    }
    const { watermark } = this.releaseSync(ctx)
    for (const job of jobs) if (job.result) job.result.watermark = watermark
  }

  /**
   * The group on the fast path: the same results as groupSync, but a message
   * released by this group's own watermark is written once, with its
   * position, instead of inserted held and updated by releaseSync. Held
   * messages released now get their positions in the same (ts, node, seq,
   * epoch) order. Anything unexpected throws SlowPath (the transaction rolls
   * back and groupSync runs instead).
   */
  private fastGroupSync(jobs: IngestJob[]): void {
    const s = this.stmts
    const meta = s.meta.get()!
    const before = meta.watermark
    let ctx = jobs[0].ctx
    const fresh: Fresh[] = []
    const taken = new Map<string, Set<number>>()
    for (const job of jobs) {
      if (job.ctx.now > ctx.now) ctx = job.ctx
      // Two batches of one group carrying the same message: the general path counts the second as a duplicate.
      const key = `${job.batch.node}\u0000${job.batch.epoch}`
      const seen = taken.get(key)
      if (seen && job.batch.messages.some((m) => seen.has(m.seq))) throw new SlowPath()
      try {
        const accepted = this.nodeTx(job, before)
        for (const f of accepted) fresh.push(f)
        const set = seen ?? new Set<number>()
        for (const f of accepted) set.add(f.seq)
        taken.set(key, set)
      } catch (err) {
        if (!this.db.inTransaction || mapError(err) instanceof StoreUnavailableError) throw err
        job.error = err
      }
    }

    // The watermark after this group, as releaseSync computes it after the inserts.
    const live = s.liveLowMark.get(ctx.now - ctx.maxLateness)!
    let candidate: number | null
    if (live.n > 0) candidate = live.lm
    else {
      let held = s.maxHeldTs.get()!.m
      for (const f of fresh) if (held === null || f.ts > held) held = f.ts
      candidate = held === null ? null : held + 1
    }
    let watermark = before
    if (candidate !== null && (watermark === null || candidate > watermark)) watermark = candidate

    // Release: held rows and this group's messages below the watermark, merged in event order.
    let position = meta.next_position
    if (watermark !== null) {
      const w = watermark
      const held = s.heldBelow.all(w)
      const now = fresh.filter((f) => f.ts < w).sort(compareEvent)
      const placed: Array<[number, number]> = []
      let i = 0
      let j = 0
      while (i < held.length || j < now.length) {
        if (j >= now.length || (i < held.length && compareEvent(held[i], now[j]) < 0))
          placed.push([held[i++].arrival, position++])
        else now[j++].position = position++
      }
      if (placed.length > 0 && s.placeHeld.run(JSON.stringify(placed)).changes !== placed.length)
        throw new SlowPath()
    }

    // Insert in arrival order, INSERT_ROWS rows per statement.
    let arrival = meta.next_arrival
    const params = new Array<unknown>(INSERT_ROWS * INSERT_COLUMNS)
    let inserted = 0
    for (let i = 0; i < fresh.length;) {
      const rows = fresh.length - i >= INSERT_ROWS ? INSERT_ROWS : 1
      const args = rows === 1 ? new Array<unknown>(INSERT_COLUMNS) : params
      for (let k = 0; k < rows; k++) {
        const f = fresh[i + k]
        const o = k * INSERT_COLUMNS
        args[o] = arrival++
        args[o + 1] = f.node
        args[o + 2] = f.epoch
        args[o + 3] = f.m.seq
        args[o + 4] = f.m.topic
        args[o + 5] = f.m.ts
        args[o + 6] = f.m.payload
        args[o + 7] = f.m.enc
        args[o + 8] = f.m.contentType ?? null
        args[o + 9] = f.m.priority ?? 4
        args[o + 10] = f.m.expiresAt ?? null
        args[o + 11] = f.m.headers === null || f.m.headers === undefined ? null : JSON.stringify(f.m.headers)
        args[o + 12] = f.receivedAt
        args[o + 13] = f.position
        args[o + 14] = f.late
      }
      try {
        inserted += (rows === 1 ? s.insertOne : s.insertMany).run(args).changes
      } catch (err) {
        // A full disk or I/O error fails the group as on the general path; a bad row goes there to spoil only its batch.
        if (mapError(err) instanceof StoreUnavailableError) throw err
        throw new SlowPath()
      }
      i += rows
    }
    if (inserted !== fresh.length) throw new SlowPath()
    if (arrival !== meta.next_arrival || position !== meta.next_position || watermark !== before)
      s.setAll.run(watermark, position, arrival)
    for (const job of jobs) if (job.result) job.result.watermark = watermark
  }

  /**
   * One batch on the fast path (in its own SAVEPOINT): which messages are new
   * (not stored before, not repeated in the batch), and the node's record.
   */
  private acceptSync(job: IngestJob, before: number | null): Fresh[] {
    const { batch, ctx } = job
    const msgs = batch.messages
    const out: Fresh[] = []
    let late = 0
    if (msgs.length > 0) {
      let min = Infinity
      let max = -Infinity
      for (const m of msgs) {
        if (m.seq < min) min = m.seq
        if (m.seq > max) max = m.seq
      }
      // A dense run of seqs (a sync batch) is one index range; scattered ones are looked up one by one.
      const existing =
        max - min < 4 * msgs.length
          ? this.stmts.existingRange.all(batch.node, batch.epoch, min, max)
          : this.stmts.existingList.all(batch.node, batch.epoch, JSON.stringify(msgs.map((m) => m.seq)))
      const skip = new Set(existing)
      for (const m of msgs) {
        if (skip.has(m.seq)) continue
        skip.add(m.seq)
        const isLate = before !== null && m.ts < before ? 1 : 0
        late += isLate
        out.push({
          ts: m.ts,
          node: batch.node,
          seq: m.seq,
          epoch: batch.epoch,
          m,
          receivedAt: ctx.now,
          late: isLate,
          position: null,
        })
      }
    }
    const duplicates = msgs.length - out.length
    this.upsertNodeRow(batch, ctx, out.length, duplicates, late)
    job.result = { accepted: out.length, duplicates, late, watermark: null }
    return out
  }

  private flush(): void {
    this.flushScheduled = false
    const jobs = this.queue.splice(0, MAX_GROUP)
    if (this.queue.length > 0) this.scheduleFlush()
    if (jobs.length === 0) return
    if (this.closed) {
      for (const job of jobs) job.reject(new StoreUnavailableError('the broker store is closed'))
      return
    }
    try {
      try {
        if (!this.fastIngest) throw new SlowPath()
        this.fastGroupTx.immediate(jobs)
      } catch (err) {
        if (!(err instanceof SlowPath)) throw err
        // Rolled back: nothing of the fast attempt stays. The general path isolates each batch.
        for (const job of jobs) job.result = job.error = undefined
        this.groupTx.immediate(jobs)
      }
    } catch (err) {
      for (const job of jobs) job.reject(mapError(err))
      return
    }
    for (const job of jobs)
      if (job.result) job.resolve(job.result)
      else job.reject(mapError(job.error))
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => this.flush())
  }

  private insertSync(
    batch: BatchBody,
    ctx: IngestContext,
    before: number | null,
  ): Omit<BatchAck, 'watermark'> {
    const s = this.stmts
    const meta = s.meta.get()!
    let arrival = meta.next_arrival
    let accepted = 0
    let late = 0
    const headersOf = (h: Record<string, string> | null | undefined) =>
      h === null || h === undefined ? null : JSON.stringify(h)
    for (const m of batch.messages) {
      const isLate = before !== null && m.ts < before ? 1 : 0
      const res = s.insert.run(
        arrival,
        batch.node,
        batch.epoch,
        m.seq,
        m.topic,
        m.ts,
        m.payload,
        m.enc,
        m.contentType ?? null,
        m.priority ?? 4,
        m.expiresAt ?? null,
        headersOf(m.headers),
        ctx.now,
        isLate,
      )
      if (res.changes === 1) {
        arrival++
        accepted++
        late += isLate
      }
    }
    if (arrival !== meta.next_arrival) s.setArrival.run(arrival)
    const duplicates = batch.messages.length - accepted
    this.upsertNodeRow(batch, ctx, accepted, duplicates, late)
    return { accepted, duplicates, late }
  }

  private upsertNodeRow(
    batch: BatchBody,
    ctx: IngestContext,
    received: number,
    duplicates: number,
    late: number,
  ): void {
    this.stmts.upsertNode.run({
      node: batch.node,
      epoch: batch.epoch,
      direct: batch.direct ? 1 : 0,
      now: ctx.now,
      lastSync: batch.messages.length > 0 ? ctx.now : null,
      skew: Math.round(batch.clock - ctx.now),
      clock: batch.clock,
      pending: batch.backlog.pending,
      bytes: batch.backlog.bytes,
      oldest: batch.backlog.oldestTs ?? null,
      lowMark: lowMarkOf(batch),
      stats: batch.stats === undefined ? null : JSON.stringify(batch.stats),
      received,
      duplicates,
      late,
      batches: 1,
    })
  }

  private releaseSync(ctx: IngestContext): ReleaseResult {
    const s = this.stmts
    const meta = s.meta.get()!
    const live = s.liveLowMark.get(ctx.now - ctx.maxLateness)!
    let candidate: number | null
    if (live.n > 0) candidate = live.lm
    else {
      // No live edge node holds anything back: release everything held.
      const held = s.maxHeldTs.get()!.m
      candidate = held === null ? null : held + 1
    }
    let watermark = meta.watermark
    if (candidate !== null && (watermark === null || candidate > watermark)) watermark = candidate
    let released = 0
    if (watermark !== null) released = s.releaseUpTo.run(meta.next_position, watermark).changes
    if (released > 0 || watermark !== meta.watermark)
      s.setRelease.run(watermark, meta.next_position + released)
    return { released, watermark }
  }

  private run<T>(fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('the broker store is closed'))
    try {
      return Promise.resolve(fn())
    } catch (err) {
      return Promise.reject(mapError(err))
    }
  }

  ingest(batch: BatchBody, ctx: IngestContext): Promise<BatchAck> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('the broker store is closed'))
    return new Promise((resolve, reject) => {
      this.queue.push({ batch, ctx, resolve, reject })
      this.scheduleFlush()
    })
  }

  release(ctx: IngestContext): Promise<ReleaseResult> {
    return this.run(() => this.releaseTx.immediate(ctx))
  }

  read(q: ReadQuery): Promise<ReadResult> {
    return this.run(() => {
      const stmt = q.order === 'event' ? this.stmts.readEvent : this.stmts.readArrival
      const key = (r: MessageRow) => (q.order === 'event' ? r.position! : r.arrival)
      const match = topicMatcher(q.topic)
      const all = q.topic === undefined || q.topic === '#'
      if (all) {
        const rows = stmt.all(q.after, q.limit)
        return { messages: rows.map(toMessage), next: rows.length ? key(rows[rows.length - 1]) : q.after }
      }
      const out: StoredMessage[] = []
      let next = q.after
      let scanned = 0
      while (out.length < q.limit && scanned < SCAN_MAX_ROWS) {
        const rows = stmt.all(next, SCAN_CHUNK)
        scanned += rows.length
        for (const r of rows) {
          next = key(r)
          if (match(r.topic)) {
            out.push(toMessage(r))
            if (out.length >= q.limit) break
          }
        }
        if (rows.length < SCAN_CHUNK) break
      }
      return { messages: out, next }
    })
  }

  heads(): Promise<StreamHeads> {
    return this.run(() => {
      const meta = this.stmts.meta.get()!
      const c = this.stmts.counts.get()!
      return {
        event: meta.next_position - 1,
        arrival: meta.next_arrival - 1,
        watermark: meta.watermark,
        held: c.held,
        total: c.total,
      }
    })
  }

  nodes(): Promise<NodeRecord[]> {
    return this.run(() => this.stmts.nodes.all().map(toNode))
  }

  node(id: string): Promise<NodeRecord | undefined> {
    return this.run(() => {
      const r = this.stmts.node.get(id)
      return r ? toNode(r) : undefined
    })
  }

  putToken(node: string, tokenHash: string, now: number): Promise<void> {
    return this.run(() => {
      this.stmts.putToken.run(node, tokenHash, now)
    })
  }

  findToken(tokenHash: string): Promise<TokenRecord | undefined> {
    return this.run(() => {
      const r = this.stmts.findToken.get(tokenHash)
      return r ? { node: r.node, createdAt: r.created_at, lastUsedAt: r.last_used_at } : undefined
    })
  }

  touchToken(node: string, now: number): Promise<void> {
    return this.run(() => {
      this.stmts.touchToken.run(now, node)
    })
  }

  listTokens(): Promise<TokenRecord[]> {
    return this.run(() =>
      this.stmts.listTokens
        .all()
        .map((r) => ({ node: r.node, createdAt: r.created_at, lastUsedAt: r.last_used_at })),
    )
  }

  revokeToken(node: string): Promise<boolean> {
    return this.run(() => this.stmts.revokeToken.run(node).changes > 0)
  }

  groupPosition(name: string, order: ReadOrder): Promise<number | undefined> {
    return this.run(() => this.stmts.group.get(name, order)?.position)
  }

  commitGroup(name: string, order: ReadOrder, position: number, now: number): Promise<number> {
    return this.run(() =>
      this.db
        .transaction(() => {
          this.stmts.commitGroup.run(name, order, position, now)
          return this.stmts.group.get(name, order)!.position
        })
        .immediate(),
    )
  }

  listGroups(): Promise<GroupRecord[]> {
    return this.run(() =>
      this.stmts.listGroups
        .all()
        .map((r) => ({ name: r.name, order: r.ord, position: r.position, updatedAt: r.updated_at })),
    )
  }

  purge(options: { receivedBefore: number; limit: number }): Promise<number> {
    return this.run(() => this.stmts.purge.run(options.receivedBefore, options.limit).changes)
  }

  listAlerts(q: AlertQuery): Promise<AlertRecord[]> {
    return this.run(() =>
      (q.state ? this.stmts.listAlertsIn.all(q.state, q.limit) : this.stmts.listAlerts.all(q.limit)).map(
        toAlert,
      ),
    )
  }

  latestAlerts(): Promise<AlertRecord[]> {
    return this.run(() => this.stmts.latestAlerts.all().map(toAlert))
  }

  fireAlert(a: NewAlert, now: number): Promise<AlertRecord | undefined> {
    return this.run(() => {
      const r = this.stmts.fireAlert.get(
        alertKey(a.rule, a.node),
        a.rule,
        a.node,
        a.severity,
        a.message,
        Math.round(a.value),
        Math.round(a.threshold),
        now,
        now,
      )
      return r ? toAlert(r) : undefined
    })
  }

  updateAlert(key: string, patch: { value: number; message: string }, now: number): Promise<boolean> {
    return this.run(
      () => this.stmts.updateAlert.run(Math.round(patch.value), patch.message, now, key).changes > 0,
    )
  }

  resolveAlert(key: string, now: number): Promise<AlertRecord | undefined> {
    return this.run(() => {
      const r = this.stmts.resolveAlert.get(now, now, key)
      return r ? toAlert(r) : undefined
    })
  }

  async close(): Promise<void> {
    if (this.closed) return
    // Batches already queued still get their commit (and their answer).
    while (this.queue.length > 0) this.flush()
    this.closed = true
    this.db.close()
  }
}

function insertSql(rows: number): string {
  return (
    `INSERT INTO messages (arrival, node, epoch, seq, topic, ts, payload, enc, content_type, priority,
       expires_at, headers, received_at, position, late) VALUES ` +
    Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ') +
    ' ON CONFLICT (node, epoch, seq) DO NOTHING'
  )
}

export const SQLITE_FILE = 'broker.db'

export async function openSqliteBrokerStore(options: BrokerStoreOptions): Promise<SqliteBrokerStore> {
  const { default: Database } = await import('better-sqlite3')
  fs.mkdirSync(options.dataDir, { recursive: true })
  const file = path.join(options.dataDir, SQLITE_FILE)
  let db: BetterSqlite3.Database
  try {
    db = new Database(file)
  } catch (err) {
    throw new StoreUnavailableError(`cannot open the broker store ${file}: ${(err as Error).message}`, {
      cause: err,
    })
  }
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  db.pragma('busy_timeout = 5000')
  db.pragma('foreign_keys = ON')
  db.transaction(() => {
    db.exec(SCHEMA)
    const table = db
      .prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'")
      .pluck()
    if (!/position INTEGER UNIQUE/.test(table.get() as string)) db.exec(POSITION_INDEX)
  }).immediate()
  return new SqliteBrokerStore(db)
}

export default openSqliteBrokerStore
