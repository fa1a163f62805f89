/**
 * The sync engine: forwards the outbox to the broker in compressed batches.
 * A library (no oclif): `rmq sync`, `rmq drain`, `--watch` and the Producer
 * API all call these functions with an open StorageDriver.
 *
 * Rules (docs/sync.md):
 * - A message is marked sent only after a 2xx for the batch that carried it.
 *   No outbox write transaction is open while a request is in flight.
 * - One sender at a time per store: the `sync` lease, renewed per batch.
 * - Failures (429, 5xx, network, timeout) set a persisted backoff with full
 *   jitter that later runs honour; a permanent refusal (other 4xx) stops the
 *   run loudly and leaves the messages pending.
 */
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Codec } from './compression/codec.js'
import { sortedRuns } from './storage/seq-runs.js'
import { completeDriver, type CompleteDriver } from './storage/complete-driver.js'
import type { StorageDriver, StorageStats } from './storage/driver.js'
import { BACKOFF_STATE_KEY, backoffDelay, readBackoff, recordFailure, type BackoffState } from './backoff.js'
import { BrokerClient, brokerClientFromConfig, type EncodedBatch, type PostOutcome } from './broker-client.js'
import { edgeNow } from '../shared/clock.js'
import type { RmqConfig } from './config/schema.js'
import { ConfigError, RejectedError, SyncFailedError } from '../shared/errors.js'
import { failpoint } from '../shared/failpoints.js'
import { Lease } from './lease.js'
import { FRAMES_CONTENT_TYPE, type BatchBody } from '../protocol/batch.js'
import { toWireMessage } from './wire-message.js'
import { formatBytes, formatDuration } from '../shared/units.js'

export const SYNC_LEASE = 'sync'
const LAST_KEY = 'sync.last'
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
  /** Human summary of why nothing was sent (backoff, locked). */
  message?: string
}

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
interface Taken {
  seqs: number[]
  /** Accounted outbox bytes of the messages. */
  bytes: number
  /** Oldest ts among them. */
  minTs: number
  /** Per priority: the lowest and highest seq of the batch (what the next read skips). */
  spans?: Array<[number, number] | undefined>
}

interface Prepared extends Taken {
  kind: 'batch'
  encoded: EncodedBatch
}

/** A batch whose request is on its way. */
interface InFlight {
  p: Prepared
  outcome: Promise<PostOutcome>
}

/**
 * Requests in flight at once when the broker honours `backlog.unacked`
 * (its ack lists `pipeline`): the broker parses one batch while it commits
 * the one before (docs/sync.md, "Pipelining").
 */
const PIPELINE_DEPTH = 2

/** 415 to a frames body: a broker that does not take them (any other 415 is a rejection). */
function framesRefused(p: Prepared, outcome: PostOutcome): boolean {
  return (
    outcome.kind === 'rejected' && outcome.status === 415 && p.encoded.contentType === FRAMES_CONTENT_TYPE
  )
}

function wireBytesOf(flying: readonly InFlight[]): number {
  let n = 0
  for (const f of flying) n += f.p.encoded.wireBytes
  return n
}

/**
 * Several batches as one, to skip and exclude them. Per priority the seq
 * spans are joined: the batches were read one after the other, each
 * skipping the ones before, so what is pending between them is in one of
 * them or expired.
 */
function unionOf(batches: readonly Taken[]): Taken | undefined {
  if (batches.length <= 1) return batches[0]
  const seqs: number[] = []
  let spans: Array<[number, number] | undefined> | undefined
  let bytes = 0
  let minTs = Infinity
  for (const b of batches) {
    for (const seq of b.seqs) seqs.push(seq)
    bytes += b.bytes
    if (b.minTs < minTs) minTs = b.minTs
    b.spans?.forEach((span, priority) => {
      if (!span) return
      spans ??= []
      const s = spans[priority]
      spans[priority] = s ? [Math.min(s[0], span[0]), Math.max(s[1], span[1])] : [span[0], span[1]]
    })
  }
  return { seqs, bytes, minTs, spans }
}

type Prep =
  Prepared | { kind: 'empty' } | { kind: 'stop'; reason: StopReason } | { kind: 'shrink'; limit: number }
type Settled = 'ok' | 'failed' | 'split'

interface LastState {
  lastAttemptAt: number | null
  lastSuccessAt: number | null
  lastError: string | null
  lastErrorAt: number | null
}

