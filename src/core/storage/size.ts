/**
 * Size accounting every storage driver shares, so that `storage.maxBytes`
 * means the same for `sqlite`, `memory` and third-party drivers. Part of the
 * storage contract (docs/storage.md, "Size accounting").
 */
import type { NewMessage } from './driver.js'

/** Estimated per-message cost of the row, its indexes and metadata, in bytes. */
export const MESSAGE_OVERHEAD_BYTES = 64

/** Accounted size of a message: payload + topic + content type + headers + fixed overhead. */
export function accountedSize(m: NewMessage, headersJson: string | null = null): number {
  return (
    m.payload.byteLength +
    Buffer.byteLength(m.topic, 'utf8') +
    (m.contentType ? Buffer.byteLength(m.contentType, 'utf8') : 0) +
    (headersJson ? Buffer.byteLength(headersJson, 'utf8') : 0) +
    MESSAGE_OVERHEAD_BYTES
  )
}
