/**
 * Bounded memory and work at the broker (docs/guarantees.md "Bounds"): the
 * size of one message, the batch requests one node may have in progress, and
 * the decompressed bytes of all requests in progress together. Each refusal
 * stores nothing of its batch (checked through the broker's own read path).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createNodeToken } from '../../src/broker/tokens.js'
import type { BrokerStore } from '../../src/broker/store/types.js'
import { makeBatch, message } from '../helpers/broker.js'
import { BrokerAppFixture, T0 } from '../helpers/broker-app.js'

/** Hold every ingest of `node` until release() (the requests stay in progress meanwhile). */
function gateIngest(store: BrokerStore, node: string) {
  const original = store.ingest.bind(store)
  let open!: () => void
  const gate = new Promise<void>((resolve) => (open = resolve))
  let waiting = 0
  store.ingest = async (batch, ctx) => {
    if (batch.node === node) {
      waiting++
      await gate
    }
    return original(batch, ctx)
  }
  return { release: () => open(), waiting: () => waiting }
}

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time')
    await new Promise((r) => setTimeout(r, 5))
  }
}

describe('broker limits (inject)', () => {
  let b: BrokerAppFixture
  afterEach(() => b.close())

  const stored = async () => (await b.read('topic=%23&order=arrival')).messages.length

  it('refuses a batch holding a message over broker.limits.messageBytes with 413 naming it', async () => {
    b = await new BrokerAppFixture().open({
      limits: { bodyBytes: 8 << 20, decompressedBytes: 64 << 20, ratePerNode: 0, messageBytes: 1000 },
    })
    const tooBig = async (payload: string, enc: 'utf8' | 'base64', size: number) => {
      const res = await b.post(
        makeBatch('gw-1', [message(1, T0), { ...message(2, T0, 'plant/big'), payload, enc }]),
      )
      expect(res.statusCode, res.body).toBe(413)
      expect(res.json().code).toBe('MESSAGE_TOO_LARGE')
      expect(res.json().error).toMatch(
        new RegExp(
          `seq 2 on topic "plant/big" has a payload of ${size} bytes, over broker.limits.messageBytes \\(1000\\)`,
        ),
      )
      expect(await stored()).toBe(0)
    }
    await tooBig('x'.repeat(1001), 'utf8', 1001)
    // 334 characters of 3 bytes: the count is of bytes, not characters.
    await tooBig('€'.repeat(334), 'utf8', 1002)
    await tooBig(Buffer.alloc(1001, 7).toString('base64'), 'base64', 1001)
    // Exactly at the limit, both ways, is stored.
    const ok = await b.post(
      makeBatch('gw-1', [
        { ...message(1, T0), payload: 'y'.repeat(1000) },
        { ...message(2, T0), payload: Buffer.alloc(1000, 1).toString('base64'), enc: 'base64' },
      ]),
    )
    expect(ok.statusCode, ok.body).toBe(200)
    expect(await stored()).toBe(2)
  })

  it('messageBytes defaults to 1 MiB', async () => {
    b = await new BrokerAppFixture().open()
    const res = await b.post(makeBatch('gw-1', [{ ...message(1, T0), payload: 'z'.repeat((1 << 20) + 1) }]))
    expect(res.statusCode, res.body).toBe(413)
    expect(res.json().error).toMatch(/over broker.limits.messageBytes \(1048576\)/)
    const fine = await b.post(makeBatch('gw-1', [{ ...message(1, T0), payload: 'z'.repeat(1 << 20) }]))
    expect(fine.statusCode, fine.body).toBe(200)
  })

  it('caps the batch requests one node has in progress (429 with Retry-After); other nodes go on', async () => {
    b = await new BrokerAppFixture().open({
      limits: { bodyBytes: 8 << 20, decompressedBytes: 64 << 20, ratePerNode: 0, inFlightPerNode: 2 },
    })
    const other = (await createNodeToken(b.store, 'gw-2')).token
    const gate = gateIngest(b.store, 'gw-1')
    const held = [1, 2].map((s) => b.post(makeBatch('gw-1', [message(s, T0)])))
    await until(() => gate.waiting() === 2)
    const third = await b.post(makeBatch('gw-1', [message(3, T0)]))
    expect(third.statusCode, third.body).toBe(429)
    expect(third.json().code).toBe('TOO_MANY_IN_FLIGHT')
    expect(third.json().error).toMatch(/node gw-1 already has 2 batch request\(s\) in progress/)
    expect(third.headers['retry-after']).toBe('1')
    const fromOther = await b.post(makeBatch('gw-2', [message(1, T0)]), { tok: other })
    expect(fromOther.statusCode, fromOther.body).toBe(200)
    gate.release()
    for (const res of await Promise.all(held)) expect(res.statusCode, res.body).toBe(200)
    // Answered requests no longer count.
    const again = await b.post(makeBatch('gw-1', [message(3, T0)]))
    expect(again.statusCode, again.body).toBe(200)
    expect(await stored()).toBe(4)
  })

  it('shares broker.limits.inFlightBytes among requests in progress (503 with Retry-After when full)', async () => {
    const MiB = 1 << 20
    b = await new BrokerAppFixture().open({
      limits: {
        bodyBytes: 8 << 20,
        decompressedBytes: 64 << 20,
        ratePerNode: 0,
        inFlightBytes: 4 * MiB,
        messageBytes: 8 * MiB,
      },
    })
    const other = (await createNodeToken(b.store, 'gw-2')).token
    const gate = gateIngest(b.store, 'gw-1')
    // Zeros compress far better than 512:1, so this also takes the second, full-size reservation.
    const big = (seq: number, mib: number) =>
      makeBatch('gw-1', [{ ...message(seq, T0), payload: '0'.repeat(mib * MiB - 400) }])
    const first = b.post(big(1, 3), { enc: 'zstd' })
    await until(() => gate.waiting() === 1)
    const second = await b.post(big(2, 2), { enc: 'zstd' })
    expect(second.statusCode, second.body).toBe(503)
    expect(second.json().code).toBe('BROKER_BUSY')
    expect(second.json().error).toMatch(/broker.limits.inFlightBytes/)
    expect(second.headers['retry-after']).toBe('1')
    // A small batch still fits in what is left.
    const small = await b.post(makeBatch('gw-2', [message(1, T0)]), { tok: other, enc: 'zstd' })
    expect(small.statusCode, small.body).toBe(200)
    gate.release()
    expect((await first).statusCode).toBe(200)
    // The first one's bytes are back in the budget.
    const retried = await b.post(big(2, 2), { enc: 'zstd' })
    expect(retried.statusCode, retried.body).toBe(200)
    expect(await stored()).toBe(3)
    // A body that could never fit (over the whole budget) is 413, not a 503 to retry for ever.
    const bomb = await b.post(makeBatch('gw-1', [{ ...message(9, T0), payload: '0'.repeat(5 * MiB) }]), {
      enc: 'zstd',
    })
    expect(bomb.statusCode, bomb.body).toBe(413)
    expect(bomb.json()).toMatchObject({ code: 'DECOMPRESSED_TOO_LARGE' })
    expect(bomb.json().error).toMatch(/broker.limits.inFlightBytes \(3145728 bytes\)/)
  })

  it('bounds stats: short names (400), a small whole (413 STATS_TOO_LARGE), none of it stored or scraped', async () => {
    b = await new BrokerAppFixture().open()
    const batch = (seq: number, stats: unknown) => ({ ...makeBatch('gw-1', [message(seq, T0)]), stats })
    const longName = await b.post(batch(1, { sync: { ['k'.repeat(65)]: 1 } }))
    expect(longName.statusCode, longName.body).toBe(400)
    expect(longName.json().error).toMatch(/stats\/sync.*must NOT have more than 64 characters/)
    // 20 MB of stats in a few names: refused by the name rule before anything is kept.
    const huge = await b.post(
      batch(1, { storage: { ['x'.repeat(10 << 20)]: 1, ['y'.repeat(10 << 20)]: 2 } }),
      {
        enc: 'zstd',
      },
    )
    expect(huge.statusCode).toBe(400)
    // Every part valid, the whole too large: 32 values of 500 characters.
    const wide = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`counter${i}`, 'v'.repeat(500)]))
    const tooLarge = await b.post(batch(1, { sync: wide }))
    expect(tooLarge.statusCode, tooLarge.body).toBe(413)
    expect(tooLarge.json().code).toBe('STATS_TOO_LARGE')
    expect(tooLarge.json().error).toMatch(/body\/stats: \d+ bytes serialised, over the limit of 16384/)
    expect(await stored()).toBe(0)
    const metrics = await b.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Bearer ${b.adminToken}` },
    })
    expect(metrics.statusCode).toBe(200)
    expect(metrics.body).not.toMatch(/vvvvvvvvvv|counter31/)
    // What rmq sends is taken.
    const fine = await b.post(
      batch(1, {
        sync: { attempts: 3, successes: 3, backoff: null, lastError: null },
        storage: { pending: 0 },
      }),
    )
    expect(fine.statusCode, fine.body).toBe(200)
  })
})
