/**
 * The default outbox: one SQLite file (better-sqlite3), WAL, synchronous=FULL
 * unless storage.durability=normal, every write in a BEGIN IMMEDIATE
 * transaction. Running totals live in the `queue_totals` row and are updated in the
 * same transactions, so stats() and limit checks never scan the table.
 * Schema and design notes: docs/storage.md.
 */
import { isUtf8 } from 'node:buffer'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import type BetterSqlite3 from 'better-sqlite3'
import { ConfigError, StorageError, isRmqError } from '../../core/errors.js'
import { failpointValue } from '../../core/failpoints.js'
import { toFrame, toWireMessage } from '../../core/protocol.js'
import { sortedRuns } from '../../core/storage/seq-runs.js'
import { accountedSize } from '../../core/storage/size.js'
import { asBuffer, diskFullError, limitError, type Fullness } from './common.js'
import type {
  AppendResult,
  BatchQuery,
  NewMessage,
  PendingRun,
  PurgeQuery,
  PurgeResult,
  RunQuery,
  SentExtras,
  StorageCapabilities,
  StorageDriver,
  StorageOptions,
  StorageStats,
  StoredMessage,
  WireFrames,
  WireJson,
} from '../../core/storage/driver.js'

// require() skips the CommonJS export scan that `import` does: a few ms of every `rmq publish`.
const require = createRequire(import.meta.url)
const Database = require('better-sqlite3') as typeof BetterSqlite3
/**
 * better-sqlite3's addon, found here so that better-sqlite3 need not search for it with `bindings`,
 * which guesses the package from its caller's file and so cannot find it from the publish fast-path
 * bundle (scripts/build-fast-path.js bundles better-sqlite3's JavaScript). Usually the path of the
 * usual build; else `bindings` searches better-sqlite3's own folder (a debug build, say).
 */
let nativeBinding: string | object | undefined
function nativeAddon(): string | object | undefined {
  if (nativeBinding === undefined) {
    try {
      const root = path.dirname(require.resolve('better-sqlite3/package.json'))
      const usual = path.join(root, 'build/Release/better_sqlite3.node')
      nativeBinding = fs.existsSync(usual)
        ? usual
        : (createRequire(path.join(root, 'package.json'))('bindings') as (o: object) => object)({
            bindings: 'better_sqlite3.node',
            module_root: root,
          })
    } catch {
      nativeBinding = ''
    }
  }
  return nativeBinding || undefined
}
type Database = BetterSqlite3.Database
type Statement = BetterSqlite3.Statement

const SMALL_TABLES = `
   CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
   CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE queue_totals (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     pending INTEGER NOT NULL, pending_bytes INTEGER NOT NULL,
     sent INTEGER NOT NULL, sent_bytes INTEGER NOT NULL,
     appended_total INTEGER NOT NULL, sent_total INTEGER NOT NULL,
     expired_total INTEGER NOT NULL, dropped_total INTEGER NOT NULL
   );
   INSERT INTO queue_totals VALUES (1, 0, 0, 0, 0, 0, 0, 0, 0);`

/**
 * The queue state, apart from the immutable messages (schema 2): `pending`
 * holds one narrow row per pending message (deleted when it is sent), `sent`
 * one row per run of consecutive seqs marked sent together. Sending a batch
 * so rewrites a few narrow pages instead of every message row.
 */
const QUEUE_TABLES = `
   CREATE TABLE pending (
     priority INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     ts INTEGER NOT NULL,
     expires_at INTEGER,
     size INTEGER NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (priority, seq)
   ) WITHOUT ROWID;
   CREATE INDEX pending_ts ON pending (ts);
   CREATE TABLE sent (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, sent_at INTEGER NOT NULL);
   CREATE INDEX sent_at ON sent (sent_at);`

/** A new file gets the current schema at once. */
const CREATE_SCHEMA = `CREATE TABLE messages (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     topic TEXT NOT NULL,
     payload BLOB NOT NULL,
     content_type TEXT,
     ts INTEGER NOT NULL,
     arrived_at INTEGER NOT NULL,
     expires_at INTEGER,
     priority INTEGER NOT NULL,
     headers TEXT,
     size INTEGER NOT NULL
   );
   CREATE INDEX messages_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
   ${QUEUE_TABLES}
   ${SMALL_TABLES}`

/**
 * Each entry moves an existing file from version i+1 to i+2 (PRAGMA
 * user_version); version 1 files were created with the schema of 1.
 */
const MIGRATIONS: string[] = [
  // 1 -> 2: queue state out of `messages`. Each pending row gets its `pending`
  // row; sent rows become runs of consecutive seqs with one sent_at (gaps and
  // islands). The old status/sent_at/attempts columns stay, unused, so the
  // migration does not rewrite every message.
  `${QUEUE_TABLES}
   INSERT INTO pending (priority, seq, ts, expires_at, size, attempts)
     SELECT priority, seq, ts, expires_at, size, attempts FROM messages WHERE status = 0;
   INSERT INTO sent (first, last, sent_at)
     SELECT min(seq), max(seq), sent_at FROM (
       SELECT seq, coalesce(sent_at, 0) AS sent_at,
         seq - row_number() OVER (PARTITION BY coalesce(sent_at, 0) ORDER BY seq) AS island
       FROM messages WHERE status = 1)
     GROUP BY sent_at, island;
   DROP INDEX messages_pending;
   DROP INDEX messages_pending_ts;
   DROP INDEX messages_sent;
   -- Every write of schema 1 code updates \`totals\`: a process of an older rmq that had the file
   -- open fails loudly (no such table) instead of appending messages that would never be queued.
   ALTER TABLE totals RENAME TO queue_totals;`,
]

export const SCHEMA_VERSION = MIGRATIONS.length + 1

interface Totals {
  pending: number
  pending_bytes: number
  sent: number
  sent_bytes: number
  appended_total: number
  sent_total: number
  expired_total: number
  dropped_total: number
}

interface Row {
  seq: number
  topic: string
  payload: Buffer
  content_type: string | null
  ts: number
  arrived_at: number
  expires_at: number | null
  priority: number
  headers: string | null
  /** From `pending`: rows read as StoredMessage are pending ones. */
  attempts: number
  size: number
}

/** The columns of a pending message as StoredMessage needs them (`m` messages, `p` pending). */
const ROW_COLUMNS =
  'm.seq, m.topic, m.payload, m.content_type, m.ts, m.arrived_at, m.expires_at, m.priority, m.headers, p.attempts, m.size'
