/**
 * Release passes of the PostgreSQL store, each one transaction in one round
 * trip (`SELECT ... FROM rmq_pass(...)`,
 * postgres-pass.ts). Brokers' passes take turns on a transaction-scoped
 * advisory lock: whoever holds it is the releaser for that pass, and a broker
 * that dies or loses its connection mid-pass drops it with its transaction
 * (nothing of that pass is kept), so the next pass of any broker takes over
 * at once.
 *
 * An ingest commits first, in its own transaction, then waits here until a
 * pass has a frontier above its transaction id: that pass's horizon was
 * taken after the ingest committed, so its messages have arrival positions
 * and whatever the watermark allows (with this batch's low mark) is
 * released, and the ack says what a reader will see. A release call (no
 * transaction) waits for a pass sent after it.
 *
 * Passes are pipelined, up to PASSES_IN_FLIGHT at once: a waiter that comes
 * while a pass runs gets the next one sent at once, which queues on the
 * server's advisory lock and runs the moment the first commits, instead of
 * being sent a round trip after it. With the database on another host that
 * round trip would otherwise be in every pass, the one serial section of
 * ingest. Waiters that arrive while passes are in flight share the next one
 * (the passes batch themselves, like a group commit).
 *
 * A pass that fails on a lost connection (its backend terminated, or the
 * server restarted) committed nothing, or committed and only its answer was
 * lost: either way the next pass covers the same waiters. So it is sent
 * again, on a fresh connection, up to PASS_RETRIES times, before its waiters
 * answer 503: the node does not have to send a committed batch again because
 * one pass was cut off.
 *
 * A transaction older than the ingest's, still running anywhere in the
 * cluster, holds the horizon back: waiters then wait (passes retried with a
 * short pause) and answer 503 after STALL_MS; their batches are committed,
 * so the node's retry is counted as duplicates.
 */
import { holdFloor, liveSince } from './holders.js'
import type { IngestContext, PositionWaits } from './types.js'
import { StoreUnavailableError } from './types.js'

export interface PassResult {
  frontier: bigint
  watermark: number | null
  sequenced: number
  released: number
}

interface Waiter {
  /** Covered when a pass's frontier is above this (0n: a release call, any pass sent after it). */
  tx: bigint
  /** The pass this waiter was last sent for (0: none yet); a release call takes only a later one. */
  pass: number
  ctx: IngestContext
  since: number
  /** Failed passes this waiter was sent again after (PASS_RETRIES at most). */
  retries: number
  resolve(r: PassResult): void
  reject(err: unknown): void
}

/** rmq_pass's parameters: live since, hold floor, and the newest waiting transaction (null: run anyway). */
export type RunPass = (params: [number, number, string | null]) => Promise<{
  p_frontier: string
  p_watermark: number | null
  p_sequenced: number
  p_released: number
}>

/** A waiter not covered after this long answers 503 (its batch stays committed). */
export const STALL_MS = 10_000
/** Pause between passes that covered none of the waiters (an older transaction holds the horizon). */
const STALLED_PAUSE_MS = 5
/** One pass running on the server, one queued behind it on the release lock. */
export const PASSES_IN_FLIGHT = 2
/** Passes sent again for a waiter after a pass failed with a lost connection, before it answers 503. */
export const PASS_RETRIES = 2

export class ReleasePasses {
  private readonly waiters: Waiter[] = []
  /** Passes sent so far; the newest one's number. */
  private sent = 0
  private inFlight = 0
  private pausedUntil = 0
  private pauseTimer: NodeJS.Timeout | undefined
  /** Waiters answered 503 because no pass covered them within stallMs. */
  private stalled = 0

  constructor(
    private readonly run: RunPass,
    private readonly onStall?: (waitedMs: number) => void,
    private readonly stallMs = STALL_MS,
    /** A failure after which the same pass is worth sending again (a lost connection). */
    private readonly retryable: (err: unknown) => boolean = () => false,
  ) {}

