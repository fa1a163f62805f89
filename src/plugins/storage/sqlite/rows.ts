/** Message rows as StoredMessage, and the column lists and priorities the queries share. */
import type { StoredMessage } from '../../../core/storage/driver.js'

export interface Row {
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
export const ROW_COLUMNS =
  'm.seq, m.topic, m.payload, m.content_type, m.ts, m.arrived_at, m.expires_at, m.priority, m.headers, p.attempts, m.size'
/** ROW_COLUMNS from `messages m` alone (a message read to forward it, not as a queue entry). */
export const MESSAGE_COLUMNS = ROW_COLUMNS.replace('p.attempts', '0 AS attempts')
/** `priority = ?` for every priority: the pending primary key is (priority, seq), sync knows only seqs. */
export const ANY_PRIORITY = 'priority IN (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)'
/** Priorities in send order. */
export const PRIORITIES_DESC = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]

export function toStored(r: Row): StoredMessage {
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
