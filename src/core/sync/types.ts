/**
 * The sync engine's types (docs/sync.md): what callers pass and get back, and
 * the state one run shares between its parts (run.ts, batches.ts, settle.ts).
 */
import type { Codec } from '../compression/codec.js'
import type { StorageDriver } from '../storage/driver.js'
import type { CompleteDriver } from '../storage/complete-driver.js'
import type { BackoffState } from '../backoff.js'
import type { BrokerClient, EncodedBatch, PostOutcome } from '../broker-client.js'
import type { RmqConfig } from '../config/schema.js'

export const SYNC_LEASE = 'sync'
export const LAST_KEY = 'sync.last'
/** Counter names in the store (driver.addCounters). */
export const SYNC_COUNTERS = {
  attempts: 'sync.attempts',
  successes: 'sync.successes',
  failures: 'sync.failures',
  batches: 'sync.batches',
  heartbeats: 'sync.heartbeats',
  messagesSent: 'sync.messagesSent',
  bytesRaw: 'sync.bytesRaw',
  bytesWire: 'sync.bytesWire',
} as const

export interface SyncDeps {
  driver: StorageDriver
  config: RmqConfig
  /** Codec to use; resolved from compression.codec when omitted. */
  codec?: Codec
  /** A client to reuse (keep-alive) across runs, e.g. in --watch; made and closed per run when omitted. */
  client?: BrokerClient
  /** Directory module-specifier plugins resolve against. */
  cwd?: string
}

export interface SyncProgress {
  batches: number
  messages: number
  bytesRaw: number
  bytesWire: number
  /** Pending messages after the last batch. */
  pending: number
}

export interface SyncOptions {
  /** Ignore a backoff in force. */
  force?: boolean
  /** Stop after this many batches (0 or undefined: no limit). */
  maxBatches?: number
  /** Byte budget of this run on the wire; default sync.maxBytesPerRun (0: none). */
  budget?: number
  /** Bytes per second on the wire; default sync.rateLimit (0: none). */
  rateLimit?: number
  /** Stop before starting a batch after this time (epoch ms). */
  deadline?: number
  signal?: AbortSignal
  /** Send a heartbeat when there is nothing to send (default true). */
  heartbeat?: boolean
  /**
   * drain: on a retryable failure wait out the backoff and try again until
   * the deadline (instead of failing the run at once); wait for a lease held
   * by another run instead of leaving.
   */
  persistent?: boolean
  onProgress?: (p: SyncProgress) => void
  now?: () => number
  random?: () => number
}

export type SyncStatus = 'ok' | 'backoff' | 'locked'
export type StopReason = 'empty' | 'max-batches' | 'budget' | 'deadline' | 'aborted' | 'lease-lost'

export interface SyncResult {
  status: SyncStatus
  node: string
  /** Batches that carried messages and were accepted. */
  batches: number
  messages: number
  duplicates: number
  heartbeat: boolean
  /** JSON bytes before compression, and compressed body bytes, of accepted requests. */
  bytesRaw: number
  bytesWire: number
  codec: string
  order: 'oldest' | 'newest'
  budget: number
  stoppedBy?: StopReason
  /** Pending (unexpired) messages and their bytes after the run. */
  pending: number
  pendingBytes: number
  watermark: number | null
  /** Failed attempts waited out within this run (drain). */
  retries: number
  durationMs: number
  /** While a backoff is in force: when the next attempt is due. */
  nextAttemptAt?: number
  backoff?: BackoffState
  /**
   * Why nothing was sent (backoff, locked), in a sentence; what to do about
   * it is the caller's to say (the CLI: src/cli/sync-summary.ts).
   */
  message?: string
}

/**
 * Why a run ended in an error, as data: `details.problem` of the error the
 * engine throws, next to the figures it is about. The engine words only the
 * cause (the message); what to do, in the words and commands of its user,
 * is the caller's: the CLI's are in src/cli/sync-summary.ts (syncAdvice).
 */
export type SyncProblem =
  /** drain: another run held the lease until the deadline (SyncFailedError, 75). */
  | 'drain-locked'
  /** drain: the signal aborted it with messages left (SyncFailedError, 75). */
  | 'drain-interrupted'
  /** drain: messages left at the deadline (SyncFailedError, 75). */
  | 'drain-timeout'
  /** The broker answered 401: no valid token (ConfigError, 78). */
  | 'token-refused'
  /** The broker answered 403: the token is another node's (ConfigError, 78). */
  | 'token-other-node'
  /** The broker refused the client certificate (mTLS; ConfigError, 78). */
  | 'certificate-refused'
  /** A permanent refusal (4xx) of a batch (RejectedError, 65). */
  | 'batch-rejected'
  /** One message is larger than the broker takes (RejectedError, 65). */
  | 'message-too-large'
  /** A retryable failure (429, 5xx, network, timeout); a backoff is set (SyncFailedError, 75). */
  | 'attempt-failed'

export interface SyncStats {
  attempts: number
  successes: number
  failures: number
  batches: number
  heartbeats: number
  messagesSent: number
  bytesRaw: number
  bytesWire: number
  lastAttemptAt: number | null
  lastSuccessAt: number | null
  lastError: string | null
  lastErrorAt: number | null
  backoff: BackoffState | null
}

/** The messages of one batch. */
export interface Taken {
  seqs: number[]
  /** Accounted outbox bytes of the messages. */
  bytes: number
  /** Oldest ts among them. */
  minTs: number
  /** Per priority: the lowest and highest seq of the batch (what the next read skips). */
  spans?: Array<[number, number] | undefined>
}

export interface Prepared extends Taken {
  kind: 'batch'
  encoded: EncodedBatch
}

/** A batch whose request is on its way. */
export interface InFlight {
  p: Prepared
  outcome: Promise<PostOutcome>
}

/**
 * Requests in flight at once when the broker honours `backlog.unacked`
 * (its ack lists `pipeline`): the broker parses one batch while it commits
 * the one before (docs/sync.md, "Pipelining").
 */
export const PIPELINE_DEPTH = 2

export type Prep =
  Prepared | { kind: 'empty' } | { kind: 'stop'; reason: StopReason } | { kind: 'shrink'; limit: number }
export type Settled = 'ok' | 'failed' | 'split'

export interface LastState {
  lastAttemptAt: number | null
  lastSuccessAt: number | null
  lastError: string | null
  lastErrorAt: number | null
}

/** What one run's parts share: its inputs, its result so far, and what the broker told it. */
export interface RunState {
  readonly deps: SyncDeps
  readonly opts: SyncOptions
  /** Every fast path offered, by the driver or by a fallback (completeDriver). */
  readonly driver: CompleteDriver
  readonly config: RmqConfig
  readonly now: () => number
  readonly node: string
  readonly started: number
  readonly budget: number
  readonly rateLimit: number
  readonly res: SyncResult
  client: BrokerClient
  /**
   * Features the broker listed in its last ack (BROKER_FEATURES). Until the
   * first ack of the run, frames are assumed (a broker without them answers
   * 415, and the batch goes again as JSON), and pipelining is not.
   */
  features: readonly string[]
  /** sync.last as this run last wrote it (only the lease holder writes it). */
  last: LastState | undefined
}