/** Sync statistics kept in the store, for `rmq status` and the `stats` field of each batch. */
export async function readSyncStats(driver: StorageDriver): Promise<SyncStats> {
  const c = await driver.getCounters()
  const last = await readLast(driver)
  const n = (k: string) => c[k] ?? 0
  return {
    attempts: n(SYNC_COUNTERS.attempts),
    successes: n(SYNC_COUNTERS.successes),
    failures: n(SYNC_COUNTERS.failures),
    batches: n(SYNC_COUNTERS.batches),
    heartbeats: n(SYNC_COUNTERS.heartbeats),
    messagesSent: n(SYNC_COUNTERS.messagesSent),
    bytesRaw: n(SYNC_COUNTERS.bytesRaw),
    bytesWire: n(SYNC_COUNTERS.bytesWire),
    ...last,
    backoff: (await readBackoff(driver)) ?? null,
  }
}

async function readLast(driver: StorageDriver): Promise<LastState> {
  const empty: LastState = { lastAttemptAt: null, lastSuccessAt: null, lastError: null, lastErrorAt: null }
  const raw = await driver.getState(LAST_KEY)
  if (!raw) return empty
  try {
    return { ...empty, ...(JSON.parse(raw) as Partial<LastState>) }
  } catch {
    return empty
  }
}

export { toWireMessage }

/** Most seq ranges the precise backlog query excludes; beyond that the conservative value is sent. */
const MAX_EXCLUDED_RANGES = 8

/**
 * One bounded sync run: honour the backoff, take the lease, send batches
 * until the outbox is empty (or a limit is reached), release the lease.
 * Returns status `backoff` or `locked` without sending when another run or a
 * backoff is in the way. Throws SyncFailedError (75) on a failed attempt,
 * RejectedError (65) on a permanent refusal, ConfigError (78) on 401/403.
 */
export async function syncOnce(deps: SyncDeps, options: SyncOptions = {}): Promise<SyncResult> {
  return new SyncRun(deps, options).run()
}

/**
 * Forward everything pending until the outbox is empty or `timeout` passes,
 * retrying failures with backoff inside the run. Throws SyncFailedError when
 * messages are left at the deadline.
 */
export async function drain(
  deps: SyncDeps,
  options: Omit<SyncOptions, 'persistent' | 'deadline' | 'force'> & { timeout: number },
): Promise<SyncResult> {
  const now = options.now ?? edgeNow
  const result = await new SyncRun(deps, {
    // Everything is the point of a drain: no per-run budget unless asked.
    budget: 0,
    ...options,
    force: true,
    persistent: true,
    deadline: now() + options.timeout,
  }).run()
  if (result.pending > 0) {
    const [why, suggestion] =
      result.status === 'locked'
        ? [
            `another sync held the outbox for the whole ${formatDuration(options.timeout)}`,
            'wait for the other `rmq sync` / `rmq drain` to finish (see `rmq status`), then run `rmq drain` again',
          ]
        : result.stoppedBy === 'aborted'
          ? [
              'drain was interrupted',
              'run `rmq drain` again to send the rest (a batch cut off in flight is sent again; the broker keeps one copy)',
            ]
          : [
              `drain timed out after ${formatDuration(options.timeout)}`,
              'check that the broker is reachable (`rmq status --broker`), then run `rmq drain` again',
            ]
    const last = result.backoff ? ` (last error: ${result.backoff.reason})` : ''
    throw new SyncFailedError(
      `${why} with ${result.pending} message(s) (${formatBytes(result.pendingBytes)}) still pending${last}; ` +
        `${result.messages} sent`,
      {
        suggestion,
        details: { result },
      },
    )
  }
  return result
}

class SyncRun {
  /** Every fast path offered, by the driver or by a fallback (completeDriver). */
  private readonly driver: CompleteDriver
  private readonly config: RmqConfig
  private readonly now: () => number
  private readonly node: string
  private readonly lease: Lease
  /** sync.last as this run last wrote it (only the lease holder writes it). */
  private last: LastState | undefined
  private client!: BrokerClient
  private readonly started: number
  private readonly res: SyncResult
  private readonly budget: number
  private readonly rateLimit: number
  /**
   * Features the broker listed in its last ack (BROKER_FEATURES). Until the
   * first ack of the run, frames are assumed (a broker without them answers
   * 415, and the batch goes again as JSON), and pipelining is not.
   */
  private features: readonly string[] = ['frames']

