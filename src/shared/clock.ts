/**
 * The edge's notion of now: the default `ts` of a published message and the
 * `clock` a sync reports to the broker. `RMQ_CLOCK_OFFSET=<ms>` (may be
 * negative) shifts it, to test clock skew and a clock stepped backwards on
 * one node without touching the machine's clock (test/faults,
 * docs/guarantees.md). Read once, at import; without it this is Date.now.
 */
const offset = Number(process.env.RMQ_CLOCK_OFFSET ?? 0)

export const CLOCK_OFFSET_MS = Number.isFinite(offset) ? Math.trunc(offset) : 0

/** Epoch milliseconds on this node's clock. */
export const edgeNow: () => number = CLOCK_OFFSET_MS === 0 ? Date.now : () => Date.now() + CLOCK_OFFSET_MS

/** A pause that does not keep the process alive by itself. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}
