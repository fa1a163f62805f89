/**
 * Appending messages: multi-row INSERTs (BULK_ROWS rows binding only payload
 * and ts for the runs of same-shaped messages `publish --lines` writes), the
 * room made first under the overflow policy, and the queue rows and totals
 * in the same transaction.
 */
import type { AppendResult, NewMessage } from '../../../core/storage/driver.js'
import { accountedSize } from '../../../core/storage/size.js'
import type { Statement } from './addon.js'
import { asBuffer } from '../common.js'
import type { SqliteConnection } from './connection.js'
import { makeRoom } from './delete.js'

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

export async function append(c: SqliteConnection, messages: NewMessage[]): Promise<AppendResult> {
  const n = messages.length
  if (n === 0) return { seqs: [], dropped: 0 }
  const headers = new Array<string | null>(n)
  const sizes = new Array<number>(n)
  let bytes = 0
  const now = c.now()
  for (let i = 0; i < n; i++) {
    const m = messages[i]
    const h = m.headers ? JSON.stringify(m.headers) : null
    const size = accountedSize(m, h)
    headers[i] = h
    sizes[i] = size
    bytes += size
  }
  return c.write(() => {
    const dropped = makeRoom(c, c.totals(), { messages: n, bytes }, now, true)
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
        put(bulkInsertStatement(c), args, i, BULK_ROWS)
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
      put(insertStatement(c, rows), args, i, rows)
      i += rows
    }
    // Their queue rows, read back from the pages just written: one statement for the whole append.
    c.stmt(
      `INSERT INTO pending (priority, seq, ts, expires_at, size)
       SELECT priority, seq, ts, expires_at, size FROM messages WHERE seq BETWEEN ? AND ?`,
    ).run(seqs[0], seqs[n - 1])
    c.stmt(
      `UPDATE queue_totals SET pending = pending + ?, pending_bytes = pending_bytes + ?,
         appended_total = appended_total + ? WHERE id = 1`,
    ).run(n, bytes, n)
    return { seqs, dropped }
  })
}

export function insertStatement(c: SqliteConnection, rows: number): Statement {
  return c.stmt(
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
export function bulkInsertStatement(c: SqliteConnection): Statement {
  return c.stmt(
    'INSERT INTO messages (topic, payload, content_type, ts, arrived_at, expires_at, priority, headers, size) ' +
      'SELECT ?, column1, ?, column2, ?, ?, ?, ?, length(column1) + ? FROM (VALUES ' +
      Array.from({ length: BULK_ROWS }, () => '(?, ?)').join(', ') +
      ')',
  )
}
