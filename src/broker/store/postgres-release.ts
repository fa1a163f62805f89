/**
 * Release passes of the PostgreSQL store, one at a time per broker, each one
 * transaction in one round trip (`SELECT ... FROM rmq_pass(...)`,
 * postgres-schema.ts). Brokers' passes take turns on a transaction-scoped
 * advisory lock: whoever holds it is the releaser for that pass, and a broker
 * that dies or loses its connection mid-pass drops it with its transaction
 * (nothing of that pass is kept), so the next pass of any broker takes over
 * at once.
 *
 * An ingest commits first, in its own transaction, then waits here until a
 * pass that started after its commit has a frontier above its transaction
 * id: its messages then have arrival positions and whatever the watermark
 * allows is released, so its ack says what a reader will see. Waiters that
 * arrive while a pass runs share the next pass (the passes batch themselves,
 * like a group commit). A transaction older than the ingest's, still running
 * anywhere in the cluster, holds the horizon back: waiters then wait (passes
 * retried with a short pause) and answer 503 after STALL_MS; their batches
 * are committed, so the node's retry is counted as duplicates.
 */
import { holdFloor, liveSince } from './holders.js'
import type { IngestContext } from './types.js'
import { StoreUnavailableError } from './types.js'

export interface PassResult {
  frontier: bigint
  watermark: number | null
  sequenced: number
  released: number
}

interface Waiter {
  /** Covered when a pass's frontier is above this (0n: any pass). */
  tx: bigint
  /** Only a pass started after this one may answer it. */
  after: number
  ctx: IngestContext
  since: number
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

export class ReleasePasses {
  private readonly waiters: Waiter[] = []
  private started = 0
  private running: Promise<void> | undefined

  constructor(
    private readonly run: RunPass,
    private readonly onStall?: (waitedMs: number) => void,
    private readonly stallMs = STALL_MS,
  ) {}

  /** Resolves with the first pass that started after this call and whose frontier is above `tx`. */
  wait(tx: bigint, ctx: IngestContext): Promise<PassResult> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ tx, after: this.started, ctx, since: Date.now(), resolve, reject })
      // `running` is cleared by the loop itself, in the same tick as its last look at the waiters:
      // a waiter pushed after that look always starts a new loop.
      if (!this.running) this.running = this.loop()
    })
  }

  private async loop(): Promise<void> {
    for (;;) {
      if (this.waiters.length === 0) {
        this.running = undefined
        return
      }
      const pass = ++this.started
      // The newest broker time among the waiters decides which nodes are live.
      let ctx = this.waiters[0].ctx
      for (const w of this.waiters) if (w.ctx.now > ctx.now) ctx = w.ctx
      let result: PassResult
      try {
        // Only ingests waiting: a pass another broker just committed may cover them all.
        let need: bigint | null = 0n
        for (const w of this.waiters) need = need === null || w.tx === 0n ? null : w.tx > need ? w.tx : need
        const row = await this.run([liveSince(ctx), holdFloor(ctx), need === null ? null : String(need)])
        result = {
          frontier: BigInt(row.p_frontier),
          watermark: row.p_watermark,
          sequenced: row.p_sequenced,
          released: row.p_released,
        }
      } catch (err) {
        // Everyone this pass was for fails with it (503): their batches are committed, a retry
        // dedups. Waiters that came while it ran get the next pass.
        for (let i = 0; i < this.waiters.length;) {
          if (this.waiters[i].after < pass) this.waiters.splice(i, 1)[0].reject(err)
          else i++
        }
        continue
      }
      let answered = 0
      const now = Date.now()
      for (let i = 0; i < this.waiters.length;) {
        const w = this.waiters[i]
        if (w.after < pass && w.tx < result.frontier) {
          this.waiters.splice(i, 1)
          w.resolve(result)
          answered++
        } else if (now - w.since > this.stallMs) {
          this.waiters.splice(i, 1)
          this.onStall?.(now - w.since)
          w.reject(
            new StoreUnavailableError(
              `the PostgreSQL broker store could not give positions for ${Math.round((now - w.since) / 1000)} s: ` +
                'an older transaction is still open on the server (see pg_stat_activity)',
            ),
          )
        } else i++
      }
      if (answered === 0 && this.waiters.some((w) => w.after < pass))
        await new Promise((r) => setTimeout(r, STALLED_PAUSE_MS))
    }
  }
}