  constructor(
    private readonly deps: SyncDeps,
    private readonly opts: SyncOptions,
  ) {
    this.driver = completeDriver(deps.driver)
    this.config = deps.config
    this.now = opts.now ?? edgeNow
    this.node = deps.config.nodeId || os.hostname()
    // Long enough to cover one request; a crashed run's lease is taken over
    // at once when its process is gone (same host), else after the TTL.
    this.lease = new Lease(deps.driver, SYNC_LEASE, {
      ttlMs: Math.max(15_000, 2 * deps.config.sync.timeout + 5_000),
      now: this.now,
    })
    this.started = this.now()
    this.budget = opts.budget ?? deps.config.sync.maxBytesPerRun
    this.rateLimit = opts.rateLimit ?? deps.config.sync.rateLimit
    this.res = {
      status: 'ok',
      node: this.node,
      batches: 0,
      messages: 0,
      duplicates: 0,
      heartbeat: false,
      bytesRaw: 0,
      bytesWire: 0,
      codec: '',
      order: 'oldest',
      budget: this.budget,
      pending: 0,
      pendingBytes: 0,
      watermark: null,
      retries: 0,
      durationMs: 0,
    }
  }

  async run(): Promise<SyncResult> {
    if (!this.opts.force) {
      const b = await readBackoff(this.driver)
      if (b && b.nextAttemptAt > this.now()) {
        return this.finish({
          status: 'backoff',
          nextAttemptAt: b.nextAttemptAt,
          backoff: b,
          message:
            `backing off after ${b.failures} failed attempt(s) (${b.reason}); next attempt due at ` +
            `${new Date(b.nextAttemptAt).toISOString()} (in ${formatDuration(b.nextAttemptAt - this.now())}); ` +
            'use --force to try now',
        })
      }
    }
    // drain waits for a lease held by another run; a bounded run leaves at once.
    const until = this.opts.persistent ? (this.opts.deadline ?? Infinity) : 0
    if (!(await this.lease.take({ until, signal: this.opts.signal }))) {
      return this.finish({
        status: 'locked',
        message: 'another sync is running on this outbox; nothing to do',
      })
    }
    const ownClient = !this.deps.client
    try {
      this.client = await clientFor(this.deps)
      this.res.codec = this.client.codec.name
      await this.loop()
      return await this.finish({})
    } catch (err) {
      await this.attachResult(err)
      throw err
    } finally {
      if (ownClient) this.client?.close()
      await this.lease.release().catch(() => {})
    }
  }

  /**
   * Send batches one request at a time, but pipelined: while batch k is in
   * flight, batch k+1 is read (skipping k's messages) and compressed; when k
   * is acknowledged, k+1 goes out before k is marked sent. A failed k
   * discards the prepared k+1, so nothing is skipped or reordered.
   */
  private async loop(): Promise<void> {
    const startStats = await this.driver.stats(this.now())
    this.res.order = await this.chooseOrder(startStats)
    let limit = this.config.sync.batchSize
    let sentSomething = false
    // An accepted batch named another in backlog.unacked: the run ends with closingReport().
    let named = false
    // Requests in flight, oldest first; `next` is read and compressed, waiting for room.
    const flying: InFlight[] = []
    let next: Prepared | undefined
    // Why no further batch is read this run (the ones in flight still finish).
    let end: StopReason | undefined
    for (;;) {
      const depth = this.features.includes('pipeline') ? PIPELINE_DEPTH : 1
      if (!next && !end) {
        const stop = this.shouldStop(flying.length)
        if (stop) end = stop
        else if (!(await this.lease.renew())) end = 'lease-lost'
        else {
          // With the pipeline full, `next` goes out once the oldest in flight is acknowledged.
          const unacked = flying.length >= depth ? flying.slice(1) : flying
          const p = await this.prepare(
            limit,
            flying.map((f) => f.p),
            unacked[0]?.p,
            sentSomething || flying.length > 0,
          )
          if (p.kind === 'shrink') {
            limit = p.limit
            continue
          }
          if (p.kind === 'batch') next = p
          else end = p.kind === 'empty' ? 'empty' : p.reason
        }
      }
      if (next && flying.length < depth) {
        await this.pace(wireBytesOf(flying))
        flying.push({ p: next, outcome: (await this.start(next)).outcome })
        next = undefined
        continue
      }
      const head = flying.shift()
      if (!head) {
        if (end === 'empty' && !sentSomething && this.opts.heartbeat !== false) await this.heartbeat()
        else if (named && end !== 'aborted' && end !== 'lease-lost') await this.closingReport()
        this.res.stoppedBy = end
        return
      }
      const outcome = await head.outcome
      if (outcome.kind === 'ok') {
        if (head.p.encoded.body.backlog.unacked) named = true
        // `next` was read for this moment: send it before the synchronous work of marking `head` sent.
        if (next && flying.length < depth) {
          await this.pace(wireBytesOf(flying) + head.p.encoded.wireBytes)
          flying.push({ p: next, outcome: (await this.start(next)).outcome })
          next = undefined
        }
        try {
          await this.settle(head.p, outcome, false)
        } catch (err) {
          await this.settleAll(flying)
          throw err
        }
        sentSomething = true
        continue
      }
      // A failure: the batch read ahead is dropped (it may skip or exclude `head`); the requests
      // still in flight finish and count first, so that a success there does not clear the
      // backoff this failure sets. Then the failed messages are read again, in order.
      next = undefined
      if (await this.settleAll(flying)) sentSomething = true
      flying.length = 0
      if (framesRefused(head.p, outcome)) {
        // An older broker behind the same URL: the same messages again, as JSON and one at a time.
        this.features = []
      } else {
        const settled = await this.settle(head.p, outcome, true)
        if (settled === 'split') limit = Math.max(1, Math.ceil(head.p.seqs.length / 2))
      }
      // Whatever ended the reading (nothing left, the budget) was decided with `head` counted as sent.
      end = outcome.kind === 'aborted' ? 'aborted' : undefined
    }
  }

