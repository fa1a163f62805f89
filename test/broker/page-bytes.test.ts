/**
 * Consumer pages bounded by bytes as well as count (docs/protocol.md
 * "Reading"): `maxBytes` and broker.limits.pageBytes, always at least one
 * message, and `next`/`more` that neither skip nor repeat a message when a
 * page is cut by bytes.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { pageBytesOf } from '../../src/broker/routes/messages.js'
import { makeBatch, message } from '../helpers/broker.js'
import { BrokerAppFixture, T0 } from '../helpers/broker-app.js'

const LIMITS = { bodyBytes: 8 << 20, decompressedBytes: 64 << 20, ratePerNode: 0 }

describe('consumer pages bounded by bytes (inject)', () => {
  let b: BrokerAppFixture
  afterEach(() => b.close())

  /** Ten messages of 3000-byte payloads, ts ascending, and the event stream released past them. */
  const fill = async () => {
    const msgs = Array.from({ length: 10 }, (_, i) =>
      message(i + 1, T0 + i, 'plant/a', String(i).repeat(3000)),
    )
    const res = await b.post(makeBatch('gw-1', msgs, { clock: T0 + 60_000 }))
    expect(res.statusCode, res.body).toBe(200)
  }

  /** Read on from `after` until a page at the head; every page's messages and `more`. */
  const readAll = async (query: string) => {
    const pages: { seqs: number[]; bytes: number; more: boolean }[] = []
    let after = 0
    for (let i = 0; i < 50; i++) {
      const page = await b.read(`${query}&after=${after}`)
      const seqs = page.messages.map((m: any) => m.seq)
      const bytes = page.messages.reduce((t: number, m: any) => t + pageBytesOf(m), 0)
      pages.push({ seqs, bytes, more: page.more })
      if (page.messages.length > 0) expect(page.next).toBe(page.messages[page.messages.length - 1].position)
      after = page.next
      if (!page.more) return pages
    }
    throw new Error('no end of stream after 50 pages')
  }

  for (const order of ['event', 'arrival'] as const)
    it(`cuts an ${order}-order page at broker.limits.pageBytes, and reading on gets every message once`, async () => {
      b = await new BrokerAppFixture().open({ limits: { ...LIMITS, pageBytes: 9000, messageBytes: 4000 } })
      await fill()
      const pages = await readAll(`topic=plant%2F%23&order=${order}&limit=100`)
      expect(pages.flatMap((p) => p.seqs)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      for (const p of pages) expect(p.bytes).toBeLessThanOrEqual(9000)
      // 3000 + topic + overhead: two fit in 9000 bytes, three do not, so five pages, all but the last with more: true.
      expect(pages.map((p) => p.seqs.length)).toEqual([2, 2, 2, 2, 2])
      expect(pages.map((p) => p.more)).toEqual([true, true, true, true, false])
    })

  it('maxBytes lowers the bound, never raises it, and a page always has one message', async () => {
    b = await new BrokerAppFixture().open({ limits: { ...LIMITS, pageBytes: 9000, messageBytes: 4000 } })
    await fill()
    expect((await readAll('topic=%23&order=arrival&maxBytes=1')).map((p) => p.seqs)).toEqual(
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((s) => [s]),
    )
    expect((await readAll('topic=%23&order=arrival&maxBytes=7000')).map((p) => p.seqs.length)).toEqual([
      2, 2, 2, 2, 2,
    ])
    expect((await b.read('topic=%23&order=arrival&maxBytes=100000000')).messages).toHaveLength(2)
    // A count limit below the byte bound still wins.
    const one = await b.read('topic=%23&order=arrival&limit=1')
    expect(one.messages.map((m: any) => m.seq)).toEqual([1])
    expect(one.more).toBe(true)
    const bad = await b.app.inject({
      method: 'GET',
      url: '/v1/messages?maxBytes=-5',
      headers: { authorization: `Bearer ${b.adminToken}` },
    })
    expect(bad.statusCode).toBe(400)
    expect(bad.json()).toMatchObject({ code: 'INVALID_QUERY' })
    expect(bad.json().error).toMatch(/maxBytes must be an integer/)
  })

  it('serves a message larger than the page bound on its own page', async () => {
    b = await new BrokerAppFixture().open({ limits: { ...LIMITS, pageBytes: 1000, messageBytes: 1 << 20 } })
    const res = await b.post(
      makeBatch('gw-1', [message(1, T0, 'plant/a', 'x'.repeat(500_000)), message(2, T0, 'plant/a', 'small')]),
    )
    expect(res.statusCode, res.body).toBe(200)
    const first = await b.read('topic=%23&order=arrival')
    expect(first.messages.map((m: any) => m.payload.length)).toEqual([500_000])
    expect(first.more).toBe(true)
    const second = await b.read(`topic=%23&order=arrival&after=${first.next}`)
    expect(second.messages.map((m: any) => m.payload)).toEqual(['small'])
    expect(second.more).toBe(false)
  })

  it('a page of small messages is one full page under the default bound (16 MiB)', async () => {
    b = await new BrokerAppFixture().open()
    const msgs = Array.from({ length: 5000 }, (_, i) => message(i + 1, T0))
    expect((await b.post(makeBatch('gw-1', msgs))).statusCode).toBe(200)
    const page = await b.read('topic=%23&order=arrival&limit=5000')
    expect(page.messages).toHaveLength(5000)
    expect(page.more).toBe(false)
  })
})
