/**
 * The edge outbox plugin interface, owned by core. Built-ins (in
 * src/plugins/storage/): `sqlite` (default) and `memory`; third parties
 * export a `StorageFactory` as their default export. Every driver must pass
 * the conformance suite (src/testing/, `rmq/testing`). The optional methods are fast
 * paths: core uses drivers only through completeDriver()
 * (./complete-driver.ts), which builds each missing one from the basic
 * methods.
 */
export type MessageStatus = 'pending' | 'sent'

/**
 * Why a driver's operation failed, as data (`details.problem` of its error)
 * where the fix is a command of the CLI (src/cli/advice.ts words it):
 * 'outbox-corrupt', the store is damaged (CorruptStoreError, exit 70).
 */
export type StorageProblem = 'outbox-corrupt'

export interface NewMessage {
  topic: string
  payload: Uint8Array
  /** Original generation time, epoch ms. */
  ts: number
  contentType?: string | null
  /** Epoch ms after which the message is never sent and may be deleted. */
  expiresAt?: number | null
  /** 0 (lowest) to 9 (highest); default 4. */
  priority?: number
  headers?: Record<string, string> | null
}

export interface StoredMessage {
  seq: number
  topic: string
  payload: Buffer
  contentType: string | null
  ts: number
  /** When the outbox accepted it, epoch ms. */
  arrivedAt: number
  expiresAt: number | null
  priority: number
  headers: Record<string, string> | null
  status: MessageStatus
  sentAt: number | null
  /** Send attempts so far (successful or not). */
  attempts: number
  /** Accounted size in bytes (payload + topic + metadata). */
  size: number
}

export interface AppendResult {
  /** Sequence numbers given to the appended messages, in order. */
  seqs: number[]
  /** Pending messages removed to make room (overflow=drop-oldest). */
  dropped: number
}

export interface BatchQuery {
  /** Most messages. */
  limit: number
  /** Most accounted bytes; at least one message is returned even if it alone is larger. */
  maxBytes: number
  /**
   * Both orders put higher priority first. Within a priority, `oldest` is
   * arrival order (normal drain) and `newest` is newest first (thin link).
   */
  order: 'oldest' | 'newest'
  /** Messages with expiresAt <= now are never returned. */
  now: number
}

/** What `pendingRuns` is asked: a BatchQuery that skips the batch in flight. */
export interface RunQuery extends BatchQuery {
  /**
   * Per priority (index 0-9): seqs [lo, hi] to skip, those of the batch in
   * flight. Seqs only grow, so what is pending in that range at that
   * priority is either in the batch or not sendable (expired).
   */
  skip?: Array<[number, number] | undefined>
}

/** A run of consecutive seqs of one priority, all pending, as `pendingRuns` returns them. */
export interface PendingRun {
  priority: number
  /** First and last seq in send order: first > last when newest first. */
  first: number
  last: number
  /** |last - first| + 1. */
  count: number
  /** Accounted bytes (StoredMessage.size) of the run. */
  bytes: number
  /** Oldest ts in the run. */
  minTs: number
}

/** The wire form of some messages (`wireJson`). */
export interface WireJson {
  /** Each message's WireMessage JSON (src/protocol/batch.ts), joined by `,`, UTF-8. */
  json: Buffer
  /** Messages in `json`: fewer than asked when some were deleted meanwhile. */
  count: number
}

/** Some messages as frames (`wireFrames`, FRAMES_CONTENT_TYPE in src/protocol/batch.ts). */
export interface WireFrames {
  /** Each message's WireMessage JSON with `size` in place of `payload`, joined by `,`, UTF-8. */
  json: Buffer
  /** The payloads' UTF-8 text, back to back, in the same order. */
  payloads: Buffer
  count: number
}