  /** Let requests already started finish and count; true when one of them was accepted. */
  private async settleAll(flying: InFlight[]): Promise<boolean> {
    let accepted = false
    for (const f of flying) {
      const outcome = await f.outcome
      await this.settle(f.p, outcome, false).catch(() => {})
      if (outcome.kind === 'ok') accepted = true
    }
    return accepted
  }

  /** Stop before starting another batch? `inFlight` batches are already on their way. */
  private shouldStop(inFlight: number): StopReason | undefined {
    if (this.opts.signal?.aborted) return 'aborted'
    if (this.opts.maxBatches && this.res.batches + inFlight >= this.opts.maxBatches) return 'max-batches'
    if (this.opts.deadline !== undefined && this.now() >= this.opts.deadline) return 'deadline'
    return undefined
  }

  /** Newest first (within priority) when the backlog will not fit this run's budget. */
  private async chooseOrder(stats: StorageStats): Promise<'oldest' | 'newest'> {
    if (this.budget <= 0 || stats.pending === 0) return 'oldest'
    const c = await this.driver.getCounters()
    const raw = c[SYNC_COUNTERS.bytesRaw] ?? 0
    const wire = c[SYNC_COUNTERS.bytesWire] ?? 0
    const ratio = raw > 0 && wire > 0 ? wire / raw : 1
    return stats.pendingBytes * ratio > this.budget ? 'newest' : 'oldest'
  }

  /**
   * The next batch's messages, skipping those of `inFlight`, as runs of
   * seqs: drivers with pendingRuns choose them in the store (no row per
   * message for a backlog of one priority), the others read ahead through
   * nextBatch (completeDriver).
   */
  private async take(limit: number, inFlight: Taken | undefined): Promise<Taken> {
    const runs = await this.driver.pendingRuns({
      limit,
      maxBytes: this.config.sync.batchBytes,
      order: this.res.order,
      now: this.now(),
      skip: inFlight?.spans,
    })
    const seqs: number[] = []
    const spans: Array<[number, number] | undefined> = []
    let bytes = 0
    let minTs = Infinity
    for (const r of runs) {
      const step = r.first <= r.last ? 1 : -1
      for (let seq = r.first; ; seq += step) {
        seqs.push(seq)
        if (seq === r.last) break
      }
      bytes += r.bytes
      if (r.minTs < minTs) minTs = r.minTs
      const lo = Math.min(r.first, r.last)
      const hi = Math.max(r.first, r.last)
      const s = spans[r.priority]
      spans[r.priority] = s ? [Math.min(s[0], lo), Math.max(s[1], hi)] : [lo, hi]
    }
    return { seqs, bytes, minTs, spans }
  }

