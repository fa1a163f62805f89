/**
 * Event time is bounded by broker time (docs/ordering.md): a message or node
 * clock more than broker.ordering.maxFutureSkew ahead is refused, or clamped
 * with futurePolicy=clamp, so one bad clock cannot poison the watermark.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { CLAMPED_TS_HEADER } from '../../src/broker/event-time.js'
import { makeBatch, message } from '../helpers/broker.js'
import { BrokerAppFixture, MIN, T0 } from '../helpers/broker-app.js'

const YEAR_9999 = 253_402_300_799_999

describe('event time bounded by broker time (inject)', () => {
  let b: BrokerAppFixture
  afterEach(() => b.close())

  it('refuses a year-9999 message with TS_IN_FUTURE naming the skew; nothing stored; a normal message after it is not late', async () => {
    b = await new BrokerAppFixture().open({ futureSkew: { maxMs: 5 * MIN, policy: 'reject' } })
    const res = await b.post(makeBatch('gw-1', [message(1, T0), message(2, YEAR_9999)], { clock: T0 }))
    expect(res.statusCode, res.body).toBe(400)
    expect(res.json().code).toBe('TS_IN_FUTURE')
    expect(res.json().error).toMatch(/body\/messages\/1\/ts: 9999-12-31T23:59:59\.999Z is \d+d \d+h ahead/)
    expect(res.json().error).toMatch(/maxFutureSkew \(5m\).*futurePolicy=clamp/)
    expect((await b.read('topic=%23&order=arrival')).messages).toEqual([])
    // Long after, with no live node, the watermark passes only what was stored.
    b.clock = T0 + 10 * MIN
    await b.store.release({ now: b.clock, maxLateness: 5 * MIN })
    const ok = await b.post(makeBatch('gw-1', [message(1, b.clock)], { clock: b.clock }))
    expect(ok.statusCode, ok.body).toBe(200)
    expect(ok.json()).toMatchObject({ accepted: 1, late: 0 })
  })

  it('refuses a node clock too far ahead (a heartbeat can poison low marks too)', async () => {
    b = await new BrokerAppFixture().open({ futureSkew: { maxMs: 5 * MIN, policy: 'reject' } })
    const res = await b.post({ ...makeBatch('gw-1', []), clock: T0 + 6 * MIN })
    expect(res.statusCode, res.body).toBe(400)
    expect(res.json()).toMatchObject({ code: 'TS_IN_FUTURE' })
    expect(res.json().error).toMatch(/body\/clock: .* 6m 0s ahead/)
    // Within the skew is fine.
    const ok = await b.post({ ...makeBatch('gw-1', [message(1, T0 + 4 * MIN)]), clock: T0 + 4 * MIN })
    expect(ok.statusCode, ok.body).toBe(200)
  })

  it('futurePolicy=clamp stores the message at broker receive time with its original ts in a header', async () => {
    b = await new BrokerAppFixture().open({ futureSkew: { maxMs: 2 * MIN, policy: 'clamp' } })
    const res = await b.post({
      ...makeBatch('gw-1', [message(1, T0), message(2, YEAR_9999)]),
      clock: YEAR_9999,
    })
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toMatchObject({ accepted: 2 })
    const page = await b.read('topic=%23&order=arrival')
    expect(page.messages.map((m: { ts: number }) => m.ts)).toEqual([T0, T0])
    expect(page.messages[1].headers).toEqual({ [CLAMPED_TS_HEADER]: String(YEAR_9999) })
    expect(page.messages[0].headers).toBeNull()
    // The watermark never passes broker time: a normal message later is on time.
    b.clock = T0 + 10 * MIN
    await b.store.release({ now: b.clock, maxLateness: 5 * MIN })
    const later = await b.post(makeBatch('gw-1', [message(3, b.clock)], { clock: b.clock }))
    expect(later.json()).toMatchObject({ accepted: 1, late: 0 })
  })
})
