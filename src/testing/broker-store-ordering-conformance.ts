/**
 * Ordering bounds every BrokerStore must keep (part of brokerStoreConformance,
 * which calls this inside its describe block): a live node whose low mark is
 * further behind broker time than `maxHoldBack` stops holding the watermark
 * back, so one node cannot stall everyone's event order (docs/ordering.md);
 * node records count what arrived per epoch, for seq gaps (docs/monitoring.md).
 */
import { expect, it } from 'vitest'
import type { IngestContext } from '../broker/store/types.js'
import { batchOf, wireMessage, type StoreHandle } from './broker-store-helpers.js'

const SEC = 1000
const MIN = 60 * SEC
const T0 = 1_764_000_000_000

export function orderingBoundsConformance(handle: () => StoreHandle): void {
  const store = () => handle().store

  it('maxHoldBack: a node heartbeating oldestTs 1 holds others back without the bound, and not with it', async () => {
    const s = store()
    const unbounded: IngestContext = { now: T0, maxLateness: 5 * MIN }
    // Node b claims a pending message from 1970 on every heartbeat: its low mark is 1.
    await s.ingest(
      batchOf('b', [], { clock: T0, backlog: { pending: 1, bytes: 10, oldestTs: 1 } }),
      unbounded,
    )
    await s.ingest(batchOf('a', [wireMessage(1, T0 - SEC)], { clock: T0 }), unbounded)
    expect((await s.read({ order: 'event', after: 0, limit: 10 })).messages).toEqual([])
    const held = await s.heldBack({ now: T0, maxLateness: 5 * MIN })
    expect(held.count).toBe(1)
    expect(held.nodes.map((n) => [n.node, n.lowMark])).toEqual([['b', 1]])

    // With maxHoldBack b is cut loose: the next release (here a heartbeat of b) frees a's message.
    const bounded: IngestContext = { now: T0 + SEC, maxLateness: 5 * MIN, maxHoldBack: 3 * SEC }
    await s.ingest(
      batchOf('b', [], { clock: T0 + SEC, backlog: { pending: 1, bytes: 10, oldestTs: 1 } }),
      bounded,
    )
    const page = await s.read({ order: 'event', after: 0, limit: 10 })
    expect(page.messages.map((m) => [m.node, m.seq, m.late])).toEqual([['a', 1, false]])
    expect((await s.heldBack({ now: T0 + SEC, maxLateness: 5 * MIN, maxHoldBack: 3 * SEC })).nodes).toEqual(
      [],
    )
    // a still holds: its own low mark is recent. A message of a at T0 + 2 s waits for a's next report.
    await s.ingest(batchOf('a', [wireMessage(2, T0 + 2 * SEC)], { clock: T0 + 2 * SEC }), bounded)
    expect((await s.read({ order: 'event', after: page.next, limit: 10 })).messages).toEqual([])
    const r = await s.release({ now: T0 + 3 * SEC, maxLateness: 5 * MIN, maxHoldBack: 3 * SEC })
    expect(r.watermark).toBe(T0 + 2 * SEC)
  })

  it('seq gaps: a node record counts messages received and the highest seq of its current epoch', async () => {
    const s = store()
    const ctx: IngestContext = { now: T0, maxLateness: 5 * MIN }
    await s.ingest(batchOf('g', [wireMessage(1, T0), wireMessage(2, T0)], { batch: 'g1' }), ctx)
    await s.ingest(batchOf('g', [wireMessage(2, T0), wireMessage(5, T0)], { batch: 'g2' }), ctx)
    expect(await s.node('g')).toMatchObject({ epochReceived: 3, epochMaxSeq: 5 })
    // A new outbox (epoch) starts both again.
    await s.ingest(batchOf('g', [wireMessage(1, T0)], { batch: 'g3', epoch: 'epoch-g-2' }), ctx)
    expect(await s.node('g')).toMatchObject({ epochReceived: 1, epochMaxSeq: 1 })
  })
}
