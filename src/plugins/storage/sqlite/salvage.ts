/**
 * Salvage of a damaged outbox file (`rmq doctor --repair`, the contract in
 * core/storage/salvage.ts). Messages are read by seq range, and a range that
 * raises SQLITE_CORRUPT is bisected down to single seqs, so one damaged page
 * loses only the rows on it. The queue tables (`pending`, `sent`) and the
 * state are read whole when they can be, by range otherwise. Everything read
 * goes into a fresh file of the current schema with the same seqs, epoch,
 * node id and statuses; the sequence continues after the highest seq the
 * damaged file knew, so a new message never takes a seq the broker may have.
 * The damaged file is held with BEGIN IMMEDIATE for the whole copy and
 * until `finish` has moved it aside (no writer can add a message that would
 * be left behind), and never written.
 */
import fs from 'node:fs'
import { CorruptStoreError, StorageError } from '../../../shared/errors.js'
import type { LeaseRow, SalvageOptions, SalvageResult } from '../../../core/storage/salvage.js'
import { Database, nativeAddon } from './addon.js'
import { SqliteConnection } from './connection.js'
import { migrate } from './migrate.js'
import type { Row } from './rows.js'

/** Seqs per range read; a damaged range is bisected. */
const CHUNK = 512

/** A `messages` row as stored (the driver's Row without the `pending` columns). */
type MessageRow = Omit<Row, 'attempts'>

interface PendingRow {
  priority: number
  seq: number
  ts: number
  expires_at: number | null
  size: number
  attempts: number
}

interface SentRow {
  first: number
  last: number
  sent_at: number
}

type Range = [number, number]

/** SQLite found the file damaged (as opposed to busy, full or unwritable). */
function isDamage(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code
  return typeof code === 'string' && (code.startsWith('SQLITE_CORRUPT') || code.startsWith('SQLITE_NOTADB'))
}

/** `fn()`, or `fallback` when the pages it reads are damaged. */
function attempt<T>(fn: () => T, fallback: T): { value: T; ok: boolean } {
  try {
    return { value: fn(), ok: true }
  } catch (err) {
    if (!isDamage(err)) throw err
    return { value: fallback, ok: false }
  }
}

/**
 * Read [lo, hi] in CHUNK ranges; bisect a damaged one down to the seqs that
 * cannot be read. `read` must look a single seq up by equality: a range scan
 * steps past its last row to see that it is the last, into the next page,
 * which may be the damaged one.
 */
function readByRange<T>(
  lo: number,
  hi: number,
  read: (a: number, b: number) => T[],
  onChunk?: (b: number) => void,
): { rows: T[]; lost: Range[] } {
  const rows: T[] = []
  const lost: Range[] = []
  const bisect = (a: number, b: number): void => {
    const r = attempt(() => read(a, b), [])
    if (r.ok) {
      for (const x of r.value) rows.push(x)
      return
    }
    if (a === b) {
      const prev = lost[lost.length - 1]
      if (prev && prev[1] === a - 1) prev[1] = a
      else lost.push([a, a])
      return
    }
    const m = Math.floor((a + b) / 2)
    bisect(a, m)
    bisect(m + 1, b)
  }
  for (let a = lo; a <= hi; a += CHUNK) {
    const b = Math.min(hi, a + CHUNK - 1)
    bisect(a, b)
    onChunk?.(b)
  }
  return { rows, lost }
}

/** `col` in [a, b] for two bound values; equality (`? = ?` binds b too) for a single one. */
const between = (col: string, a: number, b: number) =>
  a === b ? `${col} = ? AND ${col} = ?` : `${col} BETWEEN ? AND ?`

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v)

/** A row that decoded but holds what no rmq writes (a damaged page can read as garbage): not copied. */
function plausible(r: MessageRow): boolean {
  if (!isInt(r.seq) || r.seq < 1 || typeof r.topic !== 'string' || r.topic.length === 0) return false
  if (!Buffer.isBuffer(r.payload) || !isInt(r.ts) || !isInt(r.arrived_at) || !isInt(r.size)) return false
  if (!isInt(r.priority) || r.priority < 0 || r.priority > 9) return false
  if (r.expires_at !== null && !isInt(r.expires_at)) return false
  if (r.content_type !== null && typeof r.content_type !== 'string') return false
  if (r.headers !== null) {
    if (typeof r.headers !== 'string') return false
    try {
      JSON.parse(r.headers)
    } catch {
      return false
    }
  }
  return true
}

