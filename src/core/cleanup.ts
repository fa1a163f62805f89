/**
 * `rmq cleanup` as a library: delete sent messages older than
 * cleanup.sentRetention and expired messages (sent or not), apply
 * storage.maxBytes / maxMessages under the overflow policy, then give the
 * freed pages back to the file system (incremental vacuum in steps, WAL
 * checkpoint TRUNCATE) so the database file shrinks.
 *
 * Every write is a short transaction, sized so that it holds the write lock
 * for about `targetTxMs`, followed by a pause at least as long, so that a
 * `rmq publish` running at the same moment waits a few milliseconds at most.
 * A pending message that has not expired is deleted only under
 * storage.overflow=drop-oldest when the store is over its limits (counted as
 * dropped). Operations guide: docs/operations.md.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { edgeNow } from '../shared/clock.js'
import type { RmqConfig } from './config/schema.js'
import { failpoint } from '../shared/failpoints.js'
import { Lease } from './lease.js'
import type { StorageDriver } from './storage/driver.js'

export const CLEANUP_LEASE = 'cleanup'

export interface CleanupOptions {
  /** Clock for retention and expiry, epoch ms (default: Date.now()). */
  now?: number
  /** Count what would be deleted; change nothing. */
  dryRun?: boolean
  /** Called after every step (throttle it yourself for display). */
  onProgress?: (p: CleanupProgress) => void
  /** Stop between two transactions; the result says `interrupted`. */
  signal?: AbortSignal
  /** How long one write transaction should hold the lock (default 1.5 ms). */
  targetTxMs?: number
  /** Rows deleted by the first transaction; later ones adapt to targetTxMs (default 100). */
  initialRows?: number
  /** Pages moved by the first vacuum step; later ones adapt (default 64). */
  initialPages?: number
}

export type CleanupPhase = 'purge' | 'limits' | 'compact'

export interface CleanupProgress {
  phase: CleanupPhase
  sentDeleted: number
  expiredDeleted: number
  dropped: number
  /** Free pages still to give back (compact phase). */
  freePages?: number
}

export interface CleanupResult {
  /** `locked`: another cleanup holds the store's cleanup lease; this run did nothing. */
  status: 'ok' | 'locked'
  dryRun: boolean
  /** Sent messages with sentAt before this (epoch ms) are deleted. */
  sentBefore: number
  sentRetentionMs: number
  /** Sent messages deleted (past retention, or expired). */
  sentDeleted: number
  /** Pending messages deleted because they expired (never sent). */
  expiredDeleted: number
  /** Pending messages dropped to meet the limits (storage.overflow=drop-oldest only). */
  dropped: number
  /** Sent or expired messages deleted to meet the limits, beyond the retention rule. */
  limitDeleted: number
  /** Accounted bytes (payload + metadata) of what was deleted (dry run: would be). */
  bytesFreed: number
  /** Database file + WAL on disk before and after; null for drivers without a file. */
  fileBytesBefore: number | null
  fileBytesAfter: number | null
  fileBytesFreed: number | null
  /** What stays in the store (dry run: what would stay before the limits apply). */
  remaining: { messages: number; bytes: number; pending: number; sentKept: number }
  limits: {
    maxBytes: number
    maxMessages: number
    overflow: 'reject' | 'drop-oldest'
    /** Dry run: how far over the limits the store stays after the deletions above. */
    overBytes: number
    overMessages: number
  }
  /** Write transactions run, and the longest one (ms of work inside it where the driver reports it). */
  transactions: number
  longestTransactionMs: number
  durationMs: number
  interrupted: boolean
}

/**
 * Sizes steps so each holds the write lock about `targetMs`, and paces them.
 * The time per unit (row, page) is a moving average that outliers barely move:
 * a step that first waited for a publisher's lock, or lost the CPU, says
 * little about the cost of the work itself.
 */
class Pacer {
  transactions = 0
  longestMs = 0
  private perUnitMs: number | undefined
  constructor(
    private size: number,
    private readonly targetMs: number,
    private readonly min: number,
    private readonly max: number,
  ) {}

