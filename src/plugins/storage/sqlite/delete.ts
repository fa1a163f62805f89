/**
 * Deleting: room made for an append or under lowered limits (expired, then
 * sent, then under drop-oldest the oldest pending messages), retention and
 * expiry (purge), and giving freed pages back (compact).
 */
import type { PurgeQuery, PurgeResult } from '../../../core/storage/driver.js'
import { sleep } from '../../../shared/clock.js'
import { limitError } from '../common.js'
import type { Deleted, SqliteConnection, Totals } from './connection.js'

/** Rows deleted per statement while making room or purging. */
const DELETE_CHUNK = 1000
/** Sent ranges read per statement while purging. */
const RANGE_CHUNK = 100

/** Delete rows chosen by `selectSql` (returning seq, size, priority) until `enough` says stop. */
export function deleteWhile(
  c: SqliteConnection,
  selectSql: string,
  params: unknown[],
  enough: (freedCount: number, freedBytes: number) => boolean,
): Deleted {
  const sel = c.stmt(selectSql)
  const out = { sent: 0, sentBytes: 0, pending: 0, pendingBytes: 0 }
  for (;;) {
    const rows = sel.all(...params, DELETE_CHUNK) as Array<{ seq: number; size: number; priority: number }>
    if (rows.length === 0) return out
    for (const r of rows) {
      if (enough(out.sent + out.pending, out.sentBytes + out.pendingBytes)) return out
      if (c.deleteMessage(r.seq, r.priority)) {
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
export function deleteSent(
  c: SqliteConnection,
  before: number | null,
  limit: number,
  enough?: (freedCount: number, freedBytes: number) => boolean,
): Deleted {
  const out = { sent: 0, sentBytes: 0, pending: 0, pendingBytes: 0 }
  const ranges = c
    .stmt(
      `SELECT first, last FROM sent ${before === null ? '' : 'WHERE sent_at < ?'} ORDER BY sent_at, first LIMIT ?`,
    )
    .raw()
  for (;;) {
    const chunk = ranges.all(...(before === null ? [] : [before]), RANGE_CHUNK) as Array<[number, number]>
    for (const [first, last] of chunk) {
      const budget = limit - out.sent
      if (budget <= 0 || enough?.(out.sent, out.sentBytes)) return out
      let through: number
      if (enough) {
        // Row by row: makeRoom stops as soon as there is room.
        through = first - 1
        const rows = c
          .stmt('SELECT seq, size FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?')
          .raw()
        for (const [seq, size] of rows.all(first, last, budget) as Array<[number, number]>) {
          if (enough(out.sent, out.sentBytes)) break
          c.stmt('DELETE FROM messages WHERE seq = ?').run(seq)
          out.sent++
          out.sentBytes += size
          through = seq
        }
      } else {
        // Set-based: the range's first `budget` messages with one DELETE.
        const r = c
          .stmt(
            `SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes, max(seq) AS through
           FROM (SELECT seq, size FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?)`,
          )
          .get(first, last, budget) as { n: number; bytes: number; through: number | null }
        through = r.through ?? last
        if (r.n > 0) c.stmt('DELETE FROM messages WHERE seq BETWEEN ? AND ?').run(first, through)
        out.sent += r.n
        out.sentBytes += r.bytes
      }
      const next = c
        .stmt('SELECT min(seq) FROM messages WHERE seq > ? AND seq <= ?')
        .pluck()
        .get(through, last) as number | null
      if (next === null) c.stmt('DELETE FROM sent WHERE first = ?').run(first)
      else if (next !== first) c.stmt('UPDATE sent SET first = ? WHERE first = ?').run(next, first)
    }
    if (chunk.length < RANGE_CHUNK) return out
  }
}

/**
 * Free room for `incoming` inside the current transaction: expired messages
 * first, then sent ones (already delivered), then under drop-oldest the
 * oldest pending ones. Returns how many pending messages were dropped.
 */
export function makeRoom(
  c: SqliteConnection,
  t: Totals,
  incoming: { messages: number; bytes: number },
  now: number,
  strict: boolean,
  cap = Infinity,
): number {
  const { maxBytes, maxMessages, overflow } = c.opts
  const needBytes = t.pending_bytes + t.sent_bytes + incoming.bytes - maxBytes
  const needCount = maxMessages > 0 ? t.pending + t.sent + incoming.messages - maxMessages : 0
  if (needBytes <= 0 && needCount <= 0) return 0
  if (strict && (incoming.bytes > maxBytes || (maxMessages > 0 && incoming.messages > maxMessages)))
    throw limitError(c.opts, c.fullness(t), incoming)
  let freedBytes = 0
  let freedCount = 0
  // `cap` bounds the rows one transaction deletes (enforceLimits loops; appends pass none).
  const enough = (c: number, b: number) =>
    (freedCount + c >= needCount && freedBytes + b >= needBytes) || freedCount + c >= cap
  const apply = (r: Deleted, counter: 'expired_total' | 'dropped_total' | null) => {
    freedBytes += r.sentBytes + r.pendingBytes
    freedCount += r.sent + r.pending
    c.adjustTotals(r, counter)
    return r.pending
  }
  apply(
    deleteWhile(
      c,
      'SELECT seq, size, priority FROM messages WHERE expires_at <= ? ORDER BY expires_at LIMIT ?',
      [now],
      enough,
    ),
    'expired_total',
  )
  if (enough(0, 0)) return 0
  apply(deleteSent(c, null, Number.MAX_SAFE_INTEGER, enough), null)
  if (enough(0, 0)) return 0
  if (overflow === 'drop-oldest') {
    const dropped = apply(
      // Sent and expired messages are gone by now: the scan starts at the oldest pending one.
      deleteWhile(
        c,
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
  throw limitError(c.opts, c.fullness(c.totals()), incoming)
}

export async function purge(c: SqliteConnection, q: PurgeQuery): Promise<PurgeResult> {
  const res: PurgeResult = { sentDeleted: 0, expiredDeleted: 0, bytesFreed: 0 }
  if (q.dryRun) {
    // Aggregates only: a dry run over a million rows neither copies them out nor writes.
    return c.guard(() => {
      // Sent past retention: the messages of the oldest sent ranges (sent_at index, rowid ranges).
      const sent = c
        .stmt(
          `SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM (
           SELECT m.size FROM sent s CROSS JOIN messages m ON m.seq BETWEEN s.first AND s.last
           WHERE s.sent_at < ? ORDER BY s.sent_at, s.first, m.seq LIMIT ?)`,
        )
        .get(q.sentBefore, q.limit) as { n: number; bytes: number }
      // Expired, except what the first part counted: sent before the cutoff (its range's sent_at).
      const expired = c
        .stmt(
          `SELECT count(*) AS n, coalesce(sum(sent), 0) AS sent, coalesce(sum(size), 0) AS bytes FROM (
           SELECT m.size, NOT EXISTS (SELECT 1 FROM pending p WHERE p.priority = m.priority AND p.seq = m.seq) AS sent
           FROM messages m
           WHERE m.expires_at <= ? AND coalesce((
             SELECT s.sent_at < ? AND s.last >= m.seq FROM sent s WHERE s.first <= m.seq ORDER BY s.first DESC LIMIT 1
           ), 0) = 0
           ORDER BY m.expires_at LIMIT ?)`,
        )
        .get(q.now, q.sentBefore, Math.max(0, q.limit - sent.n)) as {
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
  c.maintenance()
  return c.write(() => {
    const started = performance.now()
    // Sent messages past retention first (by sent range, oldest first), then expired ones (messages_expiry).
    const sent = deleteSent(c, q.sentBefore, q.limit)
    c.adjustTotals(sent, null)
    res.sentDeleted += sent.sent
    res.bytesFreed += sent.sentBytes
    const budget = q.limit - res.sentDeleted
    if (budget > 0) {
      // One set-based statement: about half the cost of a DELETE per row.
      const rows = c
        .stmt(
          `DELETE FROM messages WHERE seq IN
           (SELECT seq FROM messages WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)
         RETURNING seq, size, priority`,
        )
        .raw()
        .all(q.now, budget) as Array<[number, number, number]>
      const r = { sent: 0, sentBytes: 0, pending: 0, pendingBytes: 0 }
      const unqueue = c.stmt('DELETE FROM pending WHERE priority = ? AND seq = ?')
      for (const [seq, size, priority] of rows)
        if (unqueue.run(priority, seq).changes > 0) {
          r.pending++
          r.pendingBytes += size
        } else {
          r.sent++
          r.sentBytes += size
        }
      c.adjustTotals(r, 'expired_total')
      res.sentDeleted += r.sent
      res.expiredDeleted += r.pending
      res.bytesFreed += r.sentBytes + r.pendingBytes
    }
    res.workMs = performance.now() - started
    return res
  })
}

export async function enforceLimits(
  c: SqliteConnection,
  opts: { limit?: number } = {},
): Promise<{ dropped: number; deleted: number; bytesFreed: number }> {
  c.maintenance()
  return c.write(() => {
    const t = c.totals()
    const dropped = makeRoom(c, t, { messages: 0, bytes: 0 }, c.now(), false, opts.limit)
    const after = c.totals()
    return {
      dropped,
      deleted: t.pending + t.sent - after.pending - after.sent,
      bytesFreed: t.pending_bytes + t.sent_bytes - after.pending_bytes - after.sent_bytes,
    }
  })
}

/** Tries, and the pause between them, of the final WAL truncation while another connection checkpoints. */
const TRUNCATE_TRIES = 40
const TRUNCATE_PAUSE_MS = 50

/**
 * Without `maxPages`: free every page and checkpoint at once. With it: one
 * short write transaction moving at most `maxPages` pages (callers loop
 * while `freePages` > 0), and the WAL checkpoint once no free page is left.
 */
export async function compact(
  c: SqliteConnection,
  opts: { maxPages?: number } = {},
): Promise<{ fileBytesBefore: number | null; fileBytesAfter: number | null; freePages: number }> {
  const fileBytesBefore = c.fileBytes()
  c.maintenance()
  const freePages = c.guard(() => {
    const free = () => c.db.prepare('PRAGMA freelist_count').pluck().get() as number
    const before = free()
    if (opts.maxPages === undefined) c.db.exec('PRAGMA incremental_vacuum')
    else if (before > 0) c.db.exec(`PRAGMA incremental_vacuum(${Math.max(1, Math.floor(opts.maxPages))})`)
    // No progress: a file made without auto_vacuum=INCREMENTAL keeps its free pages for reuse.
    return free() < before ? free() : 0
  })
  if (freePages === 0) await truncateWal(c)
  return { fileBytesBefore, fileBytesAfter: c.fileBytes(), freePages }
}

/**
 * Copy the WAL into the file and truncate it to 0 bytes: the space a cleanup
 * wrote there (every page it moved) goes back to the disk. A publisher's own
 * automatic checkpoint, running at that moment, makes SQLite answer busy at
 * once, without waiting (seen under load as a 4 MB WAL left behind): so it is
 * tried again, bounded, between the other connections' commits.
 */
async function truncateWal(c: SqliteConnection): Promise<void> {
  for (let tries = 1; ; tries++) {
    const busy = c.guard(() => {
      // PASSIVE copies the WAL without blocking writers; TRUNCATE then has little left to do.
      c.db.exec('PRAGMA wal_checkpoint(PASSIVE)')
      const r = c.db.prepare('PRAGMA wal_checkpoint(TRUNCATE)').get() as { busy: number }
      return r.busy !== 0
    })
    if (!busy || tries >= TRUNCATE_TRIES) return
    await sleep(TRUNCATE_PAUSE_MS)
  }
}
