import { afterEach, describe, expect, it } from 'vitest'
import type { WireMessage } from '../../src/protocol/batch.js'
import { startFollowConsumer, type ConsumedLine } from '../helpers/consumer-process.js'
import { makeBatch, message, postBatch, startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'

type Line = ConsumedLine

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A consumer reading everything with the given groups (a node token may not read). */
const startConsumer = async (broker: BrokerProcess, group: string, args: string[]) =>
  startFollowConsumer({
    url: broker.url,
    token: await broker.createToken(`reader-${group}`, { role: 'consumer', topics: '#', groups: group }),
    args: ['--group', group, ...args],
  })

/** Send a batch until the broker acknowledges it (the edge's at-least-once retry). */
async function sendUntilAcked(
  broker: () => BrokerProcess,
  body: Parameters<typeof postBatch>[1],
  token: string,
) {
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      const res = await postBatch(broker().url, body, { token, encoding: 'zstd' })
      if (res.status === 200) return res.body as { accepted: number; duplicates: number; late: number }
      if (res.status !== 503 && res.status !== 429)
        throw new Error(`HTTP ${res.status}: ${JSON.stringify(res.body)}`)
    } catch (err) {
      if (!/ECONNREFUSED|ECONNRESET|socket hang up|EPIPE/.test(String((err as Error).message ?? err)))
        throw err
    }
    await sleep(100)
  }
  throw new Error('batch never acknowledged')
}

const cmp = (a: Line, b: Line) => a.ts - b.ts || (a.node < b.node ? -1 : a.node > b.node ? 1 : a.seq - b.seq)

