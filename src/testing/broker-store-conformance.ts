/**
 * Behaviour every BrokerStore must show. Call from a test file:
 *
 *   brokerStoreConformance('sqlite', async () => {
 *     const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'store-'))
 *     return {
 *       store: await openSqliteBrokerStore({ dataDir: dir }),
 *       reopen: () => openSqliteBrokerStore({ dataDir: dir }),
 *       cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
 *     }
 *   })
 *
 * `open` must return a fresh, empty store each time; `reopen` opens a second
 * handle on the same data, for durability across close/reopen and for two
 * handles (two broker processes) writing at once. Every case must assert
 * something: a case that runs no expect() fails.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { BatchBody, WireMessage } from '../protocol/batch.js'
import type { BrokerStore, IngestContext } from '../broker/store/types.js'
import { batchOf, MIN, T0, wireMessage, type StoreHandle } from './broker-store-fixtures.js'
import { dedupConformance } from './broker-store-dedup-conformance.js'
import { fleetConformance } from './broker-store-fleet-conformance.js'
import { orderingBoundsConformance } from './broker-store-ordering-conformance.js'
import { pagingConformance } from './broker-store-paging-conformance.js'
import { tokenConformance } from './broker-store-token-conformance.js'

export { batchOf, wireMessage, type StoreHandle } from './broker-store-fixtures.js'

export function brokerStoreConformance(name: string, open: () => Promise<StoreHandle>): void {
  describe(`BrokerStore conformance: ${name}`, () => {
    let h: StoreHandle
    let store: BrokerStore
    const ctx = (now: number, maxLateness = 5 * MIN): IngestContext => ({ now, maxLateness })
    /** Node a's batch `batch`, sent and received at `clock`, with its backlog report. */
    const report = (clock: number, batch: string, messages: WireMessage[], backlog: BatchBody['backlog']) =>
      store.ingest(batchOf('a', messages, { batch, clock, backlog }), ctx(clock))

    beforeEach(async () => {
      expect.hasAssertions()
      h = await open()
      store = h.store
    })
    afterEach(async () => {
      await store.close().catch(() => {})
      await h.cleanup()
    })

    pagingConformance(() => h)
    orderingBoundsConformance(() => h)
    dedupConformance(() => h)
    tokenConformance(() => h)
    fleetConformance(() => h)

    it('starts empty', async () => {
      expect(await store.heads()).toMatchObject({ event: 0, arrival: 0, watermark: null, held: 0, total: 0 })
      expect(await store.nodes()).toEqual([])
      expect(await store.read({ order: 'event', after: 0, limit: 10 })).toEqual({
        messages: [],
        next: 0,
        more: false,
        head: 0,
        watermark: null,
      })
    })

    it('stores a batch, counts duplicates on resend and adds nothing', async () => {
      const b = batchOf('a', [wireMessage(1, T0 - 3), wireMessage(2, T0 - 2), wireMessage(3, T0 - 1)])
      const first = await store.ingest(b, ctx(T0))
      expect(first).toMatchObject({ accepted: 3, duplicates: 0, late: 0 })
      const again = await store.ingest(b, ctx(T0 + 1))
      expect(again).toMatchObject({ accepted: 0, duplicates: 3 })
      const mixed = await store.ingest(
        batchOf('a', [wireMessage(3, T0 - 1), wireMessage(4, T0)]),
        ctx(T0 + 2),
      )
      expect(mixed).toMatchObject({ accepted: 1, duplicates: 1 })
      const heads = await store.heads()
      expect(heads.total).toBe(4)
      expect(heads.arrival).toBe(4)
      const arrival = await store.read({ order: 'arrival', after: 0, limit: 100 })
      expect(arrival.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4])
      expect(arrival.messages.map((m) => m.arrival)).toEqual([1, 2, 3, 4])
      const m = arrival.messages[0]
      expect(m).toMatchObject({
        node: 'a',
        epoch: 'epoch-a',
        seq: 1,
        topic: 'plant/line1/temp',
        ts: T0 - 3,
        payload: '{"seq":1}',
        enc: 'utf8',
        contentType: 'application/json',
        priority: 4,
        expiresAt: null,
        receivedAt: T0,
      })
    })

    it('keys on (node, epoch, seq): same seq from another epoch or node is new', async () => {
      await store.ingest(batchOf('a', [wireMessage(1, T0)]), ctx(T0))
      const r1 = await store.ingest(batchOf('a', [wireMessage(1, T0)], { epoch: 'other' }), ctx(T0))
      const r2 = await store.ingest(batchOf('b', [wireMessage(1, T0)]), ctx(T0))
      expect(r1.accepted + r2.accepted).toBe(2)
      expect((await store.heads()).total).toBe(3)
    })

    it('a seq twice in one batch is stored once, from its first place; the second counts as a duplicate', async () => {
      const twice = { ...wireMessage(2, T0 - 1), payload: '{"second":true}' }
      const r = await store.ingest(
        batchOf('a', [wireMessage(1, T0 - 3), wireMessage(2, T0 - 2), twice, wireMessage(3, T0)]),
        ctx(T0),
      )
      expect(r).toMatchObject({ accepted: 3, duplicates: 1 })
      const page = await store.read({ order: 'arrival', after: 0, limit: 100 })
      expect(page.messages.map((m) => [m.arrival, m.seq, m.ts, m.payload])).toEqual([
        [1, 1, T0 - 3, '{"seq":1}'],
        [2, 2, T0 - 2, '{"seq":2}'],
        [3, 3, T0, '{"seq":3}'],
      ])
    })

    it('the same batch through two handles at once (a retry via another broker) is stored once', async () => {
      const other = await h.reopen()
      try {
        const msgs = Array.from({ length: 200 }, (_, i) => wireMessage(i + 1, T0 - 200 + i))
        for (let round = 0; round < 5; round++) {
          const b = batchOf(
            'a',
            msgs.map((m) => ({ ...m, seq: m.seq + round * 200 })),
            { batch: `b${round}` },
          )
          const acks = await Promise.all([store.ingest(b, ctx(T0)), other.ingest(b, ctx(T0))])
          expect(acks.map((a) => a.accepted + a.duplicates)).toEqual([200, 200])
          expect(acks[0].accepted + acks[1].accepted).toBe(200)
        }
        const heads = await store.heads()
        expect(heads.total).toBe(1000)
        const page = await other.read({ order: 'arrival', after: 0, limit: 2000 })
        expect(page.messages.map((m) => m.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1))
      } finally {
        await other.close()
      }
    })

    it('records node contact, skew, backlog, low mark, stats and counters', async () => {
      await store.ingest(
        batchOf('gw', [wireMessage(1, T0 - 10_000)], {
          clock: T0 + 1500,
          backlog: { pending: 7, bytes: 700, oldestTs: T0 - 5000 },
          stats: { dropped: 0, storeBytes: 1234 },
        }),
        ctx(T0),
      )
      await store.ingest(batchOf('gw', [wireMessage(1, T0 - 10_000)], { clock: T0 + 1600 }), ctx(T0 + 100))
      await store.ingest(batchOf('gw', [], { clock: T0 + 2000 }), ctx(T0 + 500))
      const n = (await store.node('gw'))!
      expect(n).toMatchObject({
        node: 'gw',
        epoch: 'epoch-gw',
        direct: false,
        firstSeen: T0,
        lastContact: T0 + 500,
        lastSync: T0 + 100,
        clockSkew: 1500,
        lastClock: T0 + 2000,
        backlog: { pending: 0, bytes: 0, oldestTs: null },
        lowMark: T0 + 2000,
        stats: { dropped: 0, storeBytes: 1234 },
        counters: { received: 1, duplicates: 1, late: 0, batches: 3 },
      })
      expect(await store.node('nope')).toBeUndefined()
      expect((await store.nodes()).map((x) => x.node)).toEqual(['gw'])
    })

    it("counts the requests accepted from the node's current epoch, from 1 again when the epoch changes", async () => {
      await store.ingest(batchOf('gw', [wireMessage(1, T0)]), ctx(T0))
      expect((await store.node('gw'))!.epochBatches).toBe(1)
      // A resend (all duplicates) and a heartbeat were accepted too.
      await store.ingest(batchOf('gw', [wireMessage(1, T0)]), ctx(T0 + 1))
      await store.ingest(batchOf('gw', []), ctx(T0 + 2))
      expect((await store.node('gw'))!).toMatchObject({ epochBatches: 3, counters: { batches: 3 } })
      // The node's outbox was recreated: a new epoch counts from 1, the node's totals go on.
      await store.ingest(batchOf('gw', [wireMessage(1, T0 + 3)], { epoch: 'epoch-2' }), ctx(T0 + 3))
      expect((await store.node('gw'))!).toMatchObject({
        epoch: 'epoch-2',
        epochBatches: 1,
        counters: { batches: 4 },
      })
    })

    it('low mark is the oldest pending ts, never above the clock', async () => {
      await store.ingest(
        batchOf('a', [], { clock: T0, backlog: { pending: 3, bytes: 1, oldestTs: T0 - 60_000 } }),
        ctx(T0),
      )
      expect((await store.node('a'))!.lowMark).toBe(T0 - 60_000)
      await store.ingest(
        batchOf('a', [], { clock: T0, backlog: { pending: 1, bytes: 1, oldestTs: T0 + 60_000 } }),
        ctx(T0),
      )
      expect((await store.node('a'))!.lowMark).toBe(T0)
    })

    it('releases in (ts, node, seq) order below the watermark; holds the rest', async () => {
      // Node b announces it holds messages from T0+10; node a is at T0+100 with nothing pending.
      await store.ingest(
        batchOf('b', [], { clock: T0 + 100, backlog: { pending: 3, bytes: 30, oldestTs: T0 + 10 } }),
        ctx(T0 + 100),
      )
      const first = await store.ingest(
        batchOf('a', [wireMessage(1, T0 + 10), wireMessage(2, T0 + 60), wireMessage(3, T0 + 90)], {
          clock: T0 + 100,
        }),
        ctx(T0 + 100),
      )
      expect(first).toMatchObject({ accepted: 3, watermark: T0 + 10 })
      expect((await store.heads()).held).toBe(3)
      const ack = await store.ingest(
        batchOf('b', [wireMessage(1, T0 + 10), wireMessage(2, T0 + 20)], {
          clock: T0 + 100,
          backlog: { pending: 1, bytes: 10, oldestTs: T0 + 50 },
        }),
        ctx(T0 + 100),
      )
      expect(ack.watermark).toBe(T0 + 50)
      let page = await store.read({ order: 'event', after: 0, limit: 100 })
      expect(page.messages.map((m) => `${m.node}${m.seq}`)).toEqual(['a1', 'b1', 'b2'])
      expect(page.messages.map((m) => m.position)).toEqual([1, 2, 3])
      expect(page.next).toBe(3)
      expect((await store.heads()).held).toBe(2)
      // b sends its held message and is now empty: W moves to min(low marks) = T0+100.
      const ack2 = await store.ingest(
        batchOf('b', [wireMessage(3, T0 + 50)], { clock: T0 + 100 }),
        ctx(T0 + 110),
      )
      expect(ack2).toMatchObject({ accepted: 1, late: 0, watermark: T0 + 100 })
      page = await store.read({ order: 'event', after: page.next, limit: 100 })
      expect(page.messages.map((m) => `${m.node}${m.seq}`)).toEqual(['b3', 'a2', 'a3'])
      expect(page.messages.map((m) => m.position)).toEqual([4, 5, 6])
      expect(page.messages.every((m) => !m.late)).toBe(true)
      // Arrival order is ingest order, independent of release.
      const arr = await store.read({ order: 'arrival', after: 0, limit: 100 })
      expect(arr.messages.map((m) => `${m.node}${m.seq}`)).toEqual(['a1', 'a2', 'a3', 'b1', 'b2', 'b3'])
    })

    it('flags a message below the watermark late and releases it at once', async () => {
      await store.ingest(batchOf('a', [wireMessage(1, T0 + 10)], { clock: T0 + 100 }), ctx(T0 + 100))
      expect((await store.heads()).watermark).toBe(T0 + 100)
      const ack = await store.ingest(
        batchOf('a', [wireMessage(2, T0 + 5), wireMessage(3, T0 + 150)], { clock: T0 + 200 }),
        ctx(T0 + 200),
      )
      expect(ack).toMatchObject({ accepted: 2, late: 1, watermark: T0 + 200 })
      const page = await store.read({ order: 'event', after: 1, limit: 10 })
      expect(page.messages.map((m) => [m.seq, m.late])).toEqual([
        [2, true],
        [3, false],
      ])
      expect((await store.node('a'))!.counters.late).toBe(1)
    })

    it("backlog.unacked: the low mark leaves that batch out only when it is the node's last committed batch", async () => {
      const clock = T0 + 10_000
      const first = await report(clock, 'b-first', [wireMessage(1, T0 + 100), wireMessage(2, T0 + 200)], {
        pending: 9,
        bytes: 90,
        oldestTs: T0 + 300,
      })
      expect(first.watermark).toBe(T0 + 300)
      // Sent before 'b-lost' was acknowledged, which never arrived: its oldest ts still counts.
      const second = await report(clock, 'b-second', [wireMessage(5, T0 + 500)], {
        pending: 5,
        bytes: 50,
        oldestTs: T0 + 600,
        unacked: { batch: 'b-lost', oldestTs: T0 + 350 },
      })
      expect(second.watermark).toBe(T0 + 350)
      expect((await store.node('a'))!.lowMark).toBe(T0 + 350)
      // Sent before 'b-second' was acknowledged, and 'b-second' is committed: only oldestTs counts.
      const third = await report(clock, 'b-third', [wireMessage(3, T0 + 350), wireMessage(4, T0 + 400)], {
        pending: 4,
        bytes: 40,
        oldestTs: T0 + 600,
        unacked: { batch: 'b-second', oldestTs: T0 + 500 },
      })
      expect(third).toMatchObject({ accepted: 2, late: 0, watermark: T0 + 600 })
      const page = await store.read({ order: 'event', after: 0, limit: 10 })
      expect(page.messages.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5])
      // Null oldestTs (nothing left) with an unacknowledged batch that is not the last: its oldest ts still holds.
      const fourth = await report(clock, 'b-fourth', [wireMessage(7, T0 + 700)], {
        pending: 0,
        bytes: 0,
        oldestTs: null,
        unacked: { batch: 'b-other', oldestTs: T0 + 650 },
      })
      expect(fourth.watermark).toBe(T0 + 650)
      expect((await store.heads()).held).toBe(1)
      // The node's closing report (an empty batch, nothing in flight) lets it go.
      const closing = await report(clock, 'b-closing', [], { pending: 0, bytes: 0, oldestTs: null })
      expect(closing.watermark).toBe(clock)
      expect((await store.heads()).held).toBe(0)
    })

    it('backlog.unacked: a batch committed after the later one that named it leaves that later report standing', async () => {
      const clock = T0 + 10_000
      const first = await report(clock, 'b-1', [wireMessage(1, T0 + 100)], {
        pending: 2,
        bytes: 20,
        oldestTs: T0 + 200,
      })
      expect(first.watermark).toBe(T0 + 200)
      // The node pipelined b-2 and b-3; the broker commits b-3 first. b-2 is not stored yet: its oldest ts holds.
      const third = await report(clock, 'b-3', [wireMessage(3, T0 + 300)], {
        pending: 0,
        bytes: 0,
        oldestTs: null,
        unacked: { batch: 'b-2', oldestTs: T0 + 200 },
      })
      expect(third.watermark).toBe(T0 + 200)
      // b-2 commits last. Its own report is older (it still counts b-3's message as pending, and names
      // b-1 as unacknowledged); b-3's report, nothing left, is the node's latest word and now holds alone.
      const second = await report(clock, 'b-2', [wireMessage(2, T0 + 200)], {
        pending: 1,
        bytes: 10,
        oldestTs: T0 + 300,
        unacked: { batch: 'b-1', oldestTs: T0 + 100 },
      })
      expect(second).toMatchObject({ accepted: 1, late: 0, watermark: clock })
      const node = (await store.node('a'))!
      expect(node.lowMark).toBe(clock)
      expect(node.backlog).toMatchObject({ pending: 0, bytes: 0, oldestTs: null })
      expect(node.counters).toMatchObject({ received: 3, batches: 3 })
      expect((await store.heads()).held).toBe(0)
      const page = await store.read({ order: 'event', after: 0, limit: 10 })
      expect(page.messages.map((m) => m.seq)).toEqual([1, 2, 3])
      // b-3 is still the node's last committed batch: a batch naming it is not held back by it.
      const fourth = await report(clock, 'b-4', [wireMessage(4, clock + 50)], {
        pending: 0,
        bytes: 0,
        oldestTs: null,
        unacked: { batch: 'b-3', oldestTs: T0 + 300 },
      })
      expect(fourth.watermark).toBe(clock)
      expect((await store.node('a'))!.lowMark).toBe(clock)
    })

    it('the watermark never decreases', async () => {
      await store.ingest(batchOf('a', [], { clock: T0 + 1000 }), ctx(T0))
      expect((await store.heads()).watermark).toBe(T0 + 1000)
      // A new node with an old low mark cannot pull W back.
      const ack = await store.ingest(
        batchOf('b', [], { clock: T0, backlog: { pending: 1, bytes: 1, oldestTs: T0 - 5000 } }),
        ctx(T0),
      )
      expect(ack.watermark).toBe(T0 + 1000)
    })

    it('a silent node stops holding the watermark back after maxLateness (release on a timer)', async () => {
      await store.ingest(
        batchOf('slow', [], { clock: T0, backlog: { pending: 5, bytes: 1, oldestTs: T0 - 10_000 } }),
        ctx(T0),
      )
      await store.ingest(batchOf('fast', [wireMessage(1, T0 - 1000)], { clock: T0 }), ctx(T0))
      expect((await store.heads()).held).toBe(1)
      let r = await store.release(ctx(T0 + 4 * MIN))
      expect(r.released).toBe(0)
      // fast keeps talking; slow has been silent for more than 5 minutes.
      await store.ingest(batchOf('fast', [], { clock: T0 + 6 * MIN }), ctx(T0 + 6 * MIN))
      r = await store.release(ctx(T0 + 6 * MIN))
      expect((await store.heads()).held).toBe(0)
      expect((await store.heads()).watermark).toBe(T0 + 6 * MIN)
    })

    it('with no live edge node, everything held is released', async () => {
      await store.ingest(
        batchOf('a', [wireMessage(1, T0 + 10), wireMessage(2, T0 + 20)], {
          clock: T0,
          backlog: { pending: 1, bytes: 1, oldestTs: T0 },
        }),
        ctx(T0),
      )
      expect((await store.heads()).held).toBe(2)
      const r = await store.release(ctx(T0 + 10 * MIN))
      expect(r.released).toBe(2)
      const page = await store.read({ order: 'event', after: 0, limit: 10 })
      expect(page.messages.map((m) => m.seq)).toEqual([1, 2])
    })

    it('direct producers do not hold the watermark back', async () => {
      await store.ingest(batchOf('edge', [], { clock: T0 + 1000 }), ctx(T0))
      await store.ingest(batchOf('direct1', [wireMessage(1, T0 + 500)], { clock: T0, direct: true }), ctx(T0))
      const heads = await store.heads()
      expect(heads.watermark).toBe(T0 + 1000)
      expect(heads.held).toBe(0)
      expect((await store.node('direct1'))!.direct).toBe(true)
    })

    it('filters by MQTT topic filter and pages past non-matching rows', async () => {
      const msgs = [
        wireMessage(1, T0 + 1, 'plant/line1/temp'),
        wireMessage(2, T0 + 2, 'plant/line2/temp'),
        wireMessage(3, T0 + 3, 'plant/line1/pressure'),
        wireMessage(4, T0 + 4, 'office/temp'),
        wireMessage(5, T0 + 5, 'plant'),
      ]
      await store.ingest(batchOf('a', msgs, { clock: T0 + 100 }), ctx(T0 + 100))
      const seqs = async (topic: string, order: 'event' | 'arrival' = 'event') =>
        (await store.read({ order, after: 0, limit: 100, topic })).messages.map((m) => m.seq)
      expect(await seqs('plant/+/temp')).toEqual([1, 2])
      expect(await seqs('plant/#')).toEqual([1, 2, 3, 5])
      expect(await seqs('#')).toEqual([1, 2, 3, 4, 5])
      expect(await seqs('office/temp', 'arrival')).toEqual([4])
      const page = await store.read({ order: 'event', after: 0, limit: 1, topic: 'plant/line1/#' })
      expect(page.messages.map((m) => m.seq)).toEqual([1])
      const page2 = await store.read({ order: 'event', after: page.next, limit: 10, topic: 'plant/line1/#' })
      expect(page2.messages.map((m) => m.seq)).toEqual([3])
      expect(page2.next).toBe(5)
    })

    it('round-trips base64 payloads, headers and nulls', async () => {
      const m: WireMessage = {
        seq: 1,
        topic: 't',
        ts: T0,
        payload: Buffer.from([0, 255, 1]).toString('base64'),
        enc: 'base64',
        expiresAt: T0 + 1000,
        priority: 9,
        contentType: null,
        headers: { k: 'v' },
      }
      await store.ingest(batchOf('a', [m]), ctx(T0))
      const [got] = (await store.read({ order: 'arrival', after: 0, limit: 1 })).messages
      expect(got).toMatchObject({
        payload: m.payload,
        enc: 'base64',
        expiresAt: T0 + 1000,
        priority: 9,
        contentType: null,
        headers: { k: 'v' },
      })
    })

    it('consumer group positions never move backwards', async () => {
      expect(await store.groupPosition('g', 'event')).toBeUndefined()
      expect(await store.commitGroup('g', 'event', 10, T0)).toBe(10)
      expect(await store.commitGroup('g', 'event', 5, T0 + 1)).toBe(10)
      expect(await store.commitGroup('g', 'arrival', 3, T0)).toBe(3)
      expect(await store.groupPosition('g', 'event')).toBe(10)
      expect(await store.groupPosition('g', 'arrival')).toBe(3)
      expect((await store.listGroups()).map((g) => [g.name, g.order, g.position])).toEqual([
        ['g', 'arrival', 3],
        ['g', 'event', 10],
      ])
    })

    it('purges released messages older than the cutoff, never held ones; positions keep growing', async () => {
      await store.ingest(
        batchOf('a', [wireMessage(1, T0), wireMessage(2, T0 + 1)], { clock: T0 + 10 }),
        ctx(T0 + 10),
      )
      await store.ingest(
        batchOf('a', [wireMessage(3, T0 + 20)], {
          clock: T0 + 30,
          backlog: { pending: 1, bytes: 1, oldestTs: T0 + 15 },
        }),
        ctx(T0 + 1000),
      )
      expect((await store.heads()).held).toBe(1)
      expect(await store.purge({ receivedBefore: T0 + 2000, limit: 1 })).toBe(1)
      expect(await store.purge({ receivedBefore: T0 + 2000, limit: 100 })).toBe(1)
      expect(await store.purge({ receivedBefore: T0 + 2000, limit: 100 })).toBe(0)
      const heads = await store.heads()
      expect(heads).toMatchObject({ total: 1, held: 1, event: 2, arrival: 3 })
      await store.ingest(batchOf('a', [wireMessage(4, T0 + 40)], { clock: T0 + 50 }), ctx(T0 + 1100))
      const page = await store.read({ order: 'event', after: 0, limit: 10 })
      expect(page.messages.map((m) => [m.seq, m.position])).toEqual([
        [3, 3],
        [4, 4],
      ])
      expect(
        (await store.read({ order: 'arrival', after: 0, limit: 10 })).messages.map((m) => m.arrival),
      ).toEqual([3, 4])
    })

    it('keeps everything durable across close and reopen', async () => {
      await store.ingest(batchOf('a', [wireMessage(1, T0)], { clock: T0 + 10 }), ctx(T0 + 10))
      await store.putToken({ name: 'a', role: 'node', topics: [], groups: [], expiresAt: null }, 'ha', T0)
      await store.commitGroup('g', 'event', 1, T0)
      await store.close()
      store = await h.reopen()
      expect(await store.heads()).toMatchObject({ event: 1, arrival: 1, watermark: T0 + 10, total: 1 })
      expect(await store.findToken('ha')).toMatchObject({ name: 'a', role: 'node' })
      expect(await store.groupPosition('g', 'event')).toBe(1)
      expect((await store.ingest(batchOf('a', [wireMessage(1, T0)]), ctx(T0 + 20))).duplicates).toBe(1)
    })

    it('two handles on one store (two broker processes) assign unique increasing positions', async () => {
      const other = await h.reopen()
      try {
        const jobs: Promise<unknown>[] = []
        for (let i = 0; i < 20; i++) {
          const s = i % 2 ? store : other
          jobs.push(
            s.ingest(batchOf(`n${i % 4}`, [wireMessage(i + 1, T0 + i)], { clock: T0 + 100 }), ctx(T0)),
          )
        }
        await Promise.all(jobs)
        const ev = await store.read({ order: 'event', after: 0, limit: 100 })
        expect(ev.messages.map((m) => m.position)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
        const arr = await other.read({ order: 'arrival', after: 0, limit: 100 })
        expect(arr.messages.map((m) => m.arrival)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
      } finally {
        await other.close()
      }
    })

    it('alerts: one active per rule:node, fired and resolved once, history kept', async () => {
      const a = { rule: 'no-sync' as const, node: 'gw', severity: 'critical' as const, threshold: MIN }
      const fired = await store.fireAlert({ ...a, message: 'silent 2m', value: 2 * MIN }, T0)
      expect(fired).toMatchObject({
        key: 'no-sync:gw',
        rule: 'no-sync',
        node: 'gw',
        state: 'active',
        value: 2 * MIN,
        threshold: MIN,
        firedAt: T0,
        resolvedAt: null,
      })
      expect(await store.fireAlert({ ...a, message: 'again', value: 3 * MIN }, T0 + 1)).toBeUndefined()
      expect(await store.updateAlert('no-sync:gw', { value: 4 * MIN, message: 'silent 4m' }, T0 + 2)).toBe(
        true,
      )
      expect(await store.listAlerts({ state: 'active', limit: 10 })).toMatchObject([
        { id: fired!.id, value: 4 * MIN, message: 'silent 4m', updatedAt: T0 + 2 },
      ])
      const resolved = await store.resolveAlert('no-sync:gw', T0 + 3)
      expect(resolved).toMatchObject({ id: fired!.id, state: 'resolved', resolvedAt: T0 + 3 })
      expect(await store.resolveAlert('no-sync:gw', T0 + 4)).toBeUndefined()
      expect(await store.updateAlert('no-sync:gw', { value: 1, message: 'x' }, T0 + 4)).toBe(false)
      const again = await store.fireAlert({ ...a, message: 'silent again', value: 2 * MIN }, T0 + 5)
      expect(again!.id).toBeGreaterThan(fired!.id)
      await store.fireAlert(
        { ...a, rule: 'data-loss', severity: 'warning', message: '3 lost', value: 3 },
        T0 + 6,
      )
      expect((await store.listAlerts({ limit: 10 })).map((r) => [r.key, r.state])).toEqual([
        ['data-loss:gw', 'active'],
        ['no-sync:gw', 'active'],
        ['no-sync:gw', 'resolved'],
      ])
      expect((await store.listAlerts({ state: 'resolved', limit: 10 })).map((r) => r.id)).toEqual([fired!.id])
      expect((await store.listAlerts({ limit: 1 })).length).toBe(1)
      expect((await store.latestAlerts()).map((r) => [r.key, r.id])).toEqual([
        ['no-sync:gw', again!.id],
        ['data-loss:gw', again!.id + 1],
      ])
    })

    it('alerts: two handles firing and resolving the same alert at once agree on one of each', async () => {
      const other = await h.reopen()
      try {
        const a = { rule: 'no-sync' as const, node: 'gw', severity: 'critical' as const, threshold: 1 }
        const fires = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            (i % 2 ? store : other).fireAlert({ ...a, message: 'm', value: 2 }, T0),
          ),
        )
        expect(fires.filter(Boolean).length).toBe(1)
        const resolves = await Promise.all(
          Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).resolveAlert('no-sync:gw', T0 + 1)),
        )
        expect(resolves.filter(Boolean).length).toBe(1)
        expect(await other.listAlerts({ limit: 10 })).toHaveLength(1)
      } finally {
        await other.close()
      }
    })
  })
}