  get next(): number {
    return Math.round(this.size)
  }

  /** `work` extracts the time the step held the lock, when the driver reports it. */
  async step<T>(fn: (size: number) => Promise<T>, work?: (out: T) => number | undefined): Promise<T> {
    const size = this.next
    const started = performance.now()
    const out = await fn(size)
    const ms = performance.now() - started
    const workMs = work?.(out) ?? ms
    this.transactions++
    this.longestMs = Math.max(this.longestMs, workMs)
    const sample = workMs / size
    this.perUnitMs =
      this.perUnitMs === undefined
        ? sample
        : 0.8 * this.perUnitMs + 0.2 * Math.min(sample, 1.5 * this.perUnitMs)
    this.size = Math.min(this.max, Math.max(this.min, this.targetMs / this.perUnitMs))
    // A waiting writer's busy handler retries 1, 3, 8, 18, 33 ms after it first found the lock taken.
    // Pausing at least twice as long as the step means its next retry finds the lock free: with
    // ~1.5 ms steps a concurrent publish waits about 3 ms at most. Jitter avoids lock-step aliasing.
    await sleep(Math.max(2, 2 * Math.min(ms, 15)) * (1 + Math.random() / 2))
    return out
  }
}

/** Open the outbox for cleanup, run it, close it. What `rmq cleanup` calls. */
export async function cleanupOutbox(
  config: RmqConfig,
  cwd: string,
  options: CleanupOptions = {},
): Promise<CleanupResult> {
  const { openOutbox } = await import('./outbox.js')
  // Deletions need no fsync each: a power cut can only undo the last ones, and the next run redoes them.
  // Publishers keep their own synchronous=FULL connection, so acknowledged writes stay durable.
  const driver = await openOutbox(config, cwd, { durability: 'normal' })
  try {
    return await runCleanup(driver, config, options)
  } finally {
    await driver.close()
  }
}

/**
 * Run one cleanup on an open outbox. Open it with durability `normal` as
 * cleanupOutbox() does: on a `full` connection every step waits for an fsync.
 */
