/**
 * completeDriver(): every StorageDriver as one with all the fast paths, so
 * that core (the sync engine) uses one code path for every driver, built-in
 * or third-party. The optional methods of StorageDriver are capabilities: a
 * driver that offers one is used as it is; for each one it lacks, this file
 * (and only this file) builds a fallback from the basic methods:
 *
 * - pendingRuns + wireJson (used together; a driver that offers only one of
 *   them gets both fallbacks): nextBatch, read ahead several batches at a
 *   time, the messages read kept here until they are marked sent, so that
 *   wireJson serves them without a second read.
 * - wireFrames: the wire messages above (or the driver's own wireJson) as
 *   frames. Sync sends frames only from drivers that build them themselves
 *   (`fastPaths.wireFrames`): the fallback does all the JSON work frames save.
 * - oldestPendingTs: stats().oldestPendingTs, which counts the excluded
 *   batches too (conservative: the broker's watermark waits one batch longer).
 * - commitSent: markSent, addCounters and setState one after the other (not
 *   one transaction; the sent marks come first).
 * - browse (an operator's listing, not a fast path): the pending messages
 *   nextBatch returns; sent and expired ones cannot be listed without it.
 *
 * Contract and examples: docs/storage.md ("Capabilities and fallbacks").
 */
import { StorageError } from '../../shared/errors.js'
import { toFrame, type WireMessage } from '../../protocol/batch.js'
import { toWireMessage } from '../wire-message.js'
import type {
  AppendResult,
  BrowseQuery,
  BrowsedMessage,
  PendingRun,
  RunQuery,
  SentExtras,
  StorageDriver,
  StoredMessage,
  WireFrames,
  WireJson,
} from './driver.js'

/** The optional methods of StorageDriver, each a fast path a driver may offer. */
export const FAST_PATHS = ['pendingRuns', 'wireJson', 'wireFrames', 'oldestPendingTs', 'commitSent'] as const
export type FastPath = (typeof FAST_PATHS)[number]

/** A StorageDriver with every fast path: the driver's own, or a fallback built from its basic methods. */
export interface CompleteDriver extends StorageDriver {
  pendingRuns(query: RunQuery): Promise<PendingRun[]>
  wireJson(seqs: number[]): Promise<WireJson>
  wireFrames(seqs: number[]): Promise<WireFrames>
  oldestPendingTs(now: number, exclude: Array<[number, number]>): Promise<number | null>
  commitSent(seqs: number[], sentAt: number, extras: SentExtras): Promise<number>
  /** The driver's browse, or pending messages only, from nextBatch (see browsePending). */
  browse(query: BrowseQuery): Promise<BrowsedMessage[]>
  /** Which fast paths the driver offers itself (true) and which are fallbacks (false). */
  readonly fastPaths: Readonly<Record<FastPath, boolean>>
  /** The driver as it was given. */
  readonly driver: StorageDriver
}

/** The basic methods, forwarded as they are (those the fallbacks watch are wrapped below). */
const BASIC_METHODS = [
  'append',
  'nextBatch',
  'markSent',
  'recordAttempt',
  'purge',
  'enforceLimits',
  'compact',
  'stats',
  'getState',
  'setState',
  'addCounters',
  'getCounters',
  'acquireLease',
  'releaseLease',
  'close',
] as const satisfies ReadonlyArray<keyof StorageDriver>

const completed = new WeakMap<StorageDriver, CompleteDriver>()

/** Is `d` already complete (made by completeDriver)? */
function isComplete(d: StorageDriver): d is CompleteDriver {
  return (d as Partial<CompleteDriver>).fastPaths !== undefined && (d as CompleteDriver).driver !== undefined
}

/**
 * `driver` with every fast path. Idempotent: a completed driver is returned
 * as it is, and a driver completed twice gives the same object (one read-ahead
 * for all its users).
 */
export function completeDriver(driver: StorageDriver): CompleteDriver {
  if (isComplete(driver)) return driver
  let out = completed.get(driver)
  if (!out) {
    out = build(driver)
    completed.set(driver, out)
  }
  return out
}

