/**
 * Which edge nodes hold the watermark back (docs/ordering.md), as every store
 * computes it: a node that is not a direct producer, heard from within
 * `maxLateness` (live), whose low mark is no further behind broker time than
 * `maxHoldBack`. The bounds as query parameters, so the stores' SQL says
 * `last_contact >= liveSince AND low_mark >= holdFloor`.
 */
import type { HeldQuery, IngestContext } from './types.js'

/** Oldest last contact of a live node. */
export function liveSince(ctx: IngestContext | HeldQuery): number {
  return ctx.now - ctx.maxLateness
}

/** Oldest low mark that still holds the watermark back (no bound without maxHoldBack). */
export function holdFloor(ctx: IngestContext | HeldQuery): number {
  return ctx.maxHoldBack && ctx.maxHoldBack > 0 ? ctx.now - ctx.maxHoldBack : Number.MIN_SAFE_INTEGER
}