export async function runCleanup(
  driver: StorageDriver,
  config: RmqConfig,
  options: CleanupOptions = {},
): Promise<CleanupResult> {
  const started = performance.now()
  const now = options.now ?? edgeNow()
  const retention = config.cleanup.sentRetention
  const { maxBytes, maxMessages, overflow } = config.storage
  const before = await driver.stats(now)
  const res: CleanupResult = {
    status: 'ok',
    dryRun: Boolean(options.dryRun),
    sentBefore: now - retention,
    sentRetentionMs: retention,
    sentDeleted: 0,
    expiredDeleted: 0,
    dropped: 0,
    limitDeleted: 0,
    bytesFreed: 0,
    fileBytesBefore: before.fileBytes,
    fileBytesAfter: before.fileBytes,
    fileBytesFreed: before.fileBytes === null ? null : 0,
    remaining: { messages: 0, bytes: 0, pending: 0, sentKept: 0 },
    limits: { maxBytes, maxMessages, overflow, overBytes: 0, overMessages: 0 },
    transactions: 0,
    longestTransactionMs: 0,
    durationMs: 0,
    interrupted: false,
  }
  const finish = () => {
    res.durationMs = Math.round(performance.now() - started)
    return res
  }

  if (options.dryRun) {
    const p = await driver.purge({
      sentBefore: res.sentBefore,
      now,
      limit: Number.MAX_SAFE_INTEGER,
      dryRun: true,
    })
    res.sentDeleted = p.sentDeleted
    res.expiredDeleted = p.expiredDeleted
    res.bytesFreed = p.bytesFreed
    const messages = before.totalMessages - p.sentDeleted - p.expiredDeleted
    const bytes = before.totalBytes - p.bytesFreed
    res.remaining = { messages, bytes, pending: before.pending, sentKept: before.sentKept - p.sentDeleted }
    res.limits.overBytes = Math.max(0, bytes - maxBytes)
    res.limits.overMessages = maxMessages > 0 ? Math.max(0, messages - maxMessages) : 0
    res.fileBytesAfter = null
    res.fileBytesFreed = null
    return finish()
  }

  // Overlapping runs (a slow cleanup and the next timer) would only compete for the lock: one works.
  // A cleanup killed mid-run leaves its lease behind: it is taken over at once when its process is gone.
  const lease = new Lease(driver, CLEANUP_LEASE, { ttlMs: 60_000 })
  if (!(await lease.take())) {
    res.status = 'locked'
    return finish()
  }
  // Renewed between steps; a cleanup that lost it (expired) just finishes its step.
  const keepLease = () => lease.renew()
  const stop = () => {
    if (options.signal?.aborted) res.interrupted = true
    return res.interrupted
  }
  const progress = (phase: CleanupPhase, freePages?: number) =>
    options.onProgress?.({
      phase,
      sentDeleted: res.sentDeleted,
      expiredDeleted: res.expiredDeleted,
      dropped: res.dropped,
      freePages,
    })
  const target = options.targetTxMs ?? 1.5
  const rows = new Pacer(options.initialRows ?? 100, target, 10, 20_000)

  try {
    // 1. Retention and expiry, a few hundred rows per transaction.
    while (!stop()) {
      const limit = rows.next
      const p = await rows.step(
        (n) => driver.purge({ sentBefore: res.sentBefore, now, limit: n }),
        (r) => r.workMs,
      )
      res.sentDeleted += p.sentDeleted
      res.expiredDeleted += p.expiredDeleted
      res.bytesFreed += p.bytesFreed
      progress('purge')
      await failpoint('cleanup.after-step')
      await keepLease()
      if (p.sentDeleted + p.expiredDeleted < limit) break
    }

    // 2. Limits (after limits were lowered, or a store filled while nothing was sent).
    while (!stop()) {
      const limit = rows.next
      const statsBefore = await driver.stats(now)
      const e = await rows.step((n) => driver.enforceLimits({ limit: n }))
      // Drivers that do not report the rows they deleted do all the work in one call.
      const statsAfter = e.deleted === undefined ? await driver.stats(now) : statsBefore
      const deleted = e.deleted ?? Math.max(0, statsBefore.totalMessages - statsAfter.totalMessages)
      res.dropped += e.dropped
      res.limitDeleted += deleted - e.dropped
      res.bytesFreed += e.bytesFreed ?? Math.max(0, statsBefore.totalBytes - statsAfter.totalBytes)
      progress('limits')
      await keepLease()
      if (e.deleted === undefined || deleted < limit) break
    }

    // 3. Give the space back: incremental vacuum in steps, then a WAL checkpoint (TRUNCATE).
    const pages = new Pacer(options.initialPages ?? 64, target, 8, 8192)
    while (!stop()) {
      const c = await pages.step((n) => driver.compact({ maxPages: n }))
      if (c.fileBytesAfter !== null) res.fileBytesAfter = c.fileBytesAfter
      progress('compact', c.freePages ?? 0)
      await keepLease()
      if (!c.freePages) break
    }
    res.transactions = rows.transactions + pages.transactions
    res.longestTransactionMs = Math.round(Math.max(rows.longestMs, pages.longestMs) * 100) / 100
  } finally {
    await lease.release()
  }

  const after = await driver.stats(now)
  res.remaining = {
    messages: after.totalMessages,
    bytes: after.totalBytes,
    pending: after.pending,
    sentKept: after.sentKept,
  }
  res.limits.overBytes = Math.max(0, after.totalBytes - maxBytes)
  res.limits.overMessages = maxMessages > 0 ? Math.max(0, after.totalMessages - maxMessages) : 0
  if (res.fileBytesBefore !== null && res.fileBytesAfter !== null)
    res.fileBytesFreed = res.fileBytesBefore - res.fileBytesAfter
  return finish()
}
