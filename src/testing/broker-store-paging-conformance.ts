/**
 * Paging behaviour every BrokerStore must show (part of
 * brokerStoreConformance, which calls this inside its describe block): a page
 * says whether it stopped before the head (`more`), a filtered read never
 * ends early, and the held report names the nodes the watermark waits for.
 */
import { expect, it } from 'vitest'
import type { BrokerStore, IngestContext, ReadOrder, StoredMessage } from '../broker/store/types.js'
import { topicMatcher } from '../protocol/topic-filter.js'
import { batchOf, MIN, T0, wireMessage, type StoreHandle } from './broker-store-fixtures.js'

const ctx = (now: number, maxLateness = 5 * MIN): IngestContext => ({ now, maxLateness })

/** Every page of a read from the start, following `next` while `more` (at most `maxPages`). */
async function readAll(
  store: BrokerStore,
  order: ReadOrder,
  topic: string | undefined,
  limit: number,
  maxPages = 10_000,
) {
  const got: StoredMessage[] = []
  let after = 0
  let pages = 0
  let last
  do {
    last = await store.read({ order, after, limit, topic })
    expect(last.messages.length).toBeLessThanOrEqual(limit)
    expect(last.next).toBeGreaterThanOrEqual(after)
    got.push(...last.messages)
    after = last.next
  } while (last.more && ++pages < maxPages)
  expect(last.more).toBe(false)
  return { messages: got, last, pages: pages + 1 }
}

const key = (order: ReadOrder) => (m: StoredMessage) => (order === 'event' ? m.position! : m.arrival)

