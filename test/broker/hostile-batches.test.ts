/**
 * Hostile node, broker side: bodies that are valid JSON but forged or
 * broken are refused with 400 naming the field, and nothing of them is
 * stored (checked through the broker's own read path).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeBatch, message } from '../helpers/broker.js'
import { BrokerAppFixture, T0 } from '../helpers/broker-app.js'

describe('the broker refuses forged batches (inject)', () => {
  let b: BrokerAppFixture
  beforeEach(async () => {
    b = await new BrokerAppFixture().open()
  })
  afterEach(() => b.close())

  const refused = async (body: unknown, code: string, words: RegExp) => {
    const res = await b.post(body)
    expect(res.statusCode, res.body).toBe(400)
    expect(res.json().code).toBe(code)
    expect(res.json().error).toMatch(words)
    expect((await b.read('topic=%23&order=arrival')).messages).toEqual([])
  }

  it('a fractional timestamp (ts, clock, expiresAt)', async () => {
    await refused(
      makeBatch('gw-1', [{ ...message(1, T0), ts: T0 + 0.5 }]),
      'INVALID_BODY',
      /ts must be integer/,
    )
    await refused({ ...makeBatch('gw-1', [message(1, T0)]), clock: T0 + 0.25 }, 'INVALID_BODY', /clock/)
    await refused(
      makeBatch('gw-1', [{ ...message(1, T0), expiresAt: T0 + 1.5 }]),
      'INVALID_BODY',
      /expiresAt/,
    )
  })

  it('a seq twice in one batch, ascending or not', async () => {
    await refused(
      makeBatch('gw-1', [message(1, T0), message(2, T0), message(2, T0)]),
      'DUPLICATE_SEQ',
      /seq 2 appears twice/,
    )
    await refused(
      makeBatch('gw-1', [message(5, T0), message(3, T0), message(5, T0)]),
      'DUPLICATE_SEQ',
      /seq 5/,
    )
    // Out of order but unique is fine (priority order sends newest first).
    const ok = await b.post(makeBatch('gw-1', [message(5, T0), message(3, T0), message(4, T0)]))
    expect(ok.statusCode, ok.body).toBe(200)
    expect(ok.json()).toMatchObject({ accepted: 3, count: 3 })
  })

  it('raw invalid UTF-8 in a JSON body (instead of storing U+FFFD)', async () => {
    const json = Buffer.from(JSON.stringify(makeBatch('gw-1', [message(1, T0, 'plant/x', 'AAAA')])))
    const at = json.indexOf('AAAA')
    json[at] = 0xff
    json[at + 1] = 0xfe
    await refused(json, 'INVALID_UTF8', /not valid UTF-8/)
  })

  it('stats that are not the fixed small shape: unknown keys, deep nesting, megabytes', async () => {
    const batch = (stats: unknown) => ({ ...makeBatch('gw-1', [message(1, T0)]), stats })
    await refused(batch({ evil: 1 }), 'INVALID_BODY', /stats/)
    // 100,000 levels of nesting, written as text (building the object would be the test's own problem).
    const res = await b.post(
      Buffer.from(
        `{"node":"gw-1","epoch":"e","batch":"b","clock":${T0},"backlog":{"pending":0,"bytes":0,"oldestTs":null},"stats":{"sync":${'{"d":'.repeat(100_000)}1${'}'.repeat(100_000)}},"messages":[]}`,
      ),
    )
    expect(res.statusCode, res.body.slice(0, 200)).toBe(400)
    const big = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'x'.repeat(500)]))
    await refused(batch({ sync: big }), 'INVALID_BODY', /stats\/sync must NOT have more than 32 properties/)
    await refused(batch({ storage: { pending: 'x'.repeat(501) } }), 'INVALID_BODY', /stats\/storage/)
    // The shape the edge sends is taken.
    const fine = await b.post(
      batch({ sync: { attempts: 1, successes: 1, backoff: null, lastError: null }, storage: { pending: 1 } }),
    )
    expect(fine.statusCode, fine.body).toBe(200)
  })
})
