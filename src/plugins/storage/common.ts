/**
 * Pieces the built-in storage drivers share: the wording of "store full"
 * errors, so `sqlite` and `memory` report limits the same way. Size
 * accounting is part of the contract: core/storage/size.ts.
 */
import { StorageFullError } from '../../shared/errors.js'
import { formatBytes } from '../../shared/units.js'
import type { StorageOptions } from '../../core/storage/driver.js'

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
