/**
 * Reads of the PostgreSQL broker store: pages with `more`/`head` (the same
 * semantics as sqlite-read.ts) and the held report. A topic filter becomes a
 * SQL condition (equality, a LIKE prefix, or a regular expression for `+`)
 * evaluated inside a bounded window of positions, so one read does at most
 * READ_MAX_ROWS rows of work and answers `more: true` when the window ended
 * before the head. There is no topic index here (yet): docs/broker-storage.md.
 */
import { holdFloor, liveSince } from './holders.js'
import type pgTypes from 'pg'
import {
  HELD_COUNT_MAX,
  HELD_NODES_MAX,
  READ_MAX_ROWS,
  type HeldQuery,
  type HeldReport,
  type ReadQuery,
  type ReadResult,
  type StoredMessage,
} from './types.js'

/** A SQL condition on `topic` for an MQTT filter (not `#`), with its parameters from `$first` on. */
export function topicCondition(filter: string, first: number): { sql: string; values: string[] } {
  const p = (i: number) => `$${first + i}`
  if (!/[+#]/.test(filter)) return { sql: `topic = ${p(0)}`, values: [filter] }
  const levels = filter.split('/')
  const last = levels[levels.length - 1]
  if (last === '#' && !levels.includes('+')) {
    // `a/b/#` matches `a/b` and everything below it. The column is COLLATE "C": LIKE is byte-wise.
    const parent = levels.slice(0, -1).join('/')
    const like = parent.replace(/[\\%_]/g, (c) => '\\' + c) + '/%'
    return { sql: `(topic = ${p(0)} OR topic LIKE ${p(1)})`, values: [parent, like] }
  }
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const fixed = levels.filter((l) => l !== '#').map((l) => (l === '+' ? '[^/]*' : escape(l)))
  let re = '^' + fixed.join('/')
  if (last === '#') re += levels.length === 1 ? '.*' : '(/.*)?'
  return { sql: `topic ~ ${p(0)}`, values: [re + '$'] }
}

export interface PgReadDeps {
  pool: Pick<pgTypes.Pool, 'query'>
  columns: string
  fromRow: (row: never) => StoredMessage
}

export async function pgRead(d: PgReadDeps, q: ReadQuery): Promise<ReadResult> {
  // The head first: every position at or below a committed head is given (release passes, one at a time).
  const meta = (
    await d.pool.query<{ watermark: number | null; next_position: number; next_arrival: number }>(
      'SELECT watermark, next_position, next_arrival FROM rmq_meta WHERE id = 1',
    )
  ).rows[0]
  const head = (q.order === 'event' ? meta.next_position : meta.next_arrival) - 1
  const done = (messages: StoredMessage[], next: number): ReadResult => ({
    messages,
    next,
    more: next < head,
    head,
    watermark: meta.watermark,
  })
  if (q.after >= head) return done([], q.after)
  const col = q.order === 'event' ? 'position' : 'arrival'
  const all = q.topic === undefined || q.topic === '#'
  const to = all ? head : Math.min(head, q.after + READ_MAX_ROWS)
  const cond = all ? { sql: 'true', values: [] } : topicCondition(q.topic!, 4)
  const rows = (
    await d.pool.query({
      name: all ? `rmq_read_${q.order}` : undefined,
      // The page is found in rmq_order alone (positions, topic); only its rows are joined.
      text: `SELECT ${d.columns} FROM (
               SELECT arrival, node, epoch, seq, position, late FROM rmq_order
               WHERE ${col} > $1 AND ${col} <= $2 AND ${cond.sql} ORDER BY ${col} LIMIT $3) o
             JOIN rmq_message_rows m ON m.node = o.node AND m.epoch = o.epoch AND m.seq = o.seq ORDER BY o.${col}`,
      values: [q.after, to, q.limit, ...cond.values],
    })
  ).rows
  const messages = rows.map((r) => d.fromRow(r as never))
  const key = (m: StoredMessage) => (q.order === 'event' ? m.position! : m.arrival)
  return done(messages, messages.length === q.limit ? key(messages[messages.length - 1]) : to)
}

export async function pgHeldBack(pool: Pick<pgTypes.Pool, 'query'>, q: HeldQuery): Promise<HeldReport> {
  const all = q.topic === undefined || q.topic === '#'
  const cond = all ? { sql: 'true', values: [] } : topicCondition(q.topic!, 2)
  const r = (
    await pool.query<{ scanned: number; n: number; newest: string | null }>(
      `SELECT COUNT(*)::int AS scanned, (COUNT(*) FILTER (WHERE ${cond.sql}))::int AS n,
         MAX(ts) FILTER (WHERE ${cond.sql}) AS newest FROM (
         SELECT ts, topic FROM rmq_order WHERE position IS NULL ORDER BY ts, node, seq, epoch LIMIT $1) h`,
      [HELD_COUNT_MAX + 1, ...cond.values],
    )
  ).rows[0]
  const capped = r.scanned > HELD_COUNT_MAX
  if ((r.n === 0 && !capped) || (r.newest === null && !capped)) return { count: 0, capped: false, nodes: [] }
  let newest = Number(r.newest)
  if (capped) {
    const max = (await pool.query<{ m: string }>('SELECT MAX(ts) AS m FROM rmq_order WHERE position IS NULL'))
      .rows[0].m
    newest = Number(max)
  }
  const nodes = (
    await pool.query<{ node: string; low_mark: string; last_contact: string }>(
      `SELECT node, low_mark, last_contact FROM rmq_nodes
       WHERE NOT direct AND last_contact >= $1 AND low_mark >= $2 AND low_mark <= $3
       ORDER BY low_mark, node LIMIT $4`,
      [liveSince(q), holdFloor(q), newest, HELD_NODES_MAX],
    )
  ).rows.map((n) => ({ node: n.node, lowMark: Number(n.low_mark), lastContact: Number(n.last_contact) }))
  return { count: Math.min(r.n, HELD_COUNT_MAX), capped, nodes }
}