/** What `commitSent` writes in the same transaction as the sent marks. */
export interface SentExtras {
  /** Added to the named counters (as addCounters). */
  counters?: Record<string, number>
  /** State keys to set (undefined: delete), as setState. */
  state?: Record<string, string | undefined>
}

export interface PurgeQuery {
  /** Delete sent messages with sentAt < sentBefore. */
  sentBefore: number
  /** Delete messages (sent or not) with expiresAt <= now. */
  now: number
  /** Most rows deleted by this call: callers loop, so each transaction stays short. */
  limit: number
  /** Count only, delete nothing. */
  dryRun?: boolean
}

export interface PurgeResult {
  sentDeleted: number
  expiredDeleted: number
  bytesFreed: number
  /** Time the deletion itself took inside the transaction (not waiting for the lock), when known. */
  workMs?: number
}

export interface StorageStats {
  epoch: string
  pending: number
  pendingBytes: number
  oldestPendingTs: number | null
  oldestPendingArrivedAt: number | null
  /** Sent messages still kept (retention). */
  sentKept: number
  /** Messages currently stored, pending or sent. */
  totalMessages: number
  /** Accounted bytes currently stored. */
  totalBytes: number
  /** Bytes the store takes on disk, when it has a file. */
  fileBytes: number | null
  /** Counters since the store was created. */
  appendedTotal: number
  sentTotal: number
  /** Pending messages that expired unsent and were removed (by cleanup, or to make room). */
  expiredTotal: number
  /**
   * Pending messages past their TTL that are still stored, waiting for
   * cleanup: never sent, so lost like those in expiredTotal. Optional for
   * third-party drivers (0 when left out).
   */
  expiredPending?: number
  droppedTotal: number
  maxBytes: number
  maxMessages: number
}

export interface StorageCapabilities {
  /** Survives process exit and power loss (when durability=full). */
  durable: boolean
  /** Several processes may open the same store at once. */
  multiProcess: boolean
}

export interface StorageOptions {
  /** File path for file-backed drivers. */
  path: string
  maxBytes: number
  /** 0: no limit. */
  maxMessages: number
  overflow: 'reject' | 'drop-oldest'
  durability: 'full' | 'normal'
  /** Clock for arrivedAt/sentAt; tests inject it. */
  now?: () => number
  /**
   * Open for reading only (`rmq messages`, `rmq status`): never writes, never
   * migrates, never blocks a running publish or sync. Drivers without files ignore it.
   */
  readOnly?: boolean
}

/** What an operator asks of the outbox (`rmq messages`): newest first unless `order: 'asc'`. */
export interface BrowseQuery {
  status: 'pending' | 'sent' | 'expired' | 'all'
  /** Event-time bounds (ts), inclusive `since`, exclusive `until`. */
  since?: number
  until?: number
  /** Continue after (asc) or before (desc) this seq. */
  afterSeq?: number
  order: 'asc' | 'desc'
  limit: number
  /** Messages past `expiresAt` at this time count as expired. */
  now: number
  /** Keep only messages whose topic passes (an MQTT filter, applied by the caller's matcher). */
  match?: (topic: string) => boolean
}

/** A stored message as the operator sees it: pending, sent, or expired (past its TTL, not yet removed). */
export interface BrowsedMessage extends Omit<StoredMessage, 'status'> {
  status: 'pending' | 'sent' | 'expired'
}