/** ROW_COLUMNS from `messages m` alone (a message read to forward it, not as a queue entry). */
const MESSAGE_COLUMNS = ROW_COLUMNS.replace('p.attempts', '0 AS attempts')
/** `priority = ?` for every priority: the pending primary key is (priority, seq), sync knows only seqs. */
const ANY_PRIORITY = 'priority IN (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)'

interface Deleted {
  sent: number
  sentBytes: number
  pending: number
  pendingBytes: number
}

const INSERT_COLUMNS = 9
const INSERT_ROWS = 16
/** Rows per INSERT for runs of messages that differ only in payload and ts (see bulkInsertStatement). */
const BULK_ROWS = 100
const BULK_CONSTANTS = 7

/** Same topic, content type, expiry, priority and headers: only payload and ts differ. */
function sameShape(a: NewMessage, b: NewMessage, aHeaders: string | null, bHeaders: string | null): boolean {
  return (
    a.topic === b.topic &&
    (a.contentType ?? null) === (b.contentType ?? null) &&
    (a.expiresAt ?? null) === (b.expiresAt ?? null) &&
    (a.priority ?? 4) === (b.priority ?? 4) &&
    aHeaders === bHeaders
  )
}

/** Rows deleted per statement while making room or purging. */
const DELETE_CHUNK = 1000
const PRIORITIES_DESC = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
/** markSent: up to this many runs of consecutive seqs get one range DELETE each; more go as one json_each list. */
const MAX_RANGES = 8
/** Sent ranges read per statement while purging. */
const RANGE_CHUNK = 100

/**
 * A message's wire form, built by SQLite (json_object), in the key order of
 * toWireMessage. The payload is read as text; wireJson checks the result is
 * valid UTF-8 and builds rows whose payload is not in JS instead (base64).
 */
const WIRE_FIELDS =
  "'seq', seq, 'topic', topic, 'ts', ts, 'payload', CAST(payload AS TEXT), 'enc', 'utf8', " +
  "'expiresAt', expires_at, 'priority', priority, 'contentType', content_type"
const WIRE_JSON = `CASE WHEN headers IS NULL THEN json_object(${WIRE_FIELDS})
  ELSE json_object(${WIRE_FIELDS}, 'headers', json(headers)) END`
/**
 * The wire form of a run of consecutive seqs as one UTF-8 blob, in seq order.
 * Ascending: the aggregate takes the rows in the order of the rowid range
 * scan, the only plan for it (unless the test-only PRAGMA
 * reverse_unordered_selects is set), about a third cheaper than through an
 * ordered subquery. Descending: the subquery's ORDER BY holds, as SQLite
 * never flattens an ordered subquery into an aggregate (flattening rule 16).
 */
const wireRunSql = (dir: 'ASC' | 'DESC') =>
  `SELECT CAST(group_concat(${WIRE_JSON}, ',') AS BLOB) AS json, count(*) AS n FROM ` +
  (dir === 'ASC'
    ? 'messages WHERE seq BETWEEN ? AND ?'
    : '(SELECT * FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq DESC)')

const FRAME_FIELDS = WIRE_FIELDS.replace(
  "'payload', CAST(payload AS TEXT)",
  "'size', length(CAST(payload AS BLOB))",
)
const FRAME_JSON = `CASE WHEN headers IS NULL THEN json_object(${FRAME_FIELDS})
  ELSE json_object(${FRAME_FIELDS}, 'headers', json(headers)) END`
/** wireRunSql's frames: the payloads are concatenated as they are stored. */
const frameRunSql = (dir: 'ASC' | 'DESC') =>
  `SELECT CAST(group_concat(${FRAME_JSON}, ',') AS BLOB) AS json, ` +
  `CAST(group_concat(payload, '') AS BLOB) AS payloads, count(*) AS n FROM ` +
  (dir === 'ASC'
    ? 'messages WHERE seq BETWEEN ? AND ?'
    : '(SELECT * FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq DESC)')

/** Runs of consecutive seqs in the order given: ascending runs [first, last], descending ones [last, first]. */
function runsInOrder(seqs: number[]): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (let i = 0; i < seqs.length;) {
    let j = i
    const step = seqs[i + 1] - seqs[i]
    if (step === 1 || step === -1) while (j + 1 < seqs.length && seqs[j + 1] - seqs[j] === step) j++
    out.push([seqs[i], seqs[j]])
    i = j + 1
  }
  return out
}

function sqliteCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined
}

/** Less than 1 MiB free where the outbox lives: an I/O error there is most likely the disk being full. */
function lowOnSpace(file: string): boolean {
  try {
    const s = fs.statfsSync(path.dirname(file))
    return s.bavail * s.bsize < 1024 * 1024
  } catch {
    return false
  }
}

export class SqliteStorage implements StorageDriver {
  readonly name = 'sqlite'
  readonly capabilities: StorageCapabilities = { durable: true, multiProcess: true }
  readonly epoch: string
  private readonly db: Database
  private readonly now: () => number
  private readonly stmts = new Map<string, Statement>()
  private maintaining = false

  constructor(private readonly opts: StorageOptions) {
    this.now = opts.now ?? Date.now
    try {
      this.db = new Database(opts.path, {
        timeout: 5000,
        // better-sqlite3 takes the addon object too; its types list only a path.
        nativeBinding: nativeAddon() as string | undefined,
      })
    } catch (err) {
      throw new ConfigError(`cannot open the outbox at ${opts.path}: ${(err as Error).message}`, {
        suggestion: 'check storage.path: its directory must exist and be writable',
        cause: err,
      })
    }
    try {
      this.epoch = this.guard(() => this.migrate())
      // `RMQ_FAILPOINTS=sqlite.maxPageCount=64` caps the file (tests: disk full without a full disk).
      const maxPages = failpointValue('sqlite.maxPageCount')
      this.db.exec(
        `PRAGMA synchronous = ${opts.durability === 'normal' ? 'NORMAL' : 'FULL'}` +
          (maxPages ? `; PRAGMA max_page_count = ${Number(maxPages)}` : ''),
      )
    } catch (err) {
      this.db.close()
      throw err
    }
  }