  /**
   * Read and encode the next batch, skipping the messages of the batches in
   * flight, within the budget. `unacked`: the one among them that may still
   * be unacknowledged when this batch is sent.
   */
  private async prepare(
    limit: number,
    flying: readonly Prepared[],
    unacked: Prepared | undefined,
    sentSomething: boolean,
  ): Promise<Prep> {
    const inFlight = unionOf(flying)
    const taken = await this.take(limit, inFlight)
    const n = taken.seqs.length
    if (n === 0) return { kind: 'empty' }
    await failpoint('sync.after-read')
    const stats = await this.driver.stats(this.now())
    const encoded = await this.encode(taken, stats, inFlight, unacked, flying)
    let committed = this.res.bytesWire
    for (const f of flying) committed += f.encoded.wireBytes
    if (this.budget > 0 && committed + encoded.wireBytes > this.budget) {
      const left = this.budget - committed
      if (n > 1 && left > 0) {
        // Fit the budget with a smaller batch (never less than one message).
        const smaller = Math.max(1, Math.floor(((n * left) / encoded.wireBytes) * 0.9))
        if (smaller < n) {
          return inFlight ? { kind: 'stop', reason: 'budget' } : { kind: 'shrink', limit: smaller }
        }
      }
      // One message larger than the whole budget is still sent, once per run,
      // so that a budget set too small cannot stall the link for ever.
      if (sentSomething || inFlight || n > 1) {
        return { kind: 'stop', reason: 'budget' }
      }
    }
    return { kind: 'batch', ...taken, encoded }
  }

  private async encode(
    taken: Taken,
    stats: StorageStats,
    inFlight?: Taken,
    unacked?: Prepared,
    flying: readonly Prepared[] = [],
  ): Promise<EncodedBatch> {
    const n = taken.seqs.length
    const bytes = taken.bytes + (inFlight?.bytes ?? 0)
    const pending = Math.max(0, stats.pending - n - (inFlight?.seqs.length ?? 0))
    const clock = this.now()
    const body: BatchBody = {
      node: this.node,
      epoch: this.driver.epoch,
      batch: `b-${randomBytes(6).toString('hex')}`,
      clock,
      backlog: {
        pending,
        bytes: pending > 0 ? Math.max(0, stats.pendingBytes - bytes) : 0,
        oldestTs: pending > 0 ? await this.oldestAfter(stats, taken, inFlight) : null,
        ...(unacked ? { unacked: { batch: unacked.encoded.body.batch, oldestTs: unacked.minTs } } : {}),
      },
      stats: await this.statsField(stats, n, flying, clock),
      messages: [],
    }
    if (n === 0) return this.client.encode(body, [])
    // One buffer from the driver (fewer messages when some were deleted since they were read).
    // Frames only from drivers that build them: a fallback does all the JSON work frames save.
    if (this.driver.fastPaths.wireFrames && this.features.includes('frames')) {
      const frames = await this.driver.wireFrames(taken.seqs)
      return this.client.encode(body, frames.json, frames.count, frames.payloads)
    }
    const wire = await this.driver.wireJson(taken.seqs)
    return this.client.encode(body, wire.json, wire.count)
  }

  /**
   * The oldest ts the node may still send once this batch is stored: pending
   * messages outside this batch and those in flight. A batch in flight counts
   * as delivered because this batch is only sent after it was acknowledged
   * (a failure discards this one), or else is named in `backlog.unacked`.
   * Drivers that cannot exclude seqs give the oldest ts of all pending
   * messages (conservative: holds the watermark back one batch longer).
   */
  private async oldestAfter(stats: StorageStats, taken: Taken, inFlight?: Taken): Promise<number | null> {
    const oldest = stats.oldestPendingTs
    if (oldest === null) return oldest
    // The oldest pending message is not in either batch: it is the answer.
    if (oldest < Math.min(taken.minTs, inFlight?.minTs ?? Infinity)) return oldest
    const ranges = sortedRuns(inFlight ? inFlight.seqs.concat(taken.seqs) : taken.seqs)
    if (ranges.length > MAX_EXCLUDED_RANGES) return oldest
    return this.driver.oldestPendingTs(this.now(), ranges)
  }

  /**
   * The `stats` of a request: the sync counters as they stand once this
   * request (`messages` of them) and the requests in flight before it
   * (`flying`) are accepted. The broker keeps the stats of accepted requests
   * only, so what it keeps includes the run in progress; the same rule makes
   * `backlog` count the batches in flight as delivered. Only when a request
   * in flight fails while a later one is accepted (pipelining) do they count
   * one success too many, until the next report. Byte counters leave this
   * request out (it is being encoded). `at`: the request's clock.
   * docs/monitoring.md.
   */
  private async statsField(
    s: StorageStats,
    messages: number,
    flying: readonly Prepared[],
    at: number,
  ): Promise<Record<string, unknown>> {
    const stored = await readSyncStats(this.driver)
    const requests = flying.length + 1
    const sync = { ...stored, attempts: stored.attempts + requests, successes: stored.successes + requests }
    sync.batches += flying.length + (messages > 0 ? 1 : 0)
    if (messages === 0) sync.heartbeats++
    sync.messagesSent += messages
    for (const f of flying) {
      sync.messagesSent += f.seqs.length
      sync.bytesRaw += f.encoded.rawBytes
      sync.bytesWire += f.encoded.wireBytes
    }
    sync.lastAttemptAt = sync.lastSuccessAt = at
    return {
      // Accepted, this request ends any backoff in force.
      sync: { ...sync, backoff: null },
      storage: {
        pending: s.pending,
        pendingBytes: s.pendingBytes,
        totalMessages: s.totalMessages,
        totalBytes: s.totalBytes,
        maxBytes: s.maxBytes,
        maxMessages: s.maxMessages,
        fileBytes: s.fileBytes,
        appendedTotal: s.appendedTotal,
        sentTotal: s.sentTotal,
        expiredTotal: s.expiredTotal,
        expiredPending: s.expiredPending ?? 0,
        droppedTotal: s.droppedTotal,
      },
    }
  }