const inRanges = (ranges: Range[], s: number) => ranges.some(([a, b]) => a <= s && s <= b)

export async function salvageSqlite(o: SalvageOptions): Promise<SalvageResult> {
  if (fs.existsSync(o.target)) throw new StorageError(`${o.target} already exists`)
  const db = new Database(o.path, {
    fileMustExist: true,
    timeout: 5000,
    nativeBinding: nativeAddon() as string | undefined,
  })
  let wrote = false
  try {
    const version = attempt(() => db.prepare('PRAGMA user_version').pluck().get() as number, -1)
    if (!version.ok)
      throw new CorruptStoreError(
        `the outbox ${o.path} is damaged beyond repair: its header cannot be read`,
        {
          suggestion:
            'nothing in it can be read: move it aside (keep it) and start a new outbox; its node must get a new epoch',
        },
      )
    if (version.value < 2)
      throw new StorageError(
        `the outbox ${o.path} has schema version ${version.value}; repair reads 2 and later`,
        {
          suggestion:
            'open it once with an rmq of the version that wrote it, or move it aside and start a new one',
        },
      )
    try {
      // No writer may add a message to the file that is about to be moved aside.
      db.exec('BEGIN IMMEDIATE')
    } catch (err) {
      if (!isDamage(err))
        throw new StorageError(`another process is writing to ${o.path}`, {
          suggestion: 'stop `rmq sync --watch`, the timers and any publisher, then run the repair again',
          cause: err,
        })
    }

    // The small tables first: the state holds the epoch, without which nothing is worth writing.
    const allState = attempt(
      () => db.prepare('SELECT key, value FROM state').all() as Array<{ key: string; value: string }>,
      [],
    )
    const state: Record<string, string> = {}
    for (const r of allState.value)
      if (typeof r.key === 'string' && typeof r.value === 'string') state[r.key] = r.value
    if (!allState.ok)
      for (const key of ['epoch', 'nodeId', 'createdAt']) {
        const v = attempt(
          () => db.prepare('SELECT value FROM state WHERE key = ?').pluck().get(key),
          undefined,
        )
        if (typeof v.value === 'string') state[key] = v.value
      }
    if (!state.epoch)
      throw new CorruptStoreError(`the outbox ${o.path} is damaged where it keeps its epoch`, {
        suggestion:
          'without the epoch the broker cannot tell resent messages from new ones: move the file aside (keep it) ' +
          'and start a new outbox',
      })
    const leases = attempt(
      () =>
        (
          db.prepare('SELECT name, owner, expires_at FROM leases').all() as Array<Record<string, unknown>>
        ).map((r): LeaseRow => ({
          name: String(r.name),
          owner: String(r.owner),
          expiresAt: Number(r.expires_at),
        })),
      [],
    ).value
    o.check?.(leases, state)
    const counters = attempt(
      () => db.prepare('SELECT name, value FROM counters').all() as Array<{ name: string; value: number }>,
      [],
    ).value
    const totals = attempt(
      () =>
        db
          .prepare(
            'SELECT appended_total, sent_total, expired_total, dropped_total FROM queue_totals WHERE id = 1',
          )
          .get() as Record<string, number> | undefined,
      undefined,
    ).value

    // The seq range: the sequence's high mark (never reused), else what the queue tables name.
    const seqOf = (sql: string) => {
      const v = attempt(() => db.prepare(sql).pluck().get(), null).value
      return isInt(v) ? v : null
    }
    const pendingAll = attempt(
      () =>
        db.prepare('SELECT priority, seq, ts, expires_at, size, attempts FROM pending').all() as PendingRow[],
      [],
    )
    const sentAll = attempt(() => db.prepare('SELECT first, last, sent_at FROM sent').all() as SentRow[], [])
    const known = [...pendingAll.value.map((p) => p.seq), ...sentAll.value.flatMap((s) => [s.first, s.last])]
    const hiCandidates = [
      seqOf("SELECT seq FROM sqlite_sequence WHERE name = 'messages'"),
      seqOf('SELECT max(seq) FROM messages'),
      ...known,
    ].filter((v): v is number => v !== null)
    const loSeq = seqOf('SELECT min(seq) FROM messages') ?? (known.length ? Math.min(...known) : 1)
    const hiSeq = hiCandidates.length ? Math.max(...hiCandidates) : 0
    const total = Math.max(0, hiSeq - loSeq + 1)

    const messages = readByRange(
      loSeq,
      hiSeq,
      (a, b) =>
        db
          .prepare(
            `SELECT seq, topic, payload, content_type, ts, arrived_at, expires_at, priority, headers, size
             FROM messages WHERE ${between('seq', a, b)} ORDER BY seq`,
          )
          .all(a, b) as MessageRow[],
      (b) => o.onProgress?.(b - loSeq + 1, total),
    )
    const lost = messages.lost
    const recoveredRows: MessageRow[] = []
    for (const r of messages.rows)
      if (plausible(r)) recoveredRows.push(r)
      else lost.push([r.seq, r.seq])
    lost.sort((x, y) => x[0] - y[0])

    // Queue state: read whole above; by range (per priority) where that failed.
    let pendingRows = pendingAll.value
    const pendingUnknown = new Map<number, Range[]>()
    if (!pendingAll.ok) {
      pendingRows = []
      for (let p = 0; p <= 9; p++) {
        const r = readByRange(
          loSeq,
          hiSeq,
          (a, b) =>
            db
              .prepare(
                `SELECT priority, seq, ts, expires_at, size, attempts FROM pending
                 WHERE priority = ? AND ${between('seq', a, b)}`,
              )
              .all(p, a, b) as PendingRow[],
        )
        pendingRows.push(...r.rows)
        if (r.lost.length) pendingUnknown.set(p, r.lost)
      }
    }
    let sentRows = sentAll.value
    let sentUnknown: Range[] = []
    if (!sentAll.ok) {
      const r = readByRange(
        loSeq,
        hiSeq,
        (a, b) =>
          db
            .prepare(`SELECT first, last, sent_at FROM sent WHERE ${between('first', a, b)}`)
            .all(a, b) as SentRow[],
      )
      sentRows = r.rows
      sentUnknown = r.lost
    }
    sentRows = sentRows.filter(
      (s) => isInt(s.first) && isInt(s.last) && isInt(s.sent_at) && s.first <= s.last,
    )
    sentRows.sort((x, y) => x.first - y.first)

    const pendingBySeq = new Map<number, PendingRow>()
    for (const p of pendingRows) pendingBySeq.set(p.seq, p)
    const recoveredSeqs = new Set(recoveredRows.map((r) => r.seq))
    let lostPending = 0
    for (const p of pendingRows) if (!recoveredSeqs.has(p.seq)) lostPending++
    /** The sent run holding `seq`, by binary search over the sorted runs. */
    const sentHolds = (seq: number) => {
      let lo = 0
      let hi = sentRows.length - 1
      while (lo <= hi) {
        const mid = (lo + hi) >> 1
        const s = sentRows[mid]
        if (seq < s.first) hi = mid - 1
        else if (seq > s.last) lo = mid + 1
        else return true
      }
      return false
    }

    const result: SalvageResult = {
      epoch: state.epoch,
      nodeId: state.nodeId ?? null,
      recovered: { messages: 0, pending: 0, sent: 0, expired: 0, bytes: 0 },
      lost,
      lostSeqs: lost.reduce((n, [a, b]) => n + b - a + 1, 0),
      lostPending,
      statusUnknown: 0,
      firstSeq: loSeq,
      lastSeq: hiSeq,
      stateLost: !allState.ok,
    }

    // The fresh file, the current schema; then the old epoch and everything read, in one transaction.
    const c = new SqliteConnection({
      path: o.target,
      maxBytes: 0,
      maxMessages: 0,
      overflow: 'reject',
      durability: 'full',
      now: () => o.now,
    })
    wrote = true
    try {
      migrate(c)
      c.db.exec('PRAGMA synchronous = FULL')
      let pending = 0
      let pendingBytes = 0
      let sent = 0
      let sentBytes = 0
      c.transaction(() => {
        c.db.exec('DELETE FROM state')
        const putState = c.db.prepare('INSERT INTO state (key, value) VALUES (?, ?)')
        for (const [k, v] of Object.entries(state)) putState.run(k, v)
        const putCounter = c.db.prepare('INSERT INTO counters (name, value) VALUES (?, ?)')
        for (const r of counters)
          if (typeof r.name === 'string' && isInt(r.value)) putCounter.run(r.name, r.value)
        const putMessage = c.db.prepare(
          `INSERT INTO messages (seq, topic, payload, content_type, ts, arrived_at, expires_at, priority, headers, size)
           VALUES (@seq, @topic, @payload, @content_type, @ts, @arrived_at, @expires_at, @priority, @headers, @size)`,
        )
        const putPending = c.db.prepare(
          'INSERT INTO pending (priority, seq, ts, expires_at, size, attempts) VALUES (?, ?, ?, ?, ?, ?)',
        )
        for (const m of recoveredRows) {
          putMessage.run(m)
          result.recovered.messages++
          result.recovered.bytes += m.size
          const p = pendingBySeq.get(m.seq)
          const unknown =
            !p &&
            !sentHolds(m.seq) &&
            (inRanges(pendingUnknown.get(m.priority) ?? [], m.seq) || sentUnknown.some(([a]) => a <= m.seq))
          if (p || unknown) {
            // A message whose queue row is lost is kept pending: sent again, the broker drops a copy it has.
            if (unknown) result.statusUnknown++
            putPending.run(m.priority, m.seq, m.ts, m.expires_at, m.size, p?.attempts ?? 0)
            pending++
            pendingBytes += m.size
            if (m.expires_at !== null && m.expires_at <= o.now) result.recovered.expired++
            else result.recovered.pending++
          } else if (sentHolds(m.seq)) {
            sent++
            sentBytes += m.size
            result.recovered.sent++
          } else result.recovered.expired++
        }
        const putSent = c.db.prepare('INSERT INTO sent (first, last, sent_at) VALUES (?, ?, ?)')
        for (const s of sentRows) putSent.run(s.first, s.last, s.sent_at)
        c.db
          .prepare(
            `UPDATE queue_totals SET pending = ?, pending_bytes = ?, sent = ?, sent_bytes = ?, appended_total = ?,
               sent_total = ?, expired_total = ?, dropped_total = ? WHERE id = 1`,
          )
          .run(
            pending,
            pendingBytes,
            sent,
            sentBytes,
            totals?.appended_total ?? result.recovered.messages,
            totals?.sent_total ?? sent,
            totals?.expired_total ?? 0,
            // Pending messages lost to the damage count as dropped (status, the broker's data-loss alert).
            (totals?.dropped_total ?? 0) + lostPending,
          )
        // New messages continue after every seq the damaged file may have given out.
        c.db
          .prepare(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'messages', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages')",
          )
          .run()
        c.db.prepare("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'messages'").run(hiSeq)
        c.db.prepare("INSERT INTO state (key, value) VALUES ('repair.last', ?)").run(
          JSON.stringify({
            at: o.now,
            from: o.path,
            lost,
            lostPending,
            recovered: result.recovered.messages,
          }),
        )
      })
      const check = c.db.prepare('PRAGMA quick_check').pluck().all() as string[]
      if (check.length !== 1 || check[0] !== 'ok')
        throw new StorageError(
          `the repaired outbox ${o.target} failed its check: ${check.slice(0, 3).join('; ')}`,
        )
      c.db.exec('PRAGMA wal_checkpoint(TRUNCATE)')
    } finally {
      c.db.close()
    }
    o.finish?.()
    wrote = false
    return result
  } catch (err) {
    if (wrote) for (const f of [o.target, o.target + '-wal', o.target + '-shm']) fs.rmSync(f, { force: true })
    throw err
  } finally {
    if (db.inTransaction)
      try {
        db.exec('ROLLBACK')
      } catch {
        // nothing was written; closing releases the lock
      }
    db.close()
  }
}