describe('event-time ordering end to end', () => {
  const cleanups: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  it('two interleaving nodes, one offline for a while (maxLateness 5s): every message once, in order up to W, late ones flagged', async () => {
    const broker = await startBrokerProcess({ env: { RMQ_BROKER_ORDERING_MAX_LATENESS: '5s' } })
    cleanups.push(() => broker.cleanup())
    const tokA = await broker.createToken('gw-a')
    const tokB = await broker.createToken('gw-b')
    const consumer = await startConsumer(broker, 'ordering', [])
    cleanups.push(() => consumer.kill())

    const base = Date.now() - 10 * 60_000
    const N = 60
    const msgsA = Array.from({ length: N }, (_, i) => message(i + 1, base + 10 * i, 'plant/a/temp'))
    const msgsB = Array.from({ length: N }, (_, i) => message(i + 1, base + 10 * i + 5, 'plant/b/temp'))
    // Send `from..to` of a node's messages in batches of 10, reporting the rest as backlog.
    const sync = async (node: 'gw-a' | 'gw-b', msgs: WireMessage[], from: number, to: number) => {
      for (let i = from; i < to; i += 10) {
        const part = msgs.slice(i, Math.min(i + 10, to))
        const rest = msgs.slice(i + part.length)
        const backlog = { pending: rest.length, bytes: rest.length * 30, oldestTs: rest[0]?.ts ?? null }
        await sendUntilAcked(
          () => broker,
          makeBatch(node, part, { clock: Date.now(), backlog }),
          node === 'gw-a' ? tokA : tokB,
        )
      }
    }
    // Both nodes announce their backlogs; then B goes quiet and A syncs everything.
    await postBatch(
      broker.url,
      makeBatch('gw-a', [], {
        clock: Date.now(),
        backlog: { pending: N, bytes: N * 30, oldestTs: msgsA[0].ts },
      }),
      { token: tokA },
    )
    await postBatch(
      broker.url,
      makeBatch('gw-b', [], {
        clock: Date.now(),
        backlog: { pending: N, bytes: N * 30, oldestTs: msgsB[0].ts },
      }),
      { token: tokB },
    )
    await sync('gw-a', msgsA, 0, N)
    await consumer.waitFor(1)
    await sleep(1000)
    // B is still live (silent < 5 s): only A's first message is below B's low mark.
    expect(consumer.lines.map((l) => l.id)).toEqual(['gw-a:epoch-gw-a:1'])
    // B comes back and sends half of its messages: released in order, none late.
    await sync('gw-b', msgsB, 0, N / 2)
    await consumer.waitFor(N)
    expect(
      consumer.lines.filter((l) => l.late).map((l) => l.id),
      JSON.stringify(consumer.lines.map((l) => [l.id, l.ts - base, l.late])),
    ).toEqual([])
    // B goes silent with N/2 pending for longer than maxLateness; A keeps sending heartbeats.
    const until = Date.now() + 6500
    while (Date.now() < until) {
      await postBatch(broker.url, makeBatch('gw-a', [], { clock: Date.now() }), { token: tokA })
      await sleep(300)
    }
    await consumer.waitFor(N + N / 2)
    // B returns: its remaining messages are below the watermark now: released at once, flagged late.
    await sync('gw-b', msgsB, N / 2, N)
    await consumer.waitFor(2 * N)
    await sleep(300)
    const lines = consumer.lines
    expect(lines.length).toBe(2 * N)
    expect(new Set(lines.map((l) => l.id)).size).toBe(2 * N)
    expect(lines.map((l) => l.position)).toEqual(Array.from({ length: 2 * N }, (_, i) => i + 1))
    const onTime = lines.filter((l) => !l.late)
    expect(onTime).toEqual([...onTime].sort(cmp))
    const late = lines.filter((l) => l.late)
    expect(late.map((l) => `${l.node}:${l.seq}`)).toEqual(msgsB.slice(N / 2).map((m) => `gw-b:${m.seq}`))
    expect(await consumer.stop()).toBe(0)
  })

  it('SIGKILL of the broker mid-stream: no acknowledged message lost, none delivered twice to a --group consumer', async () => {
    let broker = await startBrokerProcess()
    cleanups.push(() => broker.cleanup())
    const token = await broker.createToken('gw-k')
    let consumer = await startConsumer(broker, 'crash', [])
    const consumers = [consumer]
    cleanups.push(() => consumers.forEach((c) => c.kill()))

    const t0 = Date.now() - 60_000
    const BATCHES = 40
    const PER = 25
    const acked: string[] = []
    const sendRange = async (from: number, to: number) => {
      for (let b = from; b < to; b++) {
        const msgs = Array.from({ length: PER }, (_, i) =>
          message(b * PER + i + 1, t0 + b * PER + i, `k/${b % 3}`),
        )
        await sendUntilAcked(() => broker, makeBatch('gw-k', msgs, { clock: Date.now() }), token)
        acked.push(...msgs.map((m) => `gw-k:epoch-gw-k:${m.seq}`))
        await sleep(10)
      }
    }
    await sendRange(0, 12)
    await consumer.waitFor(PER)
    // Kill the broker while batches are flowing; restart it on the same port and data; the sender retries.
    const during = sendRange(12, 24)
    while (acked.length < 15 * PER) await sleep(2)
    await broker.kill()
    await sleep(300)
    broker = await broker.restart()
    await during
    // Stop the consumer (gracefully) mid-stream too, and later start another one in the same group.
    const more = sendRange(24, 32)
    while (acked.length < 26 * PER) await sleep(2)
    expect(await consumer.stop()).toBe(0)
    await more
    consumer = await startConsumer(broker, 'crash', [])
    consumers.push(consumer)
    await sendRange(32, BATCHES)
    expect(acked.length).toBe(BATCHES * PER)
    const printed = () => consumers.flatMap((c) => c.lines.map((l) => l.id))
    const until = Date.now() + 20_000
    while (printed().length < acked.length && Date.now() < until) await sleep(50)
    await sleep(500)
    const all = printed()
    expect(new Set(all).size).toBe(all.length)
    expect([...all].sort()).toEqual([...acked].sort())
    const lines = consumers.flatMap((c) => c.lines)
    expect(lines.map((l) => l.position)).toEqual(Array.from({ length: lines.length }, (_, i) => i + 1))
    expect(await consumer.stop(), consumers.map((c) => c.stderr()).join('\n---\n')).toBe(0)
  })
})