function build(d: StorageDriver): CompleteDriver {
  const own = (k: FastPath) => typeof d[k] === 'function'
  // pendingRuns names the seqs that wireJson then serves: both the driver's, or both fallbacks.
  const runs = own('pendingRuns') && own('wireJson')
  const fastPaths: Record<FastPath, boolean> = {
    pendingRuns: runs,
    wireJson: runs,
    wireFrames: own('wireFrames'),
    oldestPendingTs: own('oldestPendingTs'),
    commitSent: own('commitSent'),
  }
  const out = { name: d.name, capabilities: d.capabilities, epoch: d.epoch, fastPaths, driver: d } as Record<
    string,
    unknown
  >
  for (const k of BASIC_METHODS) out[k] = (d[k] as (...a: unknown[]) => unknown).bind(d)
  // The epoch changes only by renewEpoch (rmq outbox rename-node): read it through.
  Object.defineProperty(out, 'epoch', { get: () => d.epoch, enumerable: true })
  const c = out as unknown as CompleteDriver
  if (d.renewEpoch) c.renewEpoch = d.renewEpoch.bind(d)
  if (d.checkIntegrity) c.checkIntegrity = d.checkIntegrity.bind(d)

  const reader = runs ? undefined : new ReadAhead(d)
  if (reader) {
    // The messages read ahead must not outlive what changes the queue behind the reader's back.
    c.markSent = async (seqs, sentAt) => {
      const n = await d.markSent(seqs, sentAt)
      reader.sent(seqs)
      return n
    }
    c.append = async (messages): Promise<AppendResult> => {
      const r = await d.append(messages)
      if (r.dropped > 0) reader.forget()
      return r
    }
    c.purge = async (q) => {
      if (!q.dryRun) reader.forget()
      return d.purge(q)
    }
    c.enforceLimits = async (o) => {
      reader.forget()
      return d.enforceLimits(o)
    }
    // End of a sync run: another process may send before this one reads again.
    c.releaseLease = async (name, owner) => {
      reader.forget()
      return d.releaseLease(name, owner)
    }
    c.close = async () => {
      reader.forget(true)
      return d.close()
    }
    c.pendingRuns = (q) => reader.pendingRuns(q)
    c.wireJson = async (seqs) => {
      const wire = reader.wire(seqs)
      return { json: Buffer.from(wire.map((w) => JSON.stringify(w)).join(',')), count: wire.length }
    }
  } else {
    c.pendingRuns = d.pendingRuns!.bind(d)
    c.wireJson = d.wireJson!.bind(d)
  }

  c.wireFrames = fastPaths.wireFrames
    ? d.wireFrames!.bind(d)
    : async (seqs) => {
        const wire = reader
          ? reader.wire(seqs)
          : (JSON.parse(`[${(await c.wireJson(seqs)).json.toString('utf8')}]`) as WireMessage[])
        const frames = wire.map(toFrame)
        return {
          json: Buffer.from(frames.map((f) => f.json).join(',')),
          payloads: Buffer.concat(frames.map((f) => f.payload)),
          count: frames.length,
        }
      }

  c.oldestPendingTs = fastPaths.oldestPendingTs
    ? d.oldestPendingTs!.bind(d)
    : async (now) => (await d.stats(now)).oldestPendingTs

  c.commitSent = fastPaths.commitSent
    ? d.commitSent!.bind(d)
    : async (seqs, sentAt, extras) => {
        const n = seqs.length > 0 ? await c.markSent(seqs, sentAt) : 0
        if (extras.counters && Object.keys(extras.counters).length > 0) await d.addCounters(extras.counters)
        for (const [key, value] of Object.entries(extras.state ?? {})) {
          // Deleting a key that is not there: no write.
          if (value === undefined && (await d.getState(key)) === undefined) continue
          await d.setState(key, value)
        }
        return n
      }
  c.browse = d.browse ? d.browse.bind(d) : (q) => browsePending(d, q)
  return c
}

/** Most pending messages the browse fallback reads through nextBatch. */
const BROWSE_FALLBACK_MAX = 10_000

/**
 * browse for a driver without it: the pending messages nextBatch returns (at
 * most BROWSE_FALLBACK_MAX); sent and expired ones cannot be seen this way.
 */
async function browsePending(d: StorageDriver, q: BrowseQuery): Promise<BrowsedMessage[]> {
  if (q.status !== 'pending')
    throw new StorageError(
      `the ${d.name} storage driver cannot list ${q.status} messages, only pending ones`,
      {
        suggestion: 'use --status pending, or a driver that implements browse() (sqlite, memory)',
      },
    )
  const all = await d.nextBatch({
    limit: BROWSE_FALLBACK_MAX,
    maxBytes: Number.MAX_SAFE_INTEGER,
    order: 'oldest',
    now: q.now,
  })
  const dir = q.order === 'asc' ? 1 : -1
  return all
    .filter(
      (m) =>
        (q.since === undefined || m.ts >= q.since) &&
        (q.until === undefined || m.ts < q.until) &&
        (q.afterSeq === undefined || dir * (m.seq - q.afterSeq) > 0) &&
        (!q.match || q.match(m.topic)),
    )
    .sort((a, b) => dir * (a.seq - b.seq))
    .slice(0, q.limit)
    .map((m) => ({ ...m, status: 'pending' as const }))
}

/** Batches read from the store at a time by the pendingRuns fallback. */
const READ_AHEAD = 4
/** Most re-reads of one pendingRuns call when the ranges skipped hide more than the reader lent. */
const MAX_REREADS = 8

/** A message read through nextBatch, with its wire form. */
interface Read {
  seq: number
  priority: number
  size: number
  ts: number
  expiresAt: number | null
  wire: WireMessage
}