  /** Resolves with the first pass whose frontier is above `tx` (for tx 0n: the first pass sent after this call). */
  wait(tx: bigint, ctx: IngestContext): Promise<PassResult> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ tx, pass: 0, ctx, since: Date.now(), retries: 0, resolve, reject })
      this.send()
    })
  }

  /** What waits for a pass now, and how many waiters a stalled horizon has failed so far (for /metrics). */
  waits(now = Date.now()): PositionWaits {
    let oldest = now
    for (const w of this.waiters) if (w.since < oldest) oldest = w.since
    return { waiting: this.waiters.length, oldestWaitMs: now - oldest, stalled: this.stalled }
  }

  /** Send a pass for the waiters no pass in flight was sent for, if the pipeline has room. */
  private send(): void {
    if (this.inFlight >= PASSES_IN_FLIGHT) return
    const now = Date.now()
    if (now < this.pausedUntil) {
      this.pauseTimer ??= setTimeout(() => {
        this.pauseTimer = undefined
        this.send()
      }, this.pausedUntil - now)
      return
    }
    const mine = this.waiters.filter((w) => w.pass === 0)
    if (mine.length === 0) return
    const pass = ++this.sent
    this.inFlight++
    // The newest broker time among them decides which nodes are live; the newest transaction they
    // wait for lets the pass stop at once when another pass (this broker's or another's) covered it.
    let ctx = mine[0].ctx
    let need: bigint | null = 0n
    for (const w of mine) {
      w.pass = pass
      if (w.ctx.now > ctx.now) ctx = w.ctx
      need = need === null || w.tx === 0n ? null : w.tx > need ? w.tx : need
    }
    this.run([liveSince(ctx), holdFloor(ctx), need === null ? null : String(need)]).then(
      (row) =>
        this.settle(pass, {
          frontier: BigInt(row.p_frontier),
          watermark: row.p_watermark,
          sequenced: row.p_sequenced,
          released: row.p_released,
        }),
      (err: unknown) => this.settle(pass, undefined, err),
    )
  }

  private countStall(waitedMs: number): void {
    this.stalled++
    this.onStall?.(waitedMs)
  }

  private settle(pass: number, result: PassResult | undefined, err?: unknown): void {
    this.inFlight--
    let answered = 0
    let missed = false
    const now = Date.now()
    const retry = result === undefined && this.retryable(err)
    for (let i = 0; i < this.waiters.length;) {
      const w = this.waiters[i]
      const covered =
        result !== undefined && (w.tx === 0n ? w.pass !== 0 && w.pass <= pass : w.tx < result.frontier)
      if (covered) {
        this.waiters.splice(i, 1)
        w.resolve(result)
        answered++
      } else if (w.pass !== pass) {
        i++ // not this pass's waiter: a later pass in flight, or none yet, is for it
      } else if (retry && w.retries < PASS_RETRIES && now - w.since <= this.stallMs) {
        // The next pass, sent at once on another connection, is for it.
        w.pass = 0
        w.retries++
        i++
      } else if (result === undefined) {
        // Everyone this pass was for fails with it (503): their batches are committed, a retry dedups.
        // One that had already waited past the bound (a held horizon, then a lost pass) counts as
        // stalled too: no pass covered it within stallMs, whatever ended its wait.
        this.waiters.splice(i, 1)
        if (now - w.since > this.stallMs) this.countStall(now - w.since)
        w.reject(err)
      } else if (now - w.since > this.stallMs) {
        this.waiters.splice(i, 1)
        this.countStall(now - w.since)
        w.reject(
          new StoreUnavailableError(
            `the PostgreSQL broker store could not give positions for ${Math.round((now - w.since) / 1000)} s: ` +
              'an older transaction is still open on the server (see pg_stat_activity)',
          ),
        )
      } else {
        // Its pass did not cover it (an older transaction holds the horizon): the next one is for it.
        w.pass = 0
        missed = true
        i++
      }
    }
    if (missed && answered === 0) this.pausedUntil = now + STALLED_PAUSE_MS
    this.send()
  }
}
