/**
 * One sync run (docs/sync.md): honour the backoff, take the lease, send
 * batches pipelined until the outbox is empty or a limit is reached, release
 * the lease. Batches are read by BatchReader (batches.ts), outcomes handled
 * by Settler (settle.ts).
 */
import os from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { edgeNow } from '../../shared/clock.js'
import { SyncFailedError } from '../../shared/errors.js'
import { failpoint } from '../../shared/failpoints.js'
import { formatBytes, formatDuration } from '../../shared/units.js'
import { readBackoff } from '../backoff.js'
import {
  brokerClientFromConfig,
  type BrokerClient,
  type EncodedBatch,
  type PostOutcome,
} from '../broker-client.js'
import { checkNodeIdentity } from '../identity.js'
import { Lease } from '../lease.js'
import { completeDriver } from '../storage/complete-driver.js'
import { BatchReader, framesRefused, wireBytesOf } from './batches.js'
import { Settler } from './settle.js'
import {
  PIPELINE_DEPTH,
  SYNC_LEASE,
  type InFlight,
  type Prepared,
  type RunState,
  type StopReason,
  type SyncDeps,
  type SyncOptions,
  type SyncProblem,
  type SyncResult,
} from './types.js'

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
    const problem: SyncProblem =
      result.status === 'locked'
        ? 'drain-locked'
        : result.stoppedBy === 'aborted'
          ? 'drain-interrupted'
          : 'drain-timeout'
    const why = {
      'drain-locked': `another sync held the outbox for the whole ${formatDuration(options.timeout)}`,
      'drain-interrupted': 'drain was interrupted',
      'drain-timeout': `drain timed out after ${formatDuration(options.timeout)}`,
    }[problem]
    const last = result.backoff ? ` (last error: ${result.backoff.reason})` : ''
    throw new SyncFailedError(
      `${why} with ${result.pending} message(s) (${formatBytes(result.pendingBytes)}) still pending${last}; ` +
        `${result.messages} sent`,
      { details: { problem, timeoutMs: options.timeout, result } },
    )
  }
  return result
}

class SyncRun {
  private readonly s: RunState
  private readonly lease: Lease
  private readonly batches: BatchReader
  private readonly settler: Settler

  constructor(deps: SyncDeps, opts: SyncOptions) {
    const now = opts.now ?? edgeNow
    const node = deps.config.nodeId || os.hostname()
    const budget = opts.budget ?? deps.config.sync.maxBytesPerRun
    this.s = {
      deps,
      opts,
      driver: completeDriver(deps.driver),
      config: deps.config,
      now,
      node,
      started: now(),
      budget,
      rateLimit: opts.rateLimit ?? deps.config.sync.rateLimit,
      res: {
        status: 'ok',
        node,
        batches: 0,
        messages: 0,
        duplicates: 0,
        heartbeat: false,
        bytesRaw: 0,
        bytesWire: 0,
        codec: '',
        order: 'oldest',
        budget,
        pending: 0,
        pendingBytes: 0,
        watermark: null,
        retries: 0,
        durationMs: 0,
      },
      client: undefined as unknown as BrokerClient,
      features: ['frames'],
      last: undefined,
    }
    // Long enough to cover one request; a crashed run's lease is taken over
    // at once when its process is gone (same host), else after the TTL.
    this.lease = new Lease(deps.driver, SYNC_LEASE, {
      ttlMs: Math.max(15_000, 2 * deps.config.sync.timeout + 5_000),
      now,
    })
    this.batches = new BatchReader(this.s)
    this.settler = new Settler(this.s)
  }

