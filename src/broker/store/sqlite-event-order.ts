/**
 * The messages the fast ingest path accepts (Fresh), and the event order in
 * which it releases them: (ts, node, seq, epoch) in SQLite's byte order of
 * text, the same order as the releaseUpTo statement's ORDER BY.
 */
import type { WireMessage } from '../../protocol/batch.js'

/** An accepted message on the fast ingest path, in arrival order (with its event-order key). */
export interface Fresh {
  ts: number
  node: string
  seq: number
  epoch: string
  stream: number
  topicId: number
  m: WireMessage
  /** m.headers as stored (JSON text or null). */
  headers: string | null
  receivedAt: number
  late: number
  arrival: number
  position: number | null
}

/** Everything but arrival, seq, topic, ts and payload is the same: one bulk INSERT can hold both. */
export function sameShape(a: Fresh, b: Fresh): boolean {
  return (
    a.stream === b.stream &&
    a.m.enc === b.m.enc &&
    (a.m.contentType ?? null) === (b.m.contentType ?? null) &&
    (a.m.priority ?? 4) === (b.m.priority ?? 4) &&
    (a.m.expiresAt ?? null) === (b.m.expiresAt ?? null) &&
    a.headers === b.headers &&
    a.receivedAt === b.receivedAt &&
    a.late === b.late
  )
}

/** SQLite's BINARY order of TEXT (UTF-8 bytes, i.e. code points), not JS's UTF-16 code units. */
export function compareText(a: string, b: string): number {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x === y) continue
    // Surrogates (astral code points) sort after U+E000..U+FFFF in code point order.
    if (x >= 0xd800) x = x <= 0xdfff ? x + 0x2000 : x - 0x800
    if (y >= 0xd800) y = y <= 0xdfff ? y + 0x2000 : y - 0x800
    return x - y
  }
  return a.length - b.length
}

/** The event order: (ts, node, seq, epoch), as ORDER BY in releaseUpTo. */
export function compareEvent(
  a: { ts: number; node: string; seq: number; epoch: string },
  b: { ts: number; node: string; seq: number; epoch: string },
): number {
  return a.ts - b.ts || compareText(a.node, b.node) || a.seq - b.seq || compareText(a.epoch, b.epoch)
}