  /** Rate limit: keep the run's average at or under sync.rateLimit bytes per second. */
  private async pace(unsettledBytes: number): Promise<void> {
    const sent = this.res.bytesWire + unsettledBytes
    if (this.rateLimit <= 0 || sent === 0) return
    const wait = this.started + (sent * 1000) / this.rateLimit - this.now()
    if (wait > 0) await sleep(wait, undefined, { signal: this.opts.signal }).catch(() => {})
  }

  /**
   * Start a POST and return its outcome once the body is on the socket (or
   * the request ended): what runs next (marking the previous batch sent,
   * reading and compressing the next one) is synchronous SQLite and zstd
   * work that would otherwise hold the request back in this process.
   */
  private async start(p: Prepared): Promise<{ outcome: Promise<PostOutcome> }> {
    let uploaded!: () => void
    const onSocket = new Promise<void>((resolve) => (uploaded = resolve))
    const outcome = this.post(p, uploaded).finally(uploaded)
    await onSocket
    return { outcome }
  }

  /** POST one prepared batch; never rejects (an abort is an outcome too). */
  private async post(p: Prepared | { encoded: EncodedBatch }, onUploaded?: () => void): Promise<PostOutcome> {
    try {
      await failpoint('sync.before-post')
      return await this.client.post(p.encoded, this.opts.signal, onUploaded)
    } catch (err) {
      if (this.opts.signal?.aborted) return { kind: 'aborted' }
      return { kind: 'retry', reason: (err as Error)?.message ?? String(err) }
    }
  }

  /** Nothing to send: tell the broker the node is alive (its clock and empty backlog). */
  private async heartbeat(): Promise<void> {
    const hb = await this.emptyBatch()
    // A failed heartbeat does not keep a drain waiting: there is nothing to deliver.
    this.res.heartbeat = (await this.settle(hb, await this.post(hb), false)) === 'ok'
  }

  /** A batch without messages: the backlog as it is now, with nothing in flight. */
  private async emptyBatch(): Promise<Prepared> {
    const stats = await this.driver.stats(this.now())
    const none: Taken = { seqs: [], bytes: 0, minTs: Infinity }
    return { kind: 'batch', ...none, encoded: await this.encode(none, stats) }
  }

  /**
   * An empty batch at the end of a run in which a batch named another in
   * `backlog.unacked`. The broker may have committed the last two in either
   * order, and then the node's low mark still holds back the messages of the
   * earlier one (docs/ordering.md) until the node's next contact, which for
   * a cron job is the next run. This reports the backlog as it is now. If it
   * fails, the next contact does the same: everything was delivered.
   */
  private async closingReport(): Promise<void> {
    const report = await this.emptyBatch()
    const outcome = await this.post(report)
    if (outcome.kind === 'ok') await this.settle(report, outcome, false)
  }

