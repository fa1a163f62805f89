/**
 * A message's rarely varying fields (encoding, content type, priority,
 * expiry, headers) with the stores' defaults applied: what the batches of a
 * sync share. The threaded SQLite store hands a batch over with each shape
 * once (batch-columns.ts); the PostgreSQL store binds a batch's one shape as
 * scalars (postgres.ts); both stores keep headers as JSON text.
 */
import type { WireMessage } from '../../protocol/batch.js'

export type MessageShape = Pick<WireMessage, 'enc' | 'expiresAt' | 'priority' | 'contentType'> & {
  headers: Record<string, string> | null
}

export function shapeOf(m: WireMessage): MessageShape {
  return {
    enc: m.enc,
    expiresAt: m.expiresAt ?? null,
    priority: m.priority ?? 4,
    contentType: m.contentType ?? null,
    headers: m.headers ?? null,
  }
}

export function sameShape(s: MessageShape, m: WireMessage): boolean {
  return (
    s.enc === m.enc &&
    s.expiresAt === (m.expiresAt ?? null) &&
    s.priority === (m.priority ?? 4) &&
    s.contentType === (m.contentType ?? null) &&
    (s.headers === (m.headers ?? null) ||
      (s.headers !== null && !!m.headers && JSON.stringify(s.headers) === JSON.stringify(m.headers)))
  )
}

/** Headers as the stores keep them: JSON text, or NULL. */
export function headersText(h: Record<string, string> | null | undefined): string | null {
  return h === null || h === undefined ? null : JSON.stringify(h)
}