export function pagingConformance(handle: () => StoreHandle): void {
  const store = () => handle().store

  it('paging: 20,000 non-matching then 3 matching messages; one filtered read from the start finds the 3', async () => {
    const s = store()
    const N = 20_000
    for (let i = 0; i < N; i += 2000)
      await s.ingest(
        batchOf(
          'a',
          Array.from({ length: 2000 }, (_, k) => wireMessage(i + k + 1, T0 + i + k, 'a/x')),
          { batch: `b${i}`, clock: T0 + N + 10 },
        ),
        ctx(T0 + N),
      )
    await s.ingest(
      batchOf(
        'a',
        [1, 2, 3].map((k) => wireMessage(N + k, T0 + N + k, `id/y${k}`)),
        { batch: 'last', clock: T0 + N + 10 },
      ),
      ctx(T0 + N),
    )
    for (const order of ['event', 'arrival'] as const) {
      const r = await readAll(s, order, 'id/#', 100)
      expect(r.messages.map((m) => m.seq)).toEqual([N + 1, N + 2, N + 3])
      expect(r.last).toMatchObject({ head: N + 3, next: N + 3, more: false })
      // An exact topic, and a filter matching nothing at all.
      expect((await readAll(s, order, 'id/y2', 100)).messages.map((m) => m.seq)).toEqual([N + 2])
      const none = await s.read({ order, after: 0, limit: 100, topic: 'nothing/#' })
      expect(none).toMatchObject({ messages: [], next: N + 3, more: false, head: N + 3 })
      // Past the head: nothing, and `next` stays where it was asked.
      expect(await s.read({ order, after: N + 10, limit: 10, topic: 'id/#' })).toMatchObject({
        messages: [],
        next: N + 10,
        more: false,
      })
    }
  })

  it('paging: a full page says more and next is its last message; the last page says more: false at the head', async () => {
    const s = store()
    const topics = ['p/1', 'q/1', 'p/2', 'p/1', 'q/2', 'p/3', 'p/1']
    await s.ingest(
      batchOf(
        'a',
        topics.map((t, i) => wireMessage(i + 1, T0 + i, t)),
        { clock: T0 + 100 },
      ),
      ctx(T0 + 100),
    )
    for (const order of ['event', 'arrival'] as const) {
      const first = await s.read({ order, after: 0, limit: 2, topic: 'p/#' })
      expect(first.messages.map((m) => m.seq)).toEqual([1, 3])
      expect(first).toMatchObject({ next: key(order)(first.messages[1]), more: true, head: 7 })
      const all = await s.read({ order, after: 0, limit: 3 })
      expect(all).toMatchObject({ next: 3, more: true, head: 7 })
      const rest = await s.read({ order, after: first.next, limit: 10, topic: 'p/#' })
      expect(rest.messages.map((m) => m.seq)).toEqual([4, 6, 7])
      expect(rest).toMatchObject({ next: 7, more: false, head: 7 })
    }
    const page = await s.read({ order: 'event', after: 0, limit: 1 })
    expect(page.watermark).toBe((await s.heads()).watermark)
  })

  it('paging: every filter, few or many matching topics, in pages of 7, gives what a full read filtered by hand gives', async () => {
    const s = store()
    // 100 topics under m/ (more than a store may merge by index) and a few others, interleaved.
    const topicOf = (i: number) =>
      i % 3 === 0 ? `m/${i % 100}` : i % 3 === 1 ? `n/${i % 5}/t` : i % 7 === 0 ? 'n' : 'o/x/y'
    const N = 3000
    for (let i = 0; i < N; i += 500)
      await s.ingest(
        batchOf(
          'a',
          Array.from({ length: 500 }, (_, k) =>
            wireMessage(i + k + 1, T0 + ((i + k) % 1000), topicOf(i + k)),
          ),
          { batch: `b${i}`, clock: T0 + 2000 },
        ),
        ctx(T0 + 2000),
      )
    for (const order of ['event', 'arrival'] as const) {
      const everything = (await readAll(s, order, undefined, 1000)).messages
      expect(everything.length).toBe(N)
      for (const filter of ['m/+', 'm/7', 'n/#', 'n/+/t', '+/2/t', '+/x/#', 'n', 'o/x/y', '+', 'zzz/#']) {
        const match = topicMatcher(filter)
        const want = everything.filter((m) => match(m.topic)).map(key(order))
        const got = (await readAll(s, order, filter, 7)).messages.map(key(order))
        expect(got, `${order} ${filter}`).toEqual(want)
      }
    }
  })

  it('paging: a filter that matches every stored topic reads as # does, until another handle stores one it does not match', async () => {
    const s = store()
    const h = handle()
    const msgs = Array.from({ length: 20 }, (_, k) => wireMessage(k + 1, T0 + k, `a/${k % 2}`))
    await s.ingest(batchOf('a', msgs, { clock: T0 + 100 }), ctx(T0 + 100))
    for (const order of ['event', 'arrival'] as const) {
      const all = (await readAll(s, order, '#', 3)).messages.map(key(order))
      expect(all).toHaveLength(20)
      expect((await readAll(s, order, 'a/#', 3)).messages.map(key(order)), order).toEqual(all)
    }
    const other = await h.reopen()
    try {
      await other.ingest(
        batchOf('a', [wireMessage(21, T0 + 21, 'b/1'), wireMessage(22, T0 + 22, 'a/0')], {
          batch: 'b2',
          clock: T0 + 120,
        }),
        ctx(T0 + 120),
      )
    } finally {
      await other.close()
    }
    for (const order of ['event', 'arrival'] as const) {
      const seqs = async (filter: string) => (await readAll(s, order, filter, 4)).messages.map((m) => m.seq)
      expect(await seqs('a/#'), order).toEqual(expect.not.arrayContaining([21]))
      expect((await seqs('a/#')).length, order).toBe(21)
      expect(await seqs('b/#'), order).toEqual([21])
      expect((await seqs('#')).length, order).toBe(22)
    }
  })

  it('paging: topics first stored through another handle are found by a filtered read', async () => {
    const s = store()
    const h = handle()
    await s.ingest(batchOf('a', [wireMessage(1, T0, 'old/t')], { clock: T0 + 10 }), ctx(T0 + 10))
    expect((await s.read({ order: 'arrival', after: 0, limit: 10, topic: 'new/#' })).messages).toEqual([])
    const other = await h.reopen()
    try {
      await other.ingest(
        batchOf('a', [wireMessage(2, T0 + 1, 'new/t')], { batch: 'b2', clock: T0 + 20 }),
        ctx(T0 + 20),
      )
    } finally {
      await other.close()
    }
    for (const order of ['event', 'arrival'] as const) {
      const page = await s.read({ order, after: 0, limit: 10, topic: 'new/#' })
      expect(
        page.messages.map((m) => m.topic),
        order,
      ).toEqual(['new/t'])
    }
  })

  it('held report: counts matching held messages and names the live nodes the watermark waits for', async () => {
    const s = store()
    // b is live but quiet: its low mark (T0) holds back a's newer messages.
    await s.ingest(batchOf('b', [], { batch: 'hb', clock: T0 }), ctx(T0))
    await s.ingest(
      batchOf(
        'a',
        [wireMessage(1, T0 + 10, 'id/a'), wireMessage(2, T0 + 20, 'id/a'), wireMessage(3, T0 + 30, 'x/y')],
        { clock: T0 + 60_000 },
      ),
      ctx(T0 + 60_000),
    )
    const now = T0 + 60_000
    const page = await s.read({ order: 'event', after: 0, limit: 10, topic: 'id/#' })
    expect(page).toMatchObject({ messages: [], more: false, watermark: T0 })
    const held = await s.heldBack({ topic: 'id/#', now, maxLateness: 5 * MIN })
    expect(held).toEqual({ count: 2, capped: false, nodes: [{ node: 'b', lowMark: T0, lastContact: T0 }] })
    expect((await s.heldBack({ now, maxLateness: 5 * MIN })).count).toBe(3)
    expect(await s.heldBack({ topic: 'x/#', now, maxLateness: 5 * MIN })).toMatchObject({ count: 1 })
    expect(await s.heldBack({ topic: 'none/#', now, maxLateness: 5 * MIN })).toEqual({
      count: 0,
      capped: false,
      nodes: [],
    })
    // b silent past maxLateness: it holds nothing back any more, and the release frees the messages.
    const later = T0 + 6 * MIN
    await s.release(ctx(later))
    expect(await s.heldBack({ topic: 'id/#', now: later, maxLateness: 5 * MIN })).toEqual({
      count: 0,
      capped: false,
      nodes: [],
    })
    expect(
      (await s.read({ order: 'event', after: 0, limit: 10, topic: 'id/#' })).messages.map((m) => m.seq),
    ).toEqual([1, 2])
  })
}