  async run(): Promise<SyncResult> {
    await checkNodeIdentity(this.s.driver, this.s.node)
    if (!this.s.opts.force) {
      const b = await readBackoff(this.s.driver)
      if (b && b.nextAttemptAt > this.s.now()) {
        return this.finish({
          status: 'backoff',
          nextAttemptAt: b.nextAttemptAt,
          backoff: b,
          message:
            `backing off after ${b.failures} failed attempt(s) (${b.reason}); next attempt due at ` +
            `${new Date(b.nextAttemptAt).toISOString()} (in ${formatDuration(b.nextAttemptAt - this.s.now())})`,
        })
      }
    }
    // drain waits for a lease held by another run; a bounded run leaves at once.
    const until = this.s.opts.persistent ? (this.s.opts.deadline ?? Infinity) : 0
    if (!(await this.lease.take({ until, signal: this.s.opts.signal }))) {
      return this.finish({
        status: 'locked',
        message: 'another sync is running on this outbox; nothing to do',
      })
    }
    const ownClient = !this.s.deps.client
    try {
      this.s.client = await clientFor(this.s.deps)
      this.s.res.codec = this.s.client.codec.name
      await this.loop()
      return await this.finish({})
    } catch (err) {
      await this.attachResult(err)
      throw err
    } finally {
      if (ownClient) this.s.client?.close()
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
    const startStats = await this.s.driver.stats(this.s.now())
    this.s.res.order = await this.batches.chooseOrder(startStats)
    let limit = this.s.config.sync.batchSize
    let sentSomething = false
    // An accepted batch named another in backlog.unacked: the run ends with closingReport().
    let named = false
    // Requests in flight, oldest first; `next` is read and compressed, waiting for room.
    const flying: InFlight[] = []
    let next: Prepared | undefined
    // Why no further batch is read this run (the ones in flight still finish).
    let end: StopReason | undefined
    for (;;) {
      const depth = this.s.features.includes('pipeline') ? PIPELINE_DEPTH : 1
      if (!next && !end) {
        const stop = this.shouldStop(flying.length)
        if (stop) end = stop
        else if (!(await this.lease.renew())) end = 'lease-lost'
        else {
          // With the pipeline full, `next` goes out once the oldest in flight is acknowledged.
          const unacked = flying.length >= depth ? flying.slice(1) : flying
          const p = await this.batches.prepare(
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
        if (end === 'empty' && !sentSomething && this.s.opts.heartbeat !== false) await this.heartbeat()
        else if (named && end !== 'aborted' && end !== 'lease-lost') await this.closingReport()
        this.s.res.stoppedBy = end
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
          await this.settler.settle(head.p, outcome, false)
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
        this.s.features = []
      } else {
        const settled = await this.settler.settle(head.p, outcome, true)
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
      await this.settler.settle(f.p, outcome, false).catch(() => {})
      if (outcome.kind === 'ok') accepted = true
    }
    return accepted
  }

  /** Stop before starting another batch? `inFlight` batches are already on their way. */
  private shouldStop(inFlight: number): StopReason | undefined {
    if (this.s.opts.signal?.aborted) return 'aborted'
    if (this.s.opts.maxBatches && this.s.res.batches + inFlight >= this.s.opts.maxBatches)
      return 'max-batches'
    if (this.s.opts.deadline !== undefined && this.s.now() >= this.s.opts.deadline) return 'deadline'
    return undefined
  }

  /** Rate limit: keep the run's average at or under sync.rateLimit bytes per second. */
  private async pace(unsettledBytes: number): Promise<void> {
    const sent = this.s.res.bytesWire + unsettledBytes
    if (this.s.rateLimit <= 0 || sent === 0) return
    const wait = this.s.started + (sent * 1000) / this.s.rateLimit - this.s.now()
    if (wait > 0) await sleep(wait, undefined, { signal: this.s.opts.signal }).catch(() => {})
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
      return await this.s.client.post(p.encoded, this.s.opts.signal, onUploaded)
    } catch (err) {
      if (this.s.opts.signal?.aborted) return { kind: 'aborted' }
      return { kind: 'retry', reason: (err as Error)?.message ?? String(err) }
    }
  }

  /** Nothing to send: tell the broker the node is alive (its clock and empty backlog). */
  private async heartbeat(): Promise<void> {
    const hb = await this.batches.emptyBatch()
    // A failed heartbeat does not keep a drain waiting: there is nothing to deliver.
    this.s.res.heartbeat = (await this.settler.settle(hb, await this.post(hb), false)) === 'ok'
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
    const report = await this.batches.emptyBatch()
    const outcome = await this.post(report)
    if (outcome.kind === 'ok') await this.settler.settle(report, outcome, false)
  }

  private async finish(patch: Partial<SyncResult>): Promise<SyncResult> {
    Object.assign(this.s.res, patch)
    const s = await this.s.driver.stats(this.s.now())
    this.s.res.pending = s.pending
    this.s.res.pendingBytes = s.pendingBytes
    this.s.res.durationMs = this.s.now() - this.s.started
    return this.s.res
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
    ;(e as { details?: Record<string, unknown> }).details = {
      ...(e.details ?? {}),
      result: { ...this.s.res },
    }
  }
}

/** The caller's client, or a new one for the configured broker, token and codec. */
export async function clientFor(deps: SyncDeps): Promise<BrokerClient> {
  return deps.client ?? brokerClientFromConfig(deps.config, deps.cwd, { codec: deps.codec })
}
