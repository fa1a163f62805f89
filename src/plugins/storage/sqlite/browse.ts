/**
 * The operator's listing (`rmq messages`): stored messages of any status, by
 * seq, with the same status rule as the `outbox` view (schema.ts) but with the
 * caller's clock. Rows stream from SQLite one at a time, so a topic filter
 * that matches little never loads the whole file.
 */
import type { BrowseQuery, BrowsedMessage } from '../../../core/storage/driver.js'
import type { SqliteConnection } from './connection.js'
import { toStored, type Row } from './rows.js'
import { OUTBOX_FROM_SQL, outboxStatusSql } from './schema.js'

/** Rows a filtered listing may look at before it gives up on filling the page. */
const SCAN_MAX = 1_000_000

export async function browse(c: SqliteConnection, q: BrowseQuery): Promise<BrowsedMessage[]> {
  const where: string[] = []
  const params: Record<string, number | string> = { now: q.now }
  if (q.since !== undefined) {
    where.push('m.ts >= @since')
    params.since = q.since
  }
  if (q.until !== undefined) {
    where.push('m.ts < @until')
    params.until = q.until
  }
  if (q.afterSeq !== undefined) {
    where.push(`m.seq ${q.order === 'asc' ? '>' : '<'} @after`)
    params.after = q.afterSeq
  }
  const inner = `SELECT m.seq, m.topic, m.payload, m.content_type, m.ts, m.arrived_at, m.expires_at, m.priority,
       m.headers, coalesce(p.attempts, 0) AS attempts, m.size, s.sent_at, ${outboxStatusSql('@now')} AS status
     FROM ${OUTBOX_FROM_SQL}
     ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY m.seq ${q.order === 'asc' ? 'ASC' : 'DESC'}`
  const sql = q.status === 'all' ? inner : `SELECT * FROM (${inner}) WHERE status = @status`
  if (q.status !== 'all') params.status = q.status
  return c.guard(() => {
    const out: BrowsedMessage[] = []
    let scanned = 0
    for (const r of c.stmt(sql).iterate(params) as IterableIterator<
      Row & { sent_at: number | null; status: BrowsedMessage['status'] }
    >) {
      if (++scanned > SCAN_MAX || out.length >= q.limit) break
      if (q.match && !q.match(r.topic)) continue
      out.push({ ...toStored(r), status: r.status, sentAt: r.sent_at })
    }
    return out
  })
}
