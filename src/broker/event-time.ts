/**
 * Event time is bounded by broker time (docs/ordering.md, "How far ahead a
 * clock may be"). One message stamped in the year 9999 would otherwise move
 * the watermark there as soon as no live node holds it back, and every later
 * message from every node would arrive `late`, for good. So a batch whose
 * message timestamps or node clock are more than `maxFutureSkew` ahead of the
 * broker is refused (400 TS_IN_FUTURE) or, with futurePolicy=clamp, stored
 * with those timestamps set to broker receive time (the latest they can
 * truly be) and the original kept in a header. Low marks are min(oldest ts,
 * clock), so neither can carry the watermark further ahead than that either.
 */
import type { BatchBody } from '../protocol/batch.js'
import { formatAge, formatDuration } from '../shared/units.js'
import { HttpError } from './http-error.js'

export interface EventTimeBound {
  /** broker.ordering.maxFutureSkew, ms. */
  maxMs: number
  policy: 'reject' | 'clamp'
}

/** Default when the options leave it out (tests, embedding): 5 minutes, refuse. */
export const DEFAULT_EVENT_TIME_BOUND: EventTimeBound = { maxMs: 5 * 60_000, policy: 'reject' }

/** The header a clamped message carries: its original `ts`. */
export const CLAMPED_TS_HEADER = 'rmq-original-ts'

/**
 * Check (and with clamp, change in place) a validated batch against broker
 * time `now`. Throws HttpError 400 TS_IN_FUTURE naming the first offending
 * field and how far ahead it is.
 */
export function boundEventTime(body: BatchBody, now: number, bound: EventTimeBound): void {
  const limit = now + bound.maxMs
  const ahead = (ts: number) => formatAge(ts - now)
  const refuse = (field: string, ts: number) => {
    throw new HttpError(
      400,
      'TS_IN_FUTURE',
      `${field}: ${new Date(ts).toISOString()} is ${ahead(ts)} ahead of broker time, more than ` +
        `broker.ordering.maxFutureSkew (${formatDuration(bound.maxMs)}); fix the node's clock (NTP) or set ` +
        'broker.ordering.futurePolicy=clamp',
    )
  }
  // Clamped values become broker receive time: a clock that lies cannot be trusted for any of them.
  if (body.clock > limit) {
    if (bound.policy === 'reject') refuse('body/clock', body.clock)
    body.clock = now
  }
  if (body.backlog.oldestTs !== null && body.backlog.oldestTs > limit) {
    if (bound.policy === 'reject') refuse('body/backlog/oldestTs', body.backlog.oldestTs)
    body.backlog.oldestTs = now
  }
  if (body.backlog.unacked && body.backlog.unacked.oldestTs > limit) {
    if (bound.policy === 'reject') refuse('body/backlog/unacked/oldestTs', body.backlog.unacked.oldestTs)
    body.backlog.unacked.oldestTs = now
  }
  for (let i = 0; i < body.messages.length; i++) {
    const m = body.messages[i]
    if (m.ts <= limit) continue
    if (bound.policy === 'reject') refuse(`body/messages/${i}/ts`, m.ts)
    m.headers = { ...(m.headers ?? {}), [CLAMPED_TS_HEADER]: String(m.ts) }
    m.ts = now
  }
}
