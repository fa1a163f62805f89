import { encodePayload, type WireMessage } from '../protocol/batch.js'
import type { StoredMessage } from './storage/driver.js'

/*
 * The one step from the edge's stored row to the wire: it lives in core, not
 * in the protocol module, because it reads the outbox's StoredMessage type
 * and the protocol sits below core.
 */

/** One wire message from an outbox row. */
export function toWireMessage(m: StoredMessage): WireMessage {
  const { payload, enc } = encodePayload(m.payload)
  const w: WireMessage = {
    seq: m.seq,
    topic: m.topic,
    ts: m.ts,
    payload,
    enc,
    expiresAt: m.expiresAt,
    priority: m.priority,
    contentType: m.contentType,
  }
  if (m.headers) w.headers = m.headers
  return w
}