  /**
   * Act on a request's outcome. 'ok': accepted and marked sent; 'failed':
   * failed and (persistent mode) waited out; 'split': too large, retry
   * smaller. Throws for everything that ends the run.
   */
  private async settle(p: Prepared, outcome: PostOutcome, waitOnFailure: boolean): Promise<Settled> {
    const { seqs, encoded: batch } = p
    const at = this.now()
    if (outcome.kind === 'aborted') {
      this.res.stoppedBy = 'aborted'
      return 'failed'
    }
    if (outcome.kind === 'ok') {
      if (seqs.length > 0) await failpoint('sync.after-post-before-mark-sent')
      const counters = {
        [SYNC_COUNTERS.attempts]: 1,
        [SYNC_COUNTERS.successes]: 1,
        [seqs.length > 0 ? SYNC_COUNTERS.batches : SYNC_COUNTERS.heartbeats]: 1,
        [SYNC_COUNTERS.messagesSent]: seqs.length,
        [SYNC_COUNTERS.bytesRaw]: batch.rawBytes,
        [SYNC_COUNTERS.bytesWire]: batch.wireBytes,
      }
      const last = await this.patchLast({ lastAttemptAt: at, lastSuccessAt: this.now() })
      // Sent marks, statistics, sync.last and the end of any backoff: one transaction, one commit
      // (drivers without commitSent: the same writes one after the other).
      await this.driver.commitSent(seqs, this.now(), {
        counters,
        state: { [LAST_KEY]: last, [BACKOFF_STATE_KEY]: undefined },
      })
      if (seqs.length > 0) await failpoint('sync.after-mark-sent')
      this.res.backoff = undefined
      this.res.nextAttemptAt = undefined
      // An ack without features (an older broker behind the same URL) turns both off again.
      this.features = Array.isArray(outcome.ack.features) ? outcome.ack.features : []
      if (seqs.length > 0) this.res.batches++
      this.res.messages += seqs.length
      this.res.duplicates += outcome.ack.duplicates ?? 0
      this.res.bytesRaw += batch.rawBytes
      this.res.bytesWire += batch.wireBytes
      this.res.watermark = outcome.ack.watermark ?? this.res.watermark
      this.res.pending = batch.body.backlog.pending
      this.opts.onProgress?.({
        batches: this.res.batches,
        messages: this.res.messages,
        bytesRaw: this.res.bytesRaw,
        bytesWire: this.res.bytesWire,
        pending: this.res.pending,
      })
      return 'ok'
    }

    await this.driver.addCounters({ [SYNC_COUNTERS.attempts]: 1, [SYNC_COUNTERS.failures]: 1 })
    if (seqs.length > 0) await this.driver.recordAttempt(seqs)
    await this.writeLast({ lastAttemptAt: at, lastError: outcome.reason, lastErrorAt: this.now() })

    if (outcome.kind === 'too-large' && seqs.length > 1) return 'split'
    // An untrusted certificate: nothing reached the broker, everything stays pending.
    if (outcome.kind === 'tls') throw outcome.error
    if (outcome.kind === 'auth') {
      const cert = /certificate/i.test(outcome.reason)
      throw new ConfigError(
        `the broker refused this node's ${cert ? 'client certificate' : 'token'} (${outcome.reason})`,
        {
          suggestion: cert
            ? `set tls.cert and tls.key (RMQ_TLS_CERT, RMQ_TLS_KEY) to a certificate naming node ${this.node}, signed by the broker's broker.tls.clientCa`
            : outcome.status === 401
              ? 'set `token` (RMQ_TOKEN) to a token made with `rmq broker token create ' +
                this.node +
                '` on the broker'
              : `the token is bound to another node: set nodeId to its node, or create one with \`rmq broker token create ${this.node}\``,
          details: { status: outcome.status, node: this.node, brokerUrl: this.config.brokerUrl },
        },
      )
    }
    if (outcome.kind === 'rejected' || outcome.kind === 'too-large') {
      const first = seqs[0]
      const last = seqs[seqs.length - 1]
      throw new RejectedError(
        `the broker permanently rejected a batch of ${seqs.length} message(s)` +
          (seqs.length > 0 ? ` (seq ${first}..${last})` : '') +
          `: ${outcome.reason}; the messages stay pending and nothing was deleted`,
        {
          suggestion:
            outcome.kind === 'too-large'
              ? 'one message is larger than the broker accepts: raise broker.limits.* on the broker or lower sync.batchBytes'
              : 'fix the cause the broker gives (or upgrade the broker/edge so they agree), then run `rmq sync` again',
          details: {
            status: outcome.status,
            reason: outcome.reason,
            seqs: seqs.length > 0 ? [first, last] : [],
          },
        },
      )
    }

    // Retryable: back off (persisted) and either fail the run or wait it out.
    const b = await recordFailure(this.driver, this.config.sync.backoff, this.now(), outcome.reason, {
      retryAfterMs: outcome.retryAfterMs,
      random: this.opts.random,
    })
    this.res.backoff = b
    this.res.nextAttemptAt = b.nextAttemptAt
    if (this.opts.persistent) {
      if (!waitOnFailure) return 'failed'
      // Retries inside a drain back off from its own first failure (not from
      // the failures of earlier cron runs), and Retry-After is still a floor.
      this.res.retries++
      const own = Math.max(
        backoffDelay(this.config.sync.backoff, this.res.retries, this.opts.random),
        outcome.retryAfterMs ?? 0,
      )
      const deadline = this.opts.deadline ?? Infinity
      const wait = Math.min(this.now() + own, deadline) - this.now()
      if (wait > 0) await sleep(wait, undefined, { signal: this.opts.signal }).catch(() => {})
      return 'failed'
    }
    throw new SyncFailedError(
      `sync failed: ${outcome.reason}` +
        (this.res.messages > 0 ? ` (after ${this.res.messages} message(s) were sent)` : '') +
        `; next attempt in ${formatDuration(b.delayMs)} (at ${new Date(b.nextAttemptAt).toISOString()})`,
      {
        suggestion:
          'the messages are safe in the outbox; later runs retry after the backoff (`rmq sync --force` tries now)',
        details: { status: outcome.status ?? null, reason: outcome.reason },
      },
    )
  }

