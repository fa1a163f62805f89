/**
 * Reading and encoding the next batch of a run: the pending messages past the
 * batches in flight, within the batch size and the run's byte budget, with
 * the backlog the node is left with and the stats the request carries.
 */
import { randomBytes } from 'node:crypto'
import { FRAMES_CONTENT_TYPE, type BatchBody } from '../../protocol/batch.js'
import { failpoint } from '../../shared/failpoints.js'
import type { EncodedBatch, PostOutcome } from '../broker-client.js'
import { sortedRuns } from '../storage/seq-runs.js'
import type { StorageStats } from '../storage/driver.js'
import { requestStats } from './stats.js'
import { SYNC_COUNTERS, type InFlight, type Prep, type Prepared, type RunState, type Taken } from './types.js'

/** Most seq ranges the precise backlog query excludes; beyond that the conservative value is sent. */
const MAX_EXCLUDED_RANGES = 8

/** 415 to a frames body: a broker that does not take them (any other 415 is a rejection). */
export function framesRefused(p: Prepared, outcome: PostOutcome): boolean {
  return (
    outcome.kind === 'rejected' && outcome.status === 415 && p.encoded.contentType === FRAMES_CONTENT_TYPE
  )
}

export function wireBytesOf(flying: readonly InFlight[]): number {
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
export function unionOf(batches: readonly Taken[]): Taken | undefined {
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

export class BatchReader {
  constructor(private readonly s: RunState) {}

  /** Newest first (within priority) when the backlog will not fit this run's budget. */
  async chooseOrder(stats: StorageStats): Promise<'oldest' | 'newest'> {
    if (this.s.budget <= 0 || stats.pending === 0) return 'oldest'
    const c = await this.s.driver.getCounters()
    const raw = c[SYNC_COUNTERS.bytesRaw] ?? 0
    const wire = c[SYNC_COUNTERS.bytesWire] ?? 0
    const ratio = raw > 0 && wire > 0 ? wire / raw : 1
    return stats.pendingBytes * ratio > this.s.budget ? 'newest' : 'oldest'
  }

  /**
   * The next batch's messages, skipping those of `inFlight`, as runs of
   * seqs: drivers with pendingRuns choose them in the store (no row per
   * message for a backlog of one priority), the others read ahead through
   * nextBatch (completeDriver).
   */
  async take(limit: number, inFlight: Taken | undefined): Promise<Taken> {
    const runs = await this.s.driver.pendingRuns({
      limit,
      maxBytes: this.s.config.sync.batchBytes,
      order: this.s.res.order,
      now: this.s.now(),
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
  async prepare(
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
    const stats = await this.s.driver.stats(this.s.now())
    const encoded = await this.encode(taken, stats, inFlight, unacked, flying)
    let committed = this.s.res.bytesWire
    for (const f of flying) committed += f.encoded.wireBytes
    if (this.s.budget > 0 && committed + encoded.wireBytes > this.s.budget) {
      const left = this.s.budget - committed
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

  async encode(
    taken: Taken,
    stats: StorageStats,
    inFlight?: Taken,
    unacked?: Prepared,
    flying: readonly Prepared[] = [],
  ): Promise<EncodedBatch> {
    const n = taken.seqs.length
    const bytes = taken.bytes + (inFlight?.bytes ?? 0)
    const pending = Math.max(0, stats.pending - n - (inFlight?.seqs.length ?? 0))
    const clock = this.s.now()
    const body: BatchBody = {
      node: this.s.node,
      epoch: this.s.driver.epoch,
      batch: `b-${randomBytes(6).toString('hex')}`,
      clock,
      backlog: {
        pending,
        bytes: pending > 0 ? Math.max(0, stats.pendingBytes - bytes) : 0,
        oldestTs: pending > 0 ? await this.oldestAfter(stats, taken, inFlight) : null,
        ...(unacked ? { unacked: { batch: unacked.encoded.body.batch, oldestTs: unacked.minTs } } : {}),
      },
      stats: await requestStats(this.s.driver, stats, n, flying, clock),
      messages: [],
    }
    if (n === 0) return this.s.client.encode(body, [])
    // One buffer from the driver (fewer messages when some were deleted since they were read).
    // Frames only from drivers that build them: a fallback does all the JSON work frames save.
    if (this.s.driver.fastPaths.wireFrames && this.s.features.includes('frames')) {
      const frames = await this.s.driver.wireFrames(taken.seqs)
      return this.s.client.encode(body, frames.json, frames.count, frames.payloads)
    }
    const wire = await this.s.driver.wireJson(taken.seqs)
    return this.s.client.encode(body, wire.json, wire.count)
  }

  /**
   * The oldest ts the node may still send once this batch is stored: pending
   * messages outside this batch and those in flight. A batch in flight counts
   * as delivered because this batch is only sent after it was acknowledged
   * (a failure discards this one), or else is named in `backlog.unacked`.
   * Drivers that cannot exclude seqs give the oldest ts of all pending
   * messages (conservative: holds the watermark back one batch longer).
   */
  async oldestAfter(stats: StorageStats, taken: Taken, inFlight?: Taken): Promise<number | null> {
    const oldest = stats.oldestPendingTs
    if (oldest === null) return oldest
    // The oldest pending message is not in either batch: it is the answer.
    if (oldest < Math.min(taken.minTs, inFlight?.minTs ?? Infinity)) return oldest
    const ranges = sortedRuns(inFlight ? inFlight.seqs.concat(taken.seqs) : taken.seqs)
    if (ranges.length > MAX_EXCLUDED_RANGES) return oldest
    return this.s.driver.oldestPendingTs(this.s.now(), ranges)
  }

  /** A batch without messages: the backlog as it is now, with nothing in flight. */
  async emptyBatch(): Promise<Prepared> {
    const stats = await this.s.driver.stats(this.s.now())
    const none: Taken = { seqs: [], bytes: 0, minTs: Infinity }
    return { kind: 'batch', ...none, encoded: await this.encode(none, stats) }
  }
}