function inSkip(skip: RunQuery['skip'], m: { priority: number; seq: number }): boolean {
  const s = skip?.[m.priority]
  return s !== undefined && m.seq >= s[0] && m.seq <= s[1]
}

/**
 * pendingRuns and wireJson from nextBatch. Messages are read several batches
 * ahead (a batch in flight, still pending in the store, is read again only
 * once per READ_AHEAD batches). A message handed out by pendingRuns is
 * `lent` until it is marked sent; one that a later call neither skips (in
 * flight) nor finds marked sent was given back (its batch failed or did not
 * fit the budget): the read-ahead is dropped and the store read again, so
 * that nothing is skipped or reordered.
 */
class ReadAhead {
  private ahead: Read[] = []
  private order: RunQuery['order'] | undefined
  private readonly lent = new Map<number, Read>()

  constructor(private readonly d: StorageDriver) {}

  /** Drop what was read ahead (`all`: and the messages lent). */
  forget(all = false): void {
    this.ahead = []
    if (all) this.lent.clear()
  }

  sent(seqs: number[]): void {
    for (const seq of seqs) this.lent.delete(seq)
  }

  async pendingRuns(q: RunQuery): Promise<PendingRun[]> {
    let givenBack = false
    for (const [seq, m] of this.lent)
      if (!inSkip(q.skip, m)) {
        this.lent.delete(seq)
        givenBack = true
      }
    if (givenBack || q.order !== this.order) this.ahead = []
    this.order = q.order
    let aheadBytes = 0
    for (const m of this.ahead) aheadBytes += m.size
    if (this.ahead.length < q.limit && aheadBytes < q.maxBytes) await this.read(q)

    const taken: Read[] = []
    let bytes = 0
    let i = 0
    for (; i < this.ahead.length; i++) {
      const m = this.ahead[i]
      if (m.expiresAt !== null && m.expiresAt <= q.now) continue
      if (taken.length >= q.limit || (taken.length > 0 && bytes + m.size > q.maxBytes)) break
      bytes += m.size
      taken.push(m)
    }
    this.ahead = this.ahead.slice(i)
    for (const m of taken) this.lent.set(m.seq, m)
    return runsOf(taken, q.order === 'newest' ? -1 : 1)
  }

  /** The wire messages of `seqs` (all handed out by pendingRuns), in that order. */
  wire(seqs: number[]): WireMessage[] {
    return seqs.map((seq) => {
      const m = this.lent.get(seq)
      if (!m)
        throw new Error(
          `completeDriver: seq ${seq} was not returned by pendingRuns (a driver without pendingRuns/wireJson ` +
            'serves the wire form only of the messages its pendingRuns fallback handed out)',
        )
      return m.wire
    })
  }

  /**
   * Read ahead from the store: READ_AHEAD batches beyond the messages lent
   * (in flight, still pending, skipped), and more while the ranges skipped
   * hide messages this reader did not lend.
   */
  private async read(q: RunQuery): Promise<void> {
    let lentBytes = 0
    for (const m of this.lent.values()) lentBytes += m.size
    for (let factor = 1, n = 0; ; factor *= 2, n++) {
      const limit = READ_AHEAD * factor * q.limit + this.lent.size
      const maxBytes = READ_AHEAD * factor * q.maxBytes + lentBytes
      const rows = await this.d.nextBatch({ limit, maxBytes, order: q.order, now: q.now })
      const fresh: Read[] = []
      let freshBytes = 0
      let rowBytes = 0
      for (const r of rows) {
        rowBytes += r.size
        if (this.lent.has(r.seq) || inSkip(q.skip, r)) continue
        fresh.push(toRead(r))
        freshBytes += r.size
      }
      this.ahead = fresh
      const enough = fresh.length >= q.limit || freshBytes >= q.maxBytes
      // The store stopped at the count, or within one batch of the byte limit: it may hold more.
      const more = rows.length >= limit || rowBytes + q.maxBytes > maxBytes
      if (enough || !more || n >= MAX_REREADS) return
    }
  }
}

function toRead(m: StoredMessage): Read {
  return {
    seq: m.seq,
    priority: m.priority,
    size: m.size,
    ts: m.ts,
    expiresAt: m.expiresAt,
    wire: toWireMessage(m),
  }
}

/** Messages in send order as pendingRuns returns them: runs of consecutive seqs of one priority. */
function runsOf(messages: Read[], step: 1 | -1): PendingRun[] {
  const out: PendingRun[] = []
  let run: PendingRun | undefined
  for (const m of messages) {
    if (run && m.priority === run.priority && m.seq === run.last + step) {
      run.last = m.seq
      run.count++
      run.bytes += m.size
      if (m.ts < run.minTs) run.minTs = m.ts
    } else {
      run = { priority: m.priority, first: m.seq, last: m.seq, count: 1, bytes: m.size, minTs: m.ts }
      out.push(run)
    }
  }
  return out
}