  /** sync.last with `patch` applied, as JSON to store (read from the store once per run). */
  private async patchLast(patch: Partial<LastState>): Promise<string> {
    this.last = { ...(this.last ?? (await readLast(this.driver))), ...patch }
    return JSON.stringify(this.last)
  }

  private async writeLast(patch: Partial<LastState>): Promise<void> {
    await this.driver.setState(LAST_KEY, await this.patchLast(patch))
  }

  private async finish(patch: Partial<SyncResult>): Promise<SyncResult> {
    Object.assign(this.res, patch)
    const s = await this.driver.stats(this.now())
    this.res.pending = s.pending
    this.res.pendingBytes = s.pendingBytes
    this.res.durationMs = this.now() - this.started
    return this.res
  }

  /** Give errors thrown mid-run the progress made so far (for --json and callers). */
  private async attachResult(err: unknown): Promise<void> {
    const e = err as { details?: Record<string, unknown> }
    if (!e || typeof e !== 'object' || !('exitCode' in e)) return
    try {
      await this.finish({})
    } catch {
      // the store itself failed: report what we have
    }
    ;(e as { details?: Record<string, unknown> }).details = { ...(e.details ?? {}), result: { ...this.res } }
  }
}

/** The caller's client, or a new one for the configured broker, token and codec. */
export async function clientFor(deps: SyncDeps): Promise<BrokerClient> {
  return deps.client ?? brokerClientFromConfig(deps.config, deps.cwd, { codec: deps.codec })
}

export interface WatchOptions extends Omit<SyncOptions, 'deadline' | 'persistent'> {
  /** Pause between runs (sync.interval), ms. */
  interval: number
  signal: AbortSignal
  /** After each run: its result, or the retryable error it failed with. */
  onRun?: (outcome: { result?: SyncResult; error?: SyncFailedError }) => void
}

export interface WatchSummary {
  runs: number
  failures: number
  messages: number
  bytesRaw: number
  bytesWire: number
  pending: number
}

/**
 * `rmq sync --watch`: the same bounded run, repeated every `interval` in one
 * process until the signal aborts. A failed run waits for the persisted
 * backoff instead of the interval. Permanent refusals and configuration
 * errors end the loop (they need a person).
 */
export async function watchSync(deps: SyncDeps, options: WatchOptions): Promise<WatchSummary> {
  const { interval, signal, onRun, ...runOptions } = options
  const now = options.now ?? edgeNow
  const sum: WatchSummary = { runs: 0, failures: 0, messages: 0, bytesRaw: 0, bytesWire: 0, pending: 0 }
  const client = await clientFor(deps)
  try {
    let force = runOptions.force
    while (!signal.aborted) {
      let wakeAt = now() + interval
      try {
        const result = await syncOnce({ ...deps, client }, { ...runOptions, force, signal })
        force = false
        sum.runs++
        sum.messages += result.messages
        sum.bytesRaw += result.bytesRaw
        sum.bytesWire += result.bytesWire
        sum.pending = result.pending
        if (result.status === 'backoff' && result.nextAttemptAt) wakeAt = result.nextAttemptAt
        onRun?.({ result })
      } catch (err) {
        if (!(err instanceof SyncFailedError)) throw err
        sum.runs++
        sum.failures++
        const next = (err.details?.result as SyncResult | undefined)?.nextAttemptAt
        if (next) wakeAt = next
        onRun?.({ error: err })
      }
      const wait = wakeAt - now()
      if (wait > 0) await sleep(wait, undefined, { signal }).catch(() => {})
    }
  } finally {
    if (!deps.client) client.close()
  }
  return sum
}
