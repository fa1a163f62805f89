/**
 * Pieces every storage driver shares: size accounting and the wording of
 * "store full" errors, so `sqlite`, `memory` and third-party drivers report
 * limits the same way.
 */
import { StorageFullError } from '../../core/errors.js'
import { formatBytes } from '../../core/units.js'
import type { NewMessage, StorageOptions } from './types.js'

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

/** A zero-copy Buffer view of any Uint8Array. */
export function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

export interface Fullness {
  totalMessages: number
  totalBytes: number
  pending: number
}

const FREE_SPACE =
  'run `rmq sync` to send pending messages, `rmq cleanup` to delete sent and expired ones, ' +
  'raise storage.maxBytes / storage.maxMessages, or set storage.overflow=drop-oldest'

/** The outbox reached storage.maxBytes / storage.maxMessages under overflow=reject (or one batch can never fit). */
export function limitError(
  opts: Pick<StorageOptions, 'maxBytes' | 'maxMessages' | 'overflow'>,
  now: Fullness,
  incoming: { messages: number; bytes: number },
): StorageFullError {
  const pct = opts.maxBytes > 0 ? Math.floor((now.totalBytes / opts.maxBytes) * 100) : 0
  const countPart = opts.maxMessages > 0 ? ` and ${now.totalMessages} of ${opts.maxMessages} messages` : ''
  const tooBig =
    incoming.bytes > opts.maxBytes || (opts.maxMessages > 0 && incoming.messages > opts.maxMessages)
  const msg = tooBig
    ? `the outbox can never hold this write: ${incoming.messages} message(s) of ${formatBytes(incoming.bytes)} ` +
      `exceed storage.maxBytes ${formatBytes(opts.maxBytes)}` +
      (opts.maxMessages > 0 ? ` / storage.maxMessages ${opts.maxMessages}` : '') +
      '; nothing was stored'
    : `the outbox is full: ${formatBytes(now.totalBytes)} of ${formatBytes(opts.maxBytes)} (${pct}%)${countPart} ` +
      `used, ${now.pending} message(s) pending; nothing from this write ` +
      `(${incoming.messages} message(s), ${formatBytes(incoming.bytes)}) was stored`
  return new StorageFullError(msg, {
    suggestion: tooBig
      ? 'raise storage.maxBytes / storage.maxMessages or publish smaller batches'
      : FREE_SPACE,
    details: {
      reason: 'limit',
      usedBytes: now.totalBytes,
      maxBytes: opts.maxBytes,
      messages: now.totalMessages,
      maxMessages: opts.maxMessages,
      pending: now.pending,
      incomingMessages: incoming.messages,
      incomingBytes: incoming.bytes,
      overflow: opts.overflow,
    },
  })
}

/** The file system is full (SQLITE_FULL, ENOSPC). */
export function diskFullError(where: string, now: Fullness | undefined, cause: unknown): StorageFullError {
  const held = now
    ? `; the outbox holds ${now.totalMessages} message(s), ${formatBytes(now.totalBytes)}, ${now.pending} pending`
    : ''
  return new StorageFullError(
    `the disk holding ${where} is full: nothing from this write was stored${held}`,
    {
      suggestion:
        'free disk space; run `rmq sync` then `rmq cleanup` to delete sent and expired messages; ' +
        'set storage.maxBytes below the free space (with storage.overflow=drop-oldest to keep the newest data)',
      details: { reason: 'disk', path: where, ...(now ?? {}) },
      cause,
    },
  )
}

/** Distinct seqs in any order as sorted [first, last] runs of consecutive seqs (ascending input is not copied). */
export function sortedRuns(seqs: ArrayLike<number>): Array<[number, number]> {
  let ascending = true
  for (let i = 1; i < seqs.length && ascending; i++) ascending = seqs[i] > seqs[i - 1]
  const sorted = ascending ? seqs : Float64Array.from(seqs).sort()
  const out: Array<[number, number]> = []
  for (let i = 0; i < sorted.length;) {
    let j = i
    while (j + 1 < sorted.length && sorted[j + 1] - sorted[j] <= 1) j++
    out.push([sorted[i], sorted[j]])
    i = j + 1
  }
  return out
}