  private migrate(): string {
    const db = this.db
    const userVersion = () => db.prepare('PRAGMA user_version').pluck().get() as number
    let version = userVersion()
    if (version > SCHEMA_VERSION) {
      throw new StorageError(
        `the outbox ${this.opts.path} has schema version ${version}, newer than this rmq understands (${SCHEMA_VERSION})`,
        { suggestion: 'upgrade rmq, or point storage.path at another file' },
      )
    }
    if (version === 0) {
      // Must precede the first table; a no-op on an existing file.
      db.exec('PRAGMA auto_vacuum = INCREMENTAL')
    }
    db.exec('PRAGMA journal_mode = WAL')
    if (version < SCHEMA_VERSION) {
      this.transaction(() => {
        // Another process may have migrated while we waited for the write lock.
        version = userVersion()
        if (version === 0) {
          db.exec(CREATE_SCHEMA)
          const ins = db.prepare('INSERT INTO state (key, value) VALUES (?, ?)')
          ins.run('epoch', (require('node:crypto') as typeof import('node:crypto')).randomUUID())
          ins.run('createdAt', String(this.now()))
        } else for (; version < SCHEMA_VERSION; version++) db.exec(MIGRATIONS[version - 1])
        db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`)
      })
    }
    const row = db.prepare("SELECT value FROM state WHERE key = 'epoch'").get() as
      { value: string } | undefined
    if (!row)
      throw new StorageError(`the outbox ${this.opts.path} has no epoch`, {
        suggestion: 'the file is damaged; move it away',
      })
    return row.value
  }

  private stmt(sql: string): Statement {
    let s = this.stmts.get(sql)
    if (!s) {
      s = this.db.prepare(sql)
      this.stmts.set(sql, s)
    }
    return s
  }

  private totals(): Totals {
    return this.stmt('SELECT * FROM queue_totals WHERE id = 1').get() as Totals
  }

  private fullness(t: Totals = this.totals()): Fullness {
    return {
      totalMessages: t.pending + t.sent,
      totalBytes: t.pending_bytes + t.sent_bytes,
      pending: t.pending,
    }
  }

  /** Map SQLite failures to errors that tell the user what happened and what to do. */
  private guard<T>(fn: () => T): T {
    try {
      return fn()
    } catch (err) {
      if (isRmqError(err)) throw err
      // better-sqlite3 reports extended result codes (SQLITE_IOERR_SHMSIZE, SQLITE_READONLY_DBMOVED, …).
      const code = sqliteCode(err)?.split('_').slice(0, 2).join('_')
      // A full disk often shows as an I/O error (the WAL index or the WAL cannot grow), not SQLITE_FULL.
      if (code === 'SQLITE_FULL' || (code === 'SQLITE_IOERR' && lowOnSpace(this.opts.path))) {
        let now: Fullness | undefined
        try {
          now = this.fullness()
        } catch {
          now = undefined
        }
        throw diskFullError(this.opts.path, now, err)
      }
      if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED')
        throw new StorageError(`the outbox ${this.opts.path} stayed locked by another process for 5s`, {
          suggestion: 'retry; if it persists, look for a hung rmq process holding the file',
          cause: err,
        })
      if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB')
        throw new StorageError(
          `the outbox ${this.opts.path} is not a valid rmq database: ${(err as Error).message}`,
          {
            suggestion: 'move the file away (keep it for recovery) and point storage.path at a new file',
            cause: err,
          },
        )
      if (code === 'SQLITE_READONLY' || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_IOERR')
        throw new StorageError(`cannot write the outbox ${this.opts.path}: ${(err as Error).message}`, {
          suggestion: 'check that the file and its directory are writable and the disk is healthy',
          cause: err,
        })
      throw err
    }
  }

  /** BEGIN IMMEDIATE ... COMMIT, rolled back on any error (cheaper to set up than db.transaction()). */
  private transaction<T>(fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE')
    try {
      const r = fn()
      this.db.exec('COMMIT')
      return r
    } catch (err) {
      if (this.db.inTransaction)
        try {
          this.db.exec('ROLLBACK')
        } catch {
          // SQLite already rolled back (e.g. after SQLITE_FULL); the error below says what happened.
        }
      throw err
    }
  }

  private write<T>(fn: () => T): T {
    return this.guard(() => this.transaction(fn))
  }

  /** Take deleted rows off the running totals; deleted pending rows also count in `counter`. */
  private adjustTotals(r: Deleted, counter: 'expired_total' | 'dropped_total' | null): void {
    if (r.sent + r.pending === 0) return
    this.stmt(
      `UPDATE queue_totals SET pending = pending - ?, pending_bytes = pending_bytes - ?, sent = sent - ?,
         sent_bytes = sent_bytes - ?${counter ? `, ${counter} = ${counter} + ?` : ''} WHERE id = 1`,
    ).run(r.pending, r.pendingBytes, r.sent, r.sentBytes, ...(counter ? [r.pending] : []))
  }

  /** Delete one message and, when it is pending, its queue row; true when it was pending. */
  private deleteMessage(seq: number, priority: number): boolean {
    this.stmt('DELETE FROM messages WHERE seq = ?').run(seq)
    return this.stmt('DELETE FROM pending WHERE priority = ? AND seq = ?').run(priority, seq).changes > 0
  }

  /** Delete rows chosen by `selectSql` (returning seq, size, priority) until `enough` says stop. */
  private deleteWhile(
    selectSql: string,
    params: unknown[],
    enough: (freedCount: number, freedBytes: number) => boolean,
  ): Deleted {
    const sel = this.stmt(selectSql)
    const out = { sent: 0, sentBytes: 0, pending: 0, pendingBytes: 0 }
    for (;;) {
      const rows = sel.all(...params, DELETE_CHUNK) as Array<{ seq: number; size: number; priority: number }>
      if (rows.length === 0) return out
      for (const r of rows) {
        if (enough(out.sent + out.pending, out.sentBytes + out.pendingBytes)) return out
        if (this.deleteMessage(r.seq, r.priority)) {
          out.pending++
          out.pendingBytes += r.size
        } else {
          out.sent++
          out.sentBytes += r.size
        }
      }
    }
  }

  /**
   * Delete sent messages range by range, oldest sentAt first (only ranges
   * sent before `before` when given), until `limit` rows or `enough`. A range
   * left without messages is deleted; a range emptied at its start begins at
   * its first message left.
   */
  private deleteSent(
    before: number | null,
    limit: number,
    enough?: (freedCount: number, freedBytes: number) => boolean,
  ): Deleted {
    const out = { sent: 0, sentBytes: 0, pending: 0, pendingBytes: 0 }
    const ranges = this.stmt(
      `SELECT first, last FROM sent ${before === null ? '' : 'WHERE sent_at < ?'} ORDER BY sent_at, first LIMIT ?`,
    ).raw()
    for (;;) {
      const chunk = ranges.all(...(before === null ? [] : [before]), RANGE_CHUNK) as Array<[number, number]>
      for (const [first, last] of chunk) {
        const budget = limit - out.sent
        if (budget <= 0 || enough?.(out.sent, out.sentBytes)) return out
        let through: number
        if (enough) {
          // Row by row: makeRoom stops as soon as there is room.
          through = first - 1
          const rows = this.stmt(
            'SELECT seq, size FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?',
          ).raw()
          for (const [seq, size] of rows.all(first, last, budget) as Array<[number, number]>) {
            if (enough(out.sent, out.sentBytes)) break
            this.stmt('DELETE FROM messages WHERE seq = ?').run(seq)
            out.sent++
            out.sentBytes += size
            through = seq
          }
        } else {
          // Set-based: the range's first `budget` messages with one DELETE.
          const r = this.stmt(
            `SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes, max(seq) AS through
             FROM (SELECT seq, size FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?)`,
          ).get(first, last, budget) as { n: number; bytes: number; through: number | null }
          through = r.through ?? last
          if (r.n > 0) this.stmt('DELETE FROM messages WHERE seq BETWEEN ? AND ?').run(first, through)
          out.sent += r.n
          out.sentBytes += r.bytes
        }
        const next = this.stmt('SELECT min(seq) FROM messages WHERE seq > ? AND seq <= ?')
          .pluck()
          .get(through, last) as number | null
        if (next === null) this.stmt('DELETE FROM sent WHERE first = ?').run(first)
        else if (next !== first) this.stmt('UPDATE sent SET first = ? WHERE first = ?').run(next, first)
      }
      if (chunk.length < RANGE_CHUNK) return out
    }
  }

  /**
   * Free room for `incoming` inside the current transaction: expired messages
   * first, then sent ones (already delivered), then under drop-oldest the
   * oldest pending ones. Returns how many pending messages were dropped.
   */
  private makeRoom(
    t: Totals,
    incoming: { messages: number; bytes: number },
    now: number,
    strict: boolean,
    cap = Infinity,
  ): number {
    const { maxBytes, maxMessages, overflow } = this.opts
    const needBytes = t.pending_bytes + t.sent_bytes + incoming.bytes - maxBytes
    const needCount = maxMessages > 0 ? t.pending + t.sent + incoming.messages - maxMessages : 0
    if (needBytes <= 0 && needCount <= 0) return 0
    if (strict && (incoming.bytes > maxBytes || (maxMessages > 0 && incoming.messages > maxMessages)))
      throw limitError(this.opts, this.fullness(t), incoming)
    let freedBytes = 0
    let freedCount = 0
    // `cap` bounds the rows one transaction deletes (enforceLimits loops; appends pass none).
    const enough = (c: number, b: number) =>
      (freedCount + c >= needCount && freedBytes + b >= needBytes) || freedCount + c >= cap
    const apply = (r: Deleted, counter: 'expired_total' | 'dropped_total' | null) => {
      freedBytes += r.sentBytes + r.pendingBytes
      freedCount += r.sent + r.pending
      this.adjustTotals(r, counter)
      return r.pending
    }
    apply(
      this.deleteWhile(
        'SELECT seq, size, priority FROM messages WHERE expires_at <= ? ORDER BY expires_at LIMIT ?',
        [now],
        enough,
      ),
      'expired_total',
    )
    if (enough(0, 0)) return 0
    apply(this.deleteSent(null, Number.MAX_SAFE_INTEGER, enough), null)
    if (enough(0, 0)) return 0
    if (overflow === 'drop-oldest') {
      const dropped = apply(
        // Sent and expired messages are gone by now: the scan starts at the oldest pending one.
        this.deleteWhile(
          `SELECT seq, size, priority FROM messages m
           WHERE EXISTS (SELECT 1 FROM pending p WHERE p.priority = m.priority AND p.seq = m.seq)
           ORDER BY seq LIMIT ?`,
          [],
          enough,
        ),
        'dropped_total',
      )
      if (enough(0, 0) || !strict) return dropped
    }
    if (!strict) return 0
    throw limitError(this.opts, this.fullness(this.totals()), incoming)
  }

  async append(messages: NewMessage[]): Promise<AppendResult> {
    const n = messages.length
    if (n === 0) return { seqs: [], dropped: 0 }
    const headers = new Array<string | null>(n)
    const sizes = new Array<number>(n)
    let bytes = 0
    const now = this.now()
    for (let i = 0; i < n; i++) {
      const m = messages[i]
      const h = m.headers ? JSON.stringify(m.headers) : null
      const size = accountedSize(m, h)
      headers[i] = h
      sizes[i] = size
      bytes += size
    }
    return this.write(() => {
      const dropped = this.makeRoom(this.totals(), { messages: n, bytes }, now, true)
      const seqs = new Array<number>(n)
      /** Insert `rows` rows from `i` with one statement; AUTOINCREMENT under the write lock numbers them consecutively. */
      const put = (stmt: Statement, args: unknown[], i: number, rows: number) => {
        const last = Number(stmt.run(args).lastInsertRowid)
        for (let k = 0; k < rows; k++) seqs[i + k] = last - rows + 1 + k
      }
      let i = 0
      while (i < n) {
        const m = messages[i]
        // A run of messages that differ only in payload and ts (every line of `publish --lines`):
        // BULK_ROWS at a time bind 2 values per row instead of 9, which is most of the per-row cost.
        let end = i + 1
        while (end < n && end - i < BULK_ROWS && sameShape(messages[end], m, headers[end], headers[i])) end++
        if (end - i === BULK_ROWS) {
          const args = new Array<unknown>(BULK_CONSTANTS + 2 * BULK_ROWS)
          args[0] = m.topic
          args[1] = m.contentType ?? null
          args[2] = now
          args[3] = m.expiresAt ?? null
          args[4] = m.priority ?? 4
          args[5] = headers[i]
          // accountedSize is the payload's length plus the same amount for every message of the run.
          args[6] = sizes[i] - m.payload.byteLength
          for (let k = 0, o = BULK_CONSTANTS; k < BULK_ROWS; k++, o += 2) {
            const r = messages[i + k]
            args[o] = asBuffer(r.payload)
            args[o + 1] = r.ts
          }
          put(this.bulkInsertStatement(), args, i, BULK_ROWS)
          i = end
          continue
        }
        // Anything else: up to INSERT_ROWS messages of any shape per statement, all columns bound.
        const rows = n - i >= INSERT_ROWS ? INSERT_ROWS : 1
        const args = new Array<unknown>(rows * INSERT_COLUMNS)
        for (let k = 0, o = 0; k < rows; k++, o += INSERT_COLUMNS) {
          const r = messages[i + k]
          args[o] = r.topic
          args[o + 1] = asBuffer(r.payload)
          args[o + 2] = r.contentType ?? null
          args[o + 3] = r.ts
          args[o + 4] = now
          args[o + 5] = r.expiresAt ?? null
          args[o + 6] = r.priority ?? 4
          args[o + 7] = headers[i + k]
          args[o + 8] = sizes[i + k]
        }
        put(this.insertStatement(rows), args, i, rows)
        i += rows
      }
      // Their queue rows, read back from the pages just written: one statement for the whole append.
      this.stmt(
        `INSERT INTO pending (priority, seq, ts, expires_at, size)
         SELECT priority, seq, ts, expires_at, size FROM messages WHERE seq BETWEEN ? AND ?`,
      ).run(seqs[0], seqs[n - 1])
      this.stmt(
        `UPDATE queue_totals SET pending = pending + ?, pending_bytes = pending_bytes + ?,
           appended_total = appended_total + ? WHERE id = 1`,
      ).run(n, bytes, n)
      return { seqs, dropped }
    })
  }

  private insertStatement(rows: number): Statement {
    return this.stmt(
      'INSERT INTO messages (topic, payload, content_type, ts, arrived_at, expires_at, priority, headers, size) VALUES ' +
        Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', '),
    )
  }

  /**
   * BULK_ROWS messages that share everything but payload and ts: the shared values are bound once
   * (BULK_CONSTANTS, the last one the size beyond the payload), then (payload, ts) per row. The rows
   * are inserted in the order of the VALUES list, like a multi-row INSERT ... VALUES (which SQLite
   * runs as the same INSERT ... SELECT over a VALUES list).
   */
  private bulkInsertStatement(): Statement {
    return this.stmt(
      'INSERT INTO messages (topic, payload, content_type, ts, arrived_at, expires_at, priority, headers, size) ' +
        'SELECT ?, column1, ?, column2, ?, ?, ?, ?, length(column1) + ? FROM (VALUES ' +
        Array.from({ length: BULK_ROWS }, () => '(?, ?)').join(', ') +
        ')',
    )
  }

  async nextBatch(q: BatchQuery): Promise<StoredMessage[]> {
    // Driven by the pending primary key (priority, seq); each message is one rowid lookup.
    const sql = `SELECT ${ROW_COLUMNS} FROM pending p CROSS JOIN messages m ON m.seq = p.seq
       WHERE p.priority = ? AND (p.expires_at IS NULL OR p.expires_at > ?)
       ORDER BY p.seq ${q.order === 'newest' ? 'DESC' : 'ASC'} LIMIT ?`
    const out: StoredMessage[] = []
    let bytes = 0
    return this.guard(() => {
      const sel = this.stmt(sql)
      for (const p of PRIORITIES_DESC) {
        if (out.length >= q.limit) break
        for (const r of sel.all(p, q.now, q.limit - out.length) as Row[]) {
          if (out.length > 0 && bytes + r.size > q.maxBytes) return out
          bytes += r.size
          out.push(toStored(r))
        }
      }
      return out
    })
  }

  /**
   * nextBatch's messages as runs of consecutive seqs, from the narrow pending
   * table alone. Per priority and side of the range taken, one aggregate
   * answers when the next rows are one run within the byte limit (a backlog
   * of one priority); only otherwise do rows come back one by one.
   */
  async pendingRuns(q: RunQuery): Promise<PendingRun[]> {
    const desc = q.order === 'newest'
    const dir = desc ? 'DESC' : 'ASC'
    const from = `FROM pending WHERE priority = ? AND seq BETWEEN ? AND ? AND (expires_at IS NULL OR expires_at > ?)
       ORDER BY seq ${dir} LIMIT ?`
    const out: PendingRun[] = []
    let n = 0
    let bytes = 0
    return this.guard(() => {
      const agg = this.stmt(
        `SELECT count(*), min(seq), max(seq), coalesce(sum(size), 0), min(ts) FROM (SELECT seq, size, ts ${from})`,
      ).raw()
      const rows = this.stmt(`SELECT seq, size, ts ${from}`).raw()
      for (const p of PRIORITIES_DESC) {
        const t = q.skip?.[p]
        // The seqs of this priority outside the range skipped, in send order.
        const sides: Array<[number, number]> = !t
          ? [[0, Number.MAX_SAFE_INTEGER]]
          : desc
            ? [
                [t[1] + 1, Number.MAX_SAFE_INTEGER],
                [0, t[0] - 1],
              ]
            : [
                [0, t[0] - 1],
                [t[1] + 1, Number.MAX_SAFE_INTEGER],
              ]
        for (const [a, b] of sides) {
          if (n >= q.limit) return out
          if (a > b) continue
          const [count, lo, hi, sum, minTs] = agg.get(p, a, b, q.now, q.limit - n) as [
            number,
            number,
            number,
            number,
            number,
          ]
          if (count === 0) continue
          if (hi - lo + 1 === count && (bytes + sum <= q.maxBytes || (n === 0 && count === 1))) {
            out.push({ priority: p, first: desc ? hi : lo, last: desc ? lo : hi, count, bytes: sum, minTs })
            n += count
            bytes += sum
            continue
          }
          // Gaps, or the byte limit falls inside: row by row.
          let run: PendingRun | undefined
          for (const [seq, size, ts] of rows.all(p, a, b, q.now, q.limit - n) as Array<
            [number, number, number]
          >) {
            if (n > 0 && bytes + size > q.maxBytes) return out
            n++
            bytes += size
            if (run && seq === run.last + (desc ? -1 : 1)) {
              run.last = seq
              run.count++
              run.bytes += size
              if (ts < run.minTs) run.minTs = ts
            } else {
              run = { priority: p, first: seq, last: seq, count: 1, bytes: size, minTs: ts }
              out.push(run)
            }
          }
        }
      }
      return out
    })
  }

  /**
   * The wire JSON of `seqs` in their order: one aggregate query per run of
   * consecutive seqs (a sync batch is a few runs), each returning one UTF-8
   * blob, so no string or object is made per message. A run whose blob is
   * not valid UTF-8 (a binary payload read as text) is built row by row.
   */
  async wireJson(seqs: number[]): Promise<WireJson> {
    return this.guard(() => {
      const parts: Buffer[] = []
      let count = 0
      const comma = Buffer.from(',')
      for (const [a, b] of runsInOrder(seqs)) {
        const desc = b < a
        const r = this.stmt(wireRunSql(desc ? 'DESC' : 'ASC')).get(desc ? b : a, desc ? a : b) as {
          json: Buffer | null
          n: number
        }
        if (r.n === 0 || !r.json) continue
        if (parts.length > 0) parts.push(comma)
        count += r.n
        if (isUtf8(r.json)) {
          parts.push(r.json)
          continue
        }
        const rows = this.stmt(
          `SELECT seq, CAST(${WIRE_JSON} AS BLOB) AS json FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq ${desc ? 'DESC' : 'ASC'}`,
        ).raw()
        const list = rows.all(desc ? b : a, desc ? a : b) as Array<[number, Buffer]>
        list.forEach(([seq, json], i) => {
          if (i > 0) parts.push(comma)
          parts.push(isUtf8(json) ? json : Buffer.from(this.wireJsonOf(seq)))
        })
      }
      return { json: Buffer.concat(parts), count }
    })
  }

  /**
   * wireJson as frames. A run whose payloads are not all valid UTF-8 is
   * built row by row through toWireMessage (those payloads go as base64).
   */
  async wireFrames(seqs: number[]): Promise<WireFrames> {
    return this.guard(() => {
      const json: Buffer[] = []
      const payloads: Buffer[] = []
      let count = 0
      const comma = Buffer.from(',')
      for (const [a, b] of runsInOrder(seqs)) {
        const desc = b < a
        const lo = desc ? b : a
        const hi = desc ? a : b
        const r = this.stmt(frameRunSql(desc ? 'DESC' : 'ASC')).get(lo, hi) as {
          json: Buffer | null
          payloads: Buffer | null
          n: number
        }
        if (r.n === 0 || !r.json) continue
        if (json.length > 0) json.push(comma)
        count += r.n
        if (!r.payloads || isUtf8(r.payloads)) {
          json.push(r.json)
          if (r.payloads) payloads.push(r.payloads)
          continue
        }
        const rows = this.stmt(
          `SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.seq BETWEEN ? AND ? ORDER BY m.seq ${desc ? 'DESC' : 'ASC'}`,
        ).all(lo, hi) as Row[]
        rows.forEach((row, i) => {
          const f = toFrame(toWireMessage(toStored(row)))
          json.push(Buffer.from(i > 0 ? `,${f.json}` : f.json))
          payloads.push(f.payload)
        })
      }
      return { json: Buffer.concat(json), payloads: Buffer.concat(payloads), count }
    })
  }

  /**
   * Walks the ts index past the excluded rows without reading a table row
   * for each (the index holds ts, priority, seq); only the row found is
   * checked for expiry, and the walk goes on past it in the rare case it
   * has expired.
   */
  async oldestPendingTs(now: number, exclude: Array<[number, number]>): Promise<number | null> {
    const outside = ' AND seq NOT BETWEEN ? AND ?'.repeat(exclude.length)
    const bounds = exclude.flat()
    return this.guard(() => {
      const first = this.stmt(
        `SELECT ts, priority, seq FROM pending WHERE 1${outside} ORDER BY ts, priority, seq LIMIT 1`,
      ).raw()
      const after = this.stmt(
        `SELECT ts, priority, seq FROM pending WHERE (ts, priority, seq) > (?, ?, ?)${outside} ORDER BY ts, priority, seq LIMIT 1`,
      ).raw()
      const expiry = this.stmt('SELECT expires_at FROM pending WHERE priority = ? AND seq = ?').pluck()
      let r = first.get(...bounds) as [number, number, number] | undefined
      for (let i = 0; r && i < 16; i++) {
        const e = expiry.get(r[1], r[2]) as number | null
        if (e === null || e > now) return r[0]
        r = after.get(r[0], r[1], r[2], ...bounds) as [number, number, number] | undefined
      }
      if (!r) return null
      // Many expired rows in a row (not purged yet): let SQLite check them all.
      const all = this.stmt(
        `SELECT ts FROM pending WHERE (expires_at IS NULL OR expires_at > ?)${outside} ORDER BY ts LIMIT 1`,
      ).pluck()
      return (all.get(now, ...bounds) as number | undefined) ?? null
    })
  }

  /** One message's wire JSON built in JS (the same shape as WIRE_JSON, payload checked byte for byte). */
  private wireJsonOf(seq: number): string {
    const r = this.stmt(`SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.seq = ?`).get(seq) as Row
    return JSON.stringify(toWireMessage(toStored(r)))
  }

  /**
   * Set-based: one DELETE of queue rows per run of consecutive seqs (a sync
   * batch is usually one run), or one for the whole list through json_each;
   * each run of seqs that really were pending becomes one `sent` row. The
   * message rows themselves are not touched.
   */
  async markSent(seqs: number[], sentAt: number): Promise<number> {
    return this.commitSent(seqs, sentAt, {})
  }

  async commitSent(seqs: number[], sentAt: number, extras: SentExtras): Promise<number> {
    const ranges = seqs.length > 0 ? sortedRuns(seqs) : []
    return this.write(() => {
      let n = 0
      if (ranges.length > 0) n = this.markSentIn(ranges, seqs, sentAt)
      if (extras.counters) this.addCountersIn(extras.counters)
      for (const [k, v] of Object.entries(extras.state ?? {})) this.setStateIn(k, v)
      return n
    })
  }

  private markSentIn(ranges: Array<[number, number]>, seqs: number[], sentAt: number): number {
    const del = (sql: string, ...args: unknown[]) =>
      this.stmt(sql)
        .raw()
        .all(...args) as Array<[number, number]>
    let n = 0
    let bytes = 0
    const changed: Array<[number, number]> = []
    const take = (first: number, last: number, rows: () => Array<[number, number]>) => {
      // Whole run still pending (the usual case): count and sum in SQL, no row comes back.
      const agg = this.stmt(
        `SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM pending WHERE ${ANY_PRIORITY} AND seq BETWEEN ? AND ?`,
      ).get(first, last) as { n: number; bytes: number }
      if (agg.n === last - first + 1) {
        this.stmt(`DELETE FROM pending WHERE ${ANY_PRIORITY} AND seq BETWEEN ? AND ?`).run(first, last)
        n += agg.n
        bytes += agg.bytes
        changed.push([first, last])
        return
      }
      const done: number[] = []
      for (const [seq, size] of rows()) {
        done.push(seq)
        bytes += size
      }
      n += done.length
      for (const r of sortedRuns(done)) changed.push(r)
    }
    if (ranges.length <= MAX_RANGES) {
      for (const [first, last] of ranges)
        take(first, last, () =>
          del(
            `DELETE FROM pending WHERE ${ANY_PRIORITY} AND seq BETWEEN ? AND ? RETURNING seq, size`,
            first,
            last,
          ),
        )
    } else {
      const rows = del(
        `DELETE FROM pending WHERE ${ANY_PRIORITY} AND seq IN (SELECT value FROM json_each(?)) RETURNING seq, size`,
        JSON.stringify(seqs),
      )
      for (const [, size] of rows) bytes += size
      n += rows.length
      for (const r of sortedRuns(rows.map((r) => r[0]))) changed.push(r)
    }
    if (n === 0) return 0
    const ins = this.stmt('INSERT INTO sent (first, last, sent_at) VALUES (?, ?, ?)')
    for (const [first, last] of changed) ins.run(first, last, sentAt)
    this.stmt(
      `UPDATE queue_totals SET pending = pending - ?, pending_bytes = pending_bytes - ?, sent = sent + ?,
         sent_bytes = sent_bytes + ?, sent_total = sent_total + ? WHERE id = 1`,
    ).run(n, bytes, n, bytes, n)
    return n
  }

  async recordAttempt(seqs: number[]): Promise<void> {
    if (seqs.length === 0) return
    this.write(() => {
      const upd = this.stmt(`UPDATE pending SET attempts = attempts + 1 WHERE ${ANY_PRIORITY} AND seq = ?`)
      for (const seq of seqs) upd.run(seq)
    })
  }

  /**
   * A connection that deletes in bulk (cleanup) checkpoints the WAL every 256
   * pages itself (default 1000), so a publisher's commit seldom finds a long
   * WAL to copy.
   */
  private maintenance(): void {
    if (this.maintaining) return
    this.maintaining = true
    this.db.exec('PRAGMA wal_autocheckpoint = 256')
  }

  async purge(q: PurgeQuery): Promise<PurgeResult> {
    const res: PurgeResult = { sentDeleted: 0, expiredDeleted: 0, bytesFreed: 0 }
    if (q.dryRun) {
      // Aggregates only: a dry run over a million rows neither copies them out nor writes.
      return this.guard(() => {
        // Sent past retention: the messages of the oldest sent ranges (sent_at index, rowid ranges).
        const sent = this.stmt(
          `SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM (
             SELECT m.size FROM sent s CROSS JOIN messages m ON m.seq BETWEEN s.first AND s.last
             WHERE s.sent_at < ? ORDER BY s.sent_at, s.first, m.seq LIMIT ?)`,
        ).get(q.sentBefore, q.limit) as { n: number; bytes: number }
        // Expired, except what the first part counted: sent before the cutoff (its range's sent_at).
        const expired = this.stmt(
          `SELECT count(*) AS n, coalesce(sum(sent), 0) AS sent, coalesce(sum(size), 0) AS bytes FROM (
             SELECT m.size, NOT EXISTS (SELECT 1 FROM pending p WHERE p.priority = m.priority AND p.seq = m.seq) AS sent
             FROM messages m
             WHERE m.expires_at <= ? AND coalesce((
               SELECT s.sent_at < ? AND s.last >= m.seq FROM sent s WHERE s.first <= m.seq ORDER BY s.first DESC LIMIT 1
             ), 0) = 0
             ORDER BY m.expires_at LIMIT ?)`,
        ).get(q.now, q.sentBefore, Math.max(0, q.limit - sent.n)) as {
          n: number
          sent: number
          bytes: number
        }
        res.sentDeleted = sent.n + expired.sent
        res.expiredDeleted = expired.n - expired.sent
        res.bytesFreed = sent.bytes + expired.bytes
        return res
      })
    }
    this.maintenance()
    return this.write(() => {
      const started = performance.now()
      // Sent messages past retention first (by sent range, oldest first), then expired ones (messages_expiry).
      const sent = this.deleteSent(q.sentBefore, q.limit)
      this.adjustTotals(sent, null)
      res.sentDeleted += sent.sent
      res.bytesFreed += sent.sentBytes
      const budget = q.limit - res.sentDeleted
      if (budget > 0) {
        // One set-based statement: about half the cost of a DELETE per row.
        const rows = this.stmt(
          `DELETE FROM messages WHERE seq IN
             (SELECT seq FROM messages WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)
           RETURNING seq, size, priority`,
        )
          .raw()
          .all(q.now, budget) as Array<[number, number, number]>
        const r = { sent: 0, sentBytes: 0, pending: 0, pendingBytes: 0 }
        const unqueue = this.stmt('DELETE FROM pending WHERE priority = ? AND seq = ?')
        for (const [seq, size, priority] of rows)
          if (unqueue.run(priority, seq).changes > 0) {
            r.pending++
            r.pendingBytes += size
          } else {
            r.sent++
            r.sentBytes += size
          }
        this.adjustTotals(r, 'expired_total')
        res.sentDeleted += r.sent
        res.expiredDeleted += r.pending
        res.bytesFreed += r.sentBytes + r.pendingBytes
      }
      res.workMs = performance.now() - started
      return res
    })
  }

  async enforceLimits(
    opts: { limit?: number } = {},
  ): Promise<{ dropped: number; deleted: number; bytesFreed: number }> {
    this.maintenance()
    return this.write(() => {
      const t = this.totals()
      const dropped = this.makeRoom(t, { messages: 0, bytes: 0 }, this.now(), false, opts.limit)
      const after = this.totals()
      return {
        dropped,
        deleted: t.pending + t.sent - after.pending - after.sent,
        bytesFreed: t.pending_bytes + t.sent_bytes - after.pending_bytes - after.sent_bytes,
      }
    })
  }

  private fileBytes(): number | null {
    let total = 0
    try {
      total += fs.statSync(this.opts.path).size
    } catch {
      return null
    }
    try {
      total += fs.statSync(this.opts.path + '-wal').size
    } catch {
      // no WAL file right now
    }
    return total
  }

  /**
   * Without `maxPages`: free every page and checkpoint at once. With it: one
   * short write transaction moving at most `maxPages` pages (callers loop
   * while `freePages` > 0), and the WAL checkpoint once no free page is left.
   */
  async compact(
    opts: { maxPages?: number } = {},
  ): Promise<{ fileBytesBefore: number | null; fileBytesAfter: number | null; freePages: number }> {
    const fileBytesBefore = this.fileBytes()
    this.maintenance()
    const freePages = this.guard(() => {
      const free = () => this.db.prepare('PRAGMA freelist_count').pluck().get() as number
      const before = free()
      if (opts.maxPages === undefined) this.db.exec('PRAGMA incremental_vacuum')
      else if (before > 0)
        this.db.exec(`PRAGMA incremental_vacuum(${Math.max(1, Math.floor(opts.maxPages))})`)
      // No progress: a file made without auto_vacuum=INCREMENTAL keeps its free pages for reuse.
      const left = free() < before ? free() : 0
      if (left === 0) {
        // PASSIVE copies the WAL without blocking writers; TRUNCATE then has little left to do.
        this.db.exec('PRAGMA wal_checkpoint(PASSIVE)')
        this.db.exec('PRAGMA wal_checkpoint(TRUNCATE)')
      }
      return left
    })
    return { fileBytesBefore, fileBytesAfter: this.fileBytes(), freePages }
  }

  async stats(now: number): Promise<StorageStats> {
    return this.guard(() => {
      const t = this.totals()
      // Expired pending messages not purged yet: through messages_expiry, one pending probe each.
      const expired = this.stmt(
        `SELECT count(*) AS n, coalesce(sum(p.size), 0) AS bytes
         FROM messages m CROSS JOIN pending p ON p.priority = m.priority AND p.seq = m.seq
         WHERE m.expires_at <= ?`,
      ).get(now) as { n: number; bytes: number }
      const oldestTs = this.stmt(
        'SELECT ts FROM pending WHERE (expires_at IS NULL OR expires_at > ?) ORDER BY ts LIMIT 1',
      ).get(now) as { ts: number } | undefined
      const firstOfPriority = this.stmt(
        `SELECT p.seq, m.arrived_at FROM pending p CROSS JOIN messages m ON m.seq = p.seq
         WHERE p.priority = ? AND (p.expires_at IS NULL OR p.expires_at > ?) ORDER BY p.seq LIMIT 1`,
      )
      let oldest: { seq: number; arrived_at: number } | undefined
      if (t.pending > 0)
        for (const p of PRIORITIES_DESC) {
          const r = firstOfPriority.get(p, now) as { seq: number; arrived_at: number } | undefined
          if (r && (!oldest || r.seq < oldest.seq)) oldest = r
        }
      return {
        epoch: this.epoch,
        pending: t.pending - expired.n,
        pendingBytes: t.pending_bytes - expired.bytes,
        oldestPendingTs: oldestTs?.ts ?? null,
        oldestPendingArrivedAt: oldest?.arrived_at ?? null,
        sentKept: t.sent,
        totalMessages: t.pending + t.sent,
        totalBytes: t.pending_bytes + t.sent_bytes,
        fileBytes: this.fileBytes(),
        appendedTotal: t.appended_total,
        sentTotal: t.sent_total,
        expiredTotal: t.expired_total,
        droppedTotal: t.dropped_total,
        maxBytes: this.opts.maxBytes,
        maxMessages: this.opts.maxMessages,
      }
    })
  }

  async getState(key: string): Promise<string | undefined> {
    const r = this.guard(() => this.stmt('SELECT value FROM state WHERE key = ?').get(key)) as
      { value: string } | undefined
    return r?.value
  }

  async setState(key: string, value: string | undefined): Promise<void> {
    if (key === 'epoch') throw new StorageError('the outbox epoch is fixed when the store is created')
    this.write(() => this.setStateIn(key, value))
  }

  private setStateIn(key: string, value: string | undefined): void {
    if (key === 'epoch') throw new StorageError('the outbox epoch is fixed when the store is created')
    if (value === undefined) this.stmt('DELETE FROM state WHERE key = ?').run(key)
    else
      this.stmt(
        'INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      ).run(key, value)
  }

  async addCounters(deltas: Record<string, number>): Promise<void> {
    if (Object.keys(deltas).length === 0) return
    this.write(() => this.addCountersIn(deltas))
  }

  private addCountersIn(deltas: Record<string, number>): void {
    const up = this.stmt(
      'INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value',
    )
    for (const [k, v] of Object.entries(deltas)) up.run(k, v)
  }

  async getCounters(): Promise<Record<string, number>> {
    const rows = this.guard(() => this.stmt('SELECT name, value FROM counters').all()) as Array<{
      name: string
      value: number
    }>
    return Object.fromEntries(rows.map((r) => [r.name, r.value]))
  }

  async acquireLease(name: string, owner: string, ttlMs: number, now: number): Promise<boolean> {
    return this.write(() => {
      const r = this.stmt('SELECT owner, expires_at FROM leases WHERE name = ?').get(name) as
        { owner: string; expires_at: number } | undefined
      if (r && r.owner !== owner && r.expires_at > now) return false
      this.stmt(
        `INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at`,
      ).run(name, owner, now + ttlMs)
      return true
    })
  }

  async releaseLease(name: string, owner: string): Promise<void> {
    this.write(() => this.stmt('DELETE FROM leases WHERE name = ? AND owner = ?').run(name, owner))
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close()
  }
}

function toStored(r: Row): StoredMessage {
  return {
    seq: r.seq,
    topic: r.topic,
    payload: r.payload,
    contentType: r.content_type,
    ts: r.ts,
    arrivedAt: r.arrived_at,
    expiresAt: r.expires_at,
    priority: r.priority,
    headers: r.headers ? (JSON.parse(r.headers) as Record<string, string>) : null,
    status: 'pending',
    sentAt: null,
    attempts: r.attempts,
    size: r.size,
  }
}

export function createSqliteStorage(options: StorageOptions): StorageDriver {
  return new SqliteStorage(options)
}

export default createSqliteStorage