export interface StorageDriver {
  readonly name: string
  readonly capabilities: StorageCapabilities
  /** Random UUID made when the store was created; changes only by renewEpoch. */
  readonly epoch: string
  /** Append atomically: all messages or none. Throws StorageFullError when full under overflow=reject. */
  append(messages: NewMessage[]): Promise<AppendResult>
  nextBatch(query: BatchQuery): Promise<StoredMessage[]>
  /**
   * Optional fast path of nextBatch for sync, offered together with
   * `wireJson`: the same messages in the same order, as runs of consecutive
   * seqs and without their contents, so that nothing is built for a message
   * that is only forwarded.
   */
  pendingRuns?(query: RunQuery): Promise<PendingRun[]>
  /**
   * The wire form of the messages with these seqs, in the order given
   * (seqs no longer stored are left out). Offered with `pendingRuns`.
   */
  wireJson?(seqs: number[]): Promise<WireJson>
  /** Optional: the same messages as `wireJson`, as frames (the broker's `frames` feature). */
  wireFrames?(seqs: number[]): Promise<WireFrames>
  /**
   * Optional: the oldest ts among pending, unexpired messages whose seq lies
   * outside every `exclude` range [first, last] (null when there is none).
   * Sync uses it to report the backlog left after a batch precisely; without
   * it, stats().oldestPendingTs (which counts the batch itself) is used.
   */
  oldestPendingTs?(now: number, exclude: Array<[number, number]>): Promise<number | null>
  /** Mark as sent; returns how many changed from pending to sent. */
  markSent(seqs: number[], sentAt: number): Promise<number>
  /**
   * Optional: markSent, addCounters and setState of `extras` in one
   * transaction (one commit per acknowledged batch instead of three).
   */
  commitSent?(seqs: number[], sentAt: number, extras: SentExtras): Promise<number>
  /** Count one failed attempt on each message. */
  recordAttempt(seqs: number[]): Promise<void>
  purge(query: PurgeQuery): Promise<PurgeResult>
  /**
   * Apply maxBytes/maxMessages under the overflow policy now (after limits were
   * lowered): expired, then sent, then (drop-oldest) oldest pending messages.
   * `limit` bounds the rows one call deletes (callers loop while `deleted`
   * reaches it); `deleted` counts every row removed, `dropped` the pending
   * ones, `bytesFreed` their accounted bytes.
   */
  enforceLimits(opts?: {
    limit?: number
  }): Promise<{ dropped: number; deleted?: number; bytesFreed?: number }>
  /**
   * Give freed pages back to the file system; returns file sizes before and
   * after. `maxPages` bounds the work of one call (one short transaction):
   * callers loop while `freePages` > 0. Drivers without a file return nulls.
   */
  compact(opts?: {
    maxPages?: number
  }): Promise<{ fileBytesBefore: number | null; fileBytesAfter: number | null; freePages?: number }>
  stats(now: number): Promise<StorageStats>
  /**
   * Optional: stored messages of every status for an operator (`rmq messages`),
   * by seq, at most `limit`. Without it only pending messages can be listed
   * (completeDriver builds that from nextBatch).
   */
  browse?(query: BrowseQuery): Promise<BrowsedMessage[]>
  /**
   * Optional: give the store a new random epoch (`rmq outbox rename-node`),
   * so that its next seqs form a new stream at the broker. The only change of
   * an epoch there is; `epoch` reads the new one afterwards.
   */
  renewEpoch?(): Promise<string>
  /**
   * Optional: check the store's integrity (`rmq doctor`): quick by default,
   * thorough with `full`. Returns the problems found (none: healthy) and the
   * schema version when the store has one.
   */
  checkIntegrity?(
    full: boolean,
  ): Promise<{ problems: string[]; schemaVersion?: number; currentSchemaVersion?: number }>
  getState(key: string): Promise<string | undefined>
  setState(key: string, value: string | undefined): Promise<void>
  /** Add to named counters atomically (sync statistics). */
  addCounters(deltas: Record<string, number>): Promise<void>
  getCounters(): Promise<Record<string, number>>
  /**
   * Take a named lease if it is free or expired; true when this owner holds it.
   * Used so overlapping `rmq sync` runs never send the same batch at once.
   */
  acquireLease(name: string, owner: string, ttlMs: number, now: number): Promise<boolean>
  releaseLease(name: string, owner: string): Promise<void>
  close(): Promise<void>
}

export type StorageFactory = (options: StorageOptions) => StorageDriver | Promise<StorageDriver>
