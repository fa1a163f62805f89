/**
 * The Consumer API reads pages with consume.maxPageBytes as the HTTP
 * client's cap and asks the broker for pages of half of it (`maxBytes`): it
 * reads every message across pages cut by bytes, and an answer over the cap
 * is a clear ConfigError naming the key, not "cannot reach the broker".
 */
import { afterEach, describe, expect, it } from 'vitest'
import { startBroker, type RunningBroker } from '../../src/broker/app.js'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import { createNodeToken, createToken } from '../../src/broker/tokens.js'
import { Consumer } from '../../src/core/consumer.js'
import { ConfigError } from '../../src/shared/errors.js'
import { makeBatch, message, postBatch } from '../helpers/broker.js'
import { brokerAppOptions, T0 } from '../helpers/broker-app.js'
import { makeTempDir } from '../helpers/cli.js'

describe('Consumer and consume.maxPageBytes', () => {
  const tmp = makeTempDir('rmq-consumer-bytes-')
  let broker: RunningBroker | undefined
  /** A consumer credential reading plant/#: a node token may not read. */
  let reader: string
  afterEach(async () => {
    await broker?.close()
    tmp.cleanup()
  })

  const open = async () => {
    const store = await openSqliteBrokerStore({ dataDir: tmp.dir })
    const token = (await createNodeToken(store, 'gw-1')).token
    reader = (await createToken(store, { name: 'reader', role: 'consumer', topics: ['plant/#'] })).token
    broker = await startBroker(
      brokerAppOptions(tmp.dir, {
        storeInstance: store,
        limits: { bodyBytes: 8 << 20, decompressedBytes: 64 << 20, ratePerNode: 0, messageBytes: 1 << 20 },
      }),
    )
    return token
  }

  it('reads every message once across pages cut by bytes', async () => {
    const token = await open()
    const msgs = Array.from({ length: 20 }, (_, i) => message(i + 1, T0 + i, 'plant/a', 'p'.repeat(4000)))
    const res = await postBatch(broker!.url, makeBatch('gw-1', msgs), { token })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    const c = new Consumer({
      brokerUrl: broker!.url,
      token: reader,
      topic: 'plant/#',
      order: 'arrival',
      from: 'start',
      maxPageBytes: 20_000,
    })
    const seqs: number[] = []
    let pages = 0
    for (let i = 0; i < 50 && seqs.length < 20; i++) {
      const page = await c.poll()
      pages++
      seqs.push(...page.messages.map((m) => m.seq))
      // Asked for 10,000 bytes: two messages of about 4.3 KB each.
      expect(page.messages.length).toBeLessThanOrEqual(2)
    }
    expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    expect(pages).toBe(10)
    expect((await c.poll()).messages).toEqual([])
  })

  it('a message larger than the cap is a ConfigError naming consume.maxPageBytes', async () => {
    const token = await open()
    const res = await postBatch(
      broker!.url,
      makeBatch('gw-1', [message(1, T0, 'plant/a', 'q'.repeat(50_000))]),
      {
        token,
      },
    )
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    const c = new Consumer({
      brokerUrl: broker!.url,
      token: reader,
      topic: 'plant/#',
      order: 'arrival',
      from: 'start',
      maxPageBytes: 20_000,
    })
    const err = await c.poll().catch((e) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.message).toMatch(/larger than consume.maxPageBytes \(20000 bytes\)/)
    expect(err.suggestion).toMatch(/RMQ_CONSUME_MAX_PAGE_BYTES/)
    // With room for it, the same message is read.
    const roomy = new Consumer({
      brokerUrl: broker!.url,
      token: reader,
      topic: 'plant/#',
      order: 'arrival',
      from: 'start',
      maxPageBytes: 200_000,
    })
    expect((await roomy.poll()).messages.map((m) => m.payload.length)).toEqual([50_000])
  })
})
