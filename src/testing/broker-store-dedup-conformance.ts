/**
 * Deduplication cases every BrokerStore must get right (part of
 * brokerStoreConformance, which calls this inside its describe block) beyond
 * a plain resend: a node back on an older epoch, and seqs out of order. A
 * store may skip its duplicate check for seqs above what it last recorded of
 * the node (the PostgreSQL store does); these cases make that record stale,
 * low or high, and every stored seq must still count as a duplicate.
 */
import { expect, it } from 'vitest'
import type { IngestContext } from '../broker/store/types.js'
import { batchOf, T0, wireMessage, type StoreHandle } from './broker-store-fixtures.js'

const ctx: IngestContext = { now: T0, maxLateness: 300_000 }
const seqs = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
const batch = (list: number[], epoch: string, id: string) =>
  batchOf(
    'd',
    list.map((s) => wireMessage(s, T0 - 1000 + s)),
    { epoch, batch: id },
  )

export function dedupConformance(handle: () => StoreHandle): void {
  const store = () => handle().store

  it('a node back on an older epoch: what that epoch stored is still a duplicate', async () => {
    const s = store()
    expect(await s.ingest(batch(seqs(1, 6), 'A', 'a1'), ctx)).toMatchObject({ accepted: 6, duplicates: 0 })
    expect(await s.ingest(batch(seqs(1, 2), 'B', 'b1'), ctx)).toMatchObject({ accepted: 2, duplicates: 0 })
    // Epoch A again, from its start: the node's record now says A, highest seq 3.
    expect(await s.ingest(batch(seqs(1, 3), 'A', 'a2'), ctx)).toMatchObject({ accepted: 0, duplicates: 3 })
    // 4..6 are above that record yet stored; 7 is new.
    expect(await s.ingest(batch(seqs(4, 7), 'A', 'a3'), ctx)).toMatchObject({ accepted: 1, duplicates: 3 })
    const page = await s.read({ order: 'arrival', after: 0, limit: 100 })
    expect(page.messages.map((m) => `${m.epoch}:${m.seq}`)).toEqual([
      ...seqs(1, 6).map((n) => `A:${n}`),
      'B:1',
      'B:2',
      'A:7',
    ])
  })

  it('seqs out of order: ones below the highest stored are checked, new and stored alike', async () => {
    const s = store()
    expect(await s.ingest(batch([10, 11], 'A', 'x1'), ctx)).toMatchObject({ accepted: 2 })
    expect(await s.ingest(batch([8, 10, 9, 12], 'A', 'x2'), ctx)).toMatchObject({
      accepted: 3,
      duplicates: 1,
    })
    expect(await s.ingest(batch([9, 12, 11], 'A', 'x3'), ctx)).toMatchObject({ accepted: 0, duplicates: 3 })
    expect((await s.heads()).total).toBe(5)
  })
}
