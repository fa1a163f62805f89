/**
 * Reading the queue: batches (nextBatch, and pendingRuns from the narrow
 * pending table alone), the oldest pending ts outside the batches in flight,
 * and stats from the running totals.
 */
import type {
  BatchQuery,
  PendingRun,
  RunQuery,
  StorageStats,
  StoredMessage,
} from '../../../core/storage/driver.js'
import type { SqliteConnection } from './connection.js'
import { PRIORITIES_DESC, ROW_COLUMNS, toStored, type Row } from './rows.js'

export async function nextBatch(c: SqliteConnection, q: BatchQuery): Promise<StoredMessage[]> {
  // Driven by the pending primary key (priority, seq); each message is one rowid lookup.
  const sql = `SELECT ${ROW_COLUMNS} FROM pending p CROSS JOIN messages m ON m.seq = p.seq
     WHERE p.priority = ? AND (p.expires_at IS NULL OR p.expires_at > ?)
     ORDER BY p.seq ${q.order === 'newest' ? 'DESC' : 'ASC'} LIMIT ?`
  const out: StoredMessage[] = []
  let bytes = 0
  return c.guard(() => {
    const sel = c.stmt(sql)
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
export async function pendingRuns(c: SqliteConnection, q: RunQuery): Promise<PendingRun[]> {
  const desc = q.order === 'newest'
  const dir = desc ? 'DESC' : 'ASC'
  const from = `FROM pending WHERE priority = ? AND seq BETWEEN ? AND ? AND (expires_at IS NULL OR expires_at > ?)
     ORDER BY seq ${dir} LIMIT ?`
  const out: PendingRun[] = []
  let n = 0
  let bytes = 0
  return c.guard(() => {
    const agg = c
      .stmt(
        `SELECT count(*), min(seq), max(seq), coalesce(sum(size), 0), min(ts) FROM (SELECT seq, size, ts ${from})`,
      )
      .raw()
    const rows = c.stmt(`SELECT seq, size, ts ${from}`).raw()
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
 * Walks the ts index past the excluded rows without reading a table row
 * for each (the index holds ts, priority, seq); only the row found is
 * checked for expiry, and the walk goes on past it in the rare case it
 * has expired.
 */
export async function oldestPendingTs(
  c: SqliteConnection,
  now: number,
  exclude: Array<[number, number]>,
): Promise<number | null> {
  const outside = ' AND seq NOT BETWEEN ? AND ?'.repeat(exclude.length)
  const bounds = exclude.flat()
  return c.guard(() => {
    const first = c
      .stmt(`SELECT ts, priority, seq FROM pending WHERE 1${outside} ORDER BY ts, priority, seq LIMIT 1`)
      .raw()
    const after = c
      .stmt(
        `SELECT ts, priority, seq FROM pending WHERE (ts, priority, seq) > (?, ?, ?)${outside} ORDER BY ts, priority, seq LIMIT 1`,
      )
      .raw()
    const expiry = c.stmt('SELECT expires_at FROM pending WHERE priority = ? AND seq = ?').pluck()
    let r = first.get(...bounds) as [number, number, number] | undefined
    for (let i = 0; r && i < 16; i++) {
      const e = expiry.get(r[1], r[2]) as number | null
      if (e === null || e > now) return r[0]
      r = after.get(r[0], r[1], r[2], ...bounds) as [number, number, number] | undefined
    }
    if (!r) return null
    // Many expired rows in a row (not purged yet): let SQLite check them all.
    const all = c
      .stmt(
        `SELECT ts FROM pending WHERE (expires_at IS NULL OR expires_at > ?)${outside} ORDER BY ts LIMIT 1`,
      )
      .pluck()
    return (all.get(now, ...bounds) as number | undefined) ?? null
  })
}

export async function stats(c: SqliteConnection, now: number): Promise<StorageStats> {
  return c.guard(() => {
    const t = c.totals()
    // Expired pending messages not purged yet: through messages_expiry, one pending probe each.
    const expired = c
      .stmt(
        `SELECT count(*) AS n, coalesce(sum(p.size), 0) AS bytes
       FROM messages m CROSS JOIN pending p ON p.priority = m.priority AND p.seq = m.seq
       WHERE m.expires_at <= ?`,
      )
      .get(now) as { n: number; bytes: number }
    // Plucked, as oldestPendingTs plucks the same SQL: the statement cache shares one statement
    // and pluck() is its mode, so read as a row here it came back as a bare number after that.
    const oldestTs = c
      .stmt('SELECT ts FROM pending WHERE (expires_at IS NULL OR expires_at > ?) ORDER BY ts LIMIT 1')
      .pluck()
      .get(now) as number | undefined
    const firstOfPriority = c.stmt(
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
      epoch: c.epoch,
      pending: t.pending - expired.n,
      pendingBytes: t.pending_bytes - expired.bytes,
      oldestPendingTs: oldestTs ?? null,
      oldestPendingArrivedAt: oldest?.arrived_at ?? null,
      sentKept: t.sent,
      totalMessages: t.pending + t.sent,
      totalBytes: t.pending_bytes + t.sent_bytes,
      fileBytes: c.fileBytes(),
      appendedTotal: t.appended_total,
      sentTotal: t.sent_total,
      expiredTotal: t.expired_total,
      expiredPending: expired.n,
      droppedTotal: t.dropped_total,
      maxBytes: c.opts.maxBytes,
      maxMessages: c.opts.maxMessages,
    }
  })
}
