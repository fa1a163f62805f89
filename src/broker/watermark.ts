/**
 * `rmq broker watermark`: where the event stream's watermark stands, which
 * node holds it and why (docs/ordering.md), and the admin repair of a poisoned
 * one (`--reset-to`). Reads the store directly, like the token commands, so it
 * works with the broker running or not.
 */
import { UsageError } from '../shared/errors.js'
import { formatAge, formatDuration, parseTimestamp } from '../shared/units.js'
import { DEFAULT_MAX_HOLD_BACK } from './node-status.js'
import type { BrokerStore } from './store/types.js'

export interface WatermarkHolder {
  node: string
  lowMark: number
  lastContact: number
  /** True: this node's low mark holds the watermark; false: cut loose by maxHoldBack. */
  holding: boolean
  /** Why, in words. */
  reason: string
}

export interface WatermarkReport {
  now: number
  watermark: number | null
  /** now - watermark (negative when the watermark is ahead of broker time). */
  behind: number | null
  /** Messages stored but not yet released to the event stream. */
  held: number
  /** Live edge nodes, lowest low mark first; the first with `holding` holds the watermark. */
  holders: WatermarkHolder[]
  bounds: { maxLateness: number; maxHoldBack: number; maxFutureSkew: number }
}

export interface WatermarkBounds {
  maxLateness: number
  maxHoldBack?: number
  maxFutureSkew: number
}

export async function watermarkReport(
  store: BrokerStore,
  bounds: WatermarkBounds,
  now: number,
): Promise<WatermarkReport> {
  const maxHoldBack = bounds.maxHoldBack ?? DEFAULT_MAX_HOLD_BACK
  const [heads, nodes] = await Promise.all([store.heads(), store.nodes()])
  const holders = nodes
    .filter((n) => !n.direct && now - n.lastContact <= bounds.maxLateness)
    .sort((a, b) => a.lowMark - b.lowMark || (a.node < b.node ? -1 : 1))
    .map((n): WatermarkHolder => {
      const behind = now - n.lowMark
      const holding = !(maxHoldBack > 0 && behind > maxHoldBack)
      const mark = `low mark ${new Date(n.lowMark).toISOString()}`
      return {
        node: n.node,
        lowMark: n.lowMark,
        lastContact: n.lastContact,
        holding,
        reason: holding
          ? `${mark} (${n.backlog.pending > 0 ? `${n.backlog.pending} pending on the node` : 'its clock'}), last contact ${formatAge(now - n.lastContact)} ago`
          : `${mark} is ${formatAge(behind)} behind broker time, more than broker.ordering.maxHoldBack (${formatDuration(maxHoldBack)}): not holding`,
      }
    })
  return {
    now,
    watermark: heads.watermark,
    behind: heads.watermark === null ? null : now - heads.watermark,
    held: heads.held,
    holders,
    bounds: { maxLateness: bounds.maxLateness, maxHoldBack, maxFutureSkew: bounds.maxFutureSkew },
  }
}

/**
 * Move a poisoned watermark back to `input` (ISO 8601 or epoch ms). Only
 * backwards: forwards it moves by itself. Not beyond broker time +
 * maxFutureSkew, the bound ingest keeps.
 */
export async function resetWatermark(
  store: BrokerStore,
  input: string,
  bounds: WatermarkBounds,
  now: number,
): Promise<{ before: number | null; after: number }> {
  const to = parseTimestamp(input)
  if (to === undefined)
    throw new UsageError(`--reset-to ${JSON.stringify(input)} is not a time`, {
      suggestion: 'give an ISO 8601 time such as 2026-12-03T12:00:00Z, or epoch milliseconds',
    })
  if (to > now + bounds.maxFutureSkew)
    throw new UsageError(
      `--reset-to ${new Date(to).toISOString()} is ahead of broker time by more than broker.ordering.maxFutureSkew (${formatDuration(bounds.maxFutureSkew)})`,
      { suggestion: 'reset to a time at or before now, e.g. the time the bad message arrived' },
    )
  const { watermark } = await store.heads()
  if (watermark === null)
    throw new UsageError('the broker has no watermark yet: nothing to reset', {
      suggestion: 'a watermark forms once nodes send messages; see `rmq broker watermark`',
    })
  if (to >= watermark)
    throw new UsageError(
      `--reset-to ${new Date(to).toISOString()} is not before the watermark (${new Date(watermark).toISOString()})`,
      { suggestion: 'the watermark moves forward by itself; --reset-to only moves it back' },
    )
  return store.resetWatermark(to)
}
