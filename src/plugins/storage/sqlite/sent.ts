/**
 * Marking messages sent: queue rows deleted by runs of consecutive seqs, one
 * `sent` row per run, with the counters and state of commitSent in the same
 * transaction; and failed attempts.
 */
import type { SentExtras } from '../../../core/storage/driver.js'
import { sortedRuns } from '../../../core/storage/seq-runs.js'
import type { SqliteConnection } from './connection.js'
import { ANY_PRIORITY } from './rows.js'
import { addCountersIn, setStateIn } from './state.js'

/** markSent: up to this many runs of consecutive seqs get one range DELETE each; more go as one json_each list. */
const MAX_RANGES = 8

/**
 * Set-based: one DELETE of queue rows per run of consecutive seqs (a sync
 * batch is usually one run), or one for the whole list through json_each;
 * each run of seqs that really were pending becomes one `sent` row. The
 * message rows themselves are not touched. `extras` commit with them.
 */
export async function commitSent(
  c: SqliteConnection,
  seqs: number[],
  sentAt: number,
  extras: SentExtras,
): Promise<number> {
  const ranges = seqs.length > 0 ? sortedRuns(seqs) : []
  return c.write(() => {
    let n = 0
    if (ranges.length > 0) n = markSentIn(c, ranges, seqs, sentAt)
    if (extras.counters) addCountersIn(c, extras.counters)
    for (const [k, v] of Object.entries(extras.state ?? {})) setStateIn(c, k, v)
    return n
  })
}

export function markSentIn(
  c: SqliteConnection,
  ranges: Array<[number, number]>,
  seqs: number[],
  sentAt: number,
): number {
  const del = (sql: string, ...args: unknown[]) =>
    c
      .stmt(sql)
      .raw()
      .all(...args) as Array<[number, number]>
  let n = 0
  let bytes = 0
  const changed: Array<[number, number]> = []
  const take = (first: number, last: number, rows: () => Array<[number, number]>) => {
    // Whole run still pending (the usual case): count and sum in SQL, no row comes back.
    const agg = c
      .stmt(
        `SELECT count(*) AS n, coalesce(sum(size), 0) AS bytes FROM pending WHERE ${ANY_PRIORITY} AND seq BETWEEN ? AND ?`,
      )
      .get(first, last) as { n: number; bytes: number }
    if (agg.n === last - first + 1) {
      c.stmt(`DELETE FROM pending WHERE ${ANY_PRIORITY} AND seq BETWEEN ? AND ?`).run(first, last)
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
  const ins = c.stmt('INSERT INTO sent (first, last, sent_at) VALUES (?, ?, ?)')
  for (const [first, last] of changed) ins.run(first, last, sentAt)
  c.stmt(
    `UPDATE queue_totals SET pending = pending - ?, pending_bytes = pending_bytes - ?, sent = sent + ?,
       sent_bytes = sent_bytes + ?, sent_total = sent_total + ? WHERE id = 1`,
  ).run(n, bytes, n, bytes, n)
  return n
}

export async function recordAttempt(c: SqliteConnection, seqs: number[]): Promise<void> {
  if (seqs.length === 0) return
  c.write(() => {
    const upd = c.stmt(`UPDATE pending SET attempts = attempts + 1 WHERE ${ANY_PRIORITY} AND seq = ?`)
    for (const seq of seqs) upd.run(seq)
  })
}
