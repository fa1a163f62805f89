/**
 * BrokerStore conformance, the reads a fleet cache is made of (fleet-rows.ts):
 * node row versions that move with every write of a row, the rows of given
 * ids, fingerprints that move with every node row write and node credential
 * change, and the node credentials alone. Run by brokerStoreConformance.
 */
import { expect, it } from 'vitest'
import type { NewTokenRecord } from '../broker/store/types.js'
import { FleetRows } from '../broker/fleet-rows.js'
import { batchOf, MIN, T0, wireMessage, type StoreHandle } from './broker-store-fixtures.js'

const nodeToken = (name: string): NewTokenRecord => ({
  name,
  role: 'node',
  topics: [],
  groups: [],
  expiresAt: null,
})

export function fleetConformance(handle: () => StoreHandle): void {
  const store = () => handle().store
  const ctx = (now: number) => ({ now, maxLateness: 5 * MIN })

  it('node versions move with every write of a row; nodesNamed reads the rows of given ids', async () => {
    expect(await store().nodeVersions()).toEqual([])
    expect(await store().nodesNamed([])).toEqual([])
    await store().ingest(batchOf('gw-b', [wireMessage(1, T0)]), ctx(T0))
    await store().ingest(batchOf('gw-a', [wireMessage(1, T0)]), ctx(T0))
    const v1 = await store().nodeVersions()
    expect(v1.map(([node]) => node)).toEqual(['gw-a', 'gw-b'])
    // A resend (duplicates only) and a heartbeat write the row too: its version moves each time.
    await store().ingest(batchOf('gw-a', [wireMessage(1, T0)]), ctx(T0 + 1))
    const v2 = new Map(await store().nodeVersions())
    expect(v2.get('gw-a')).toBeGreaterThan(new Map(v1).get('gw-a')!)
    expect(v2.get('gw-b')).toBe(new Map(v1).get('gw-b'))
    await store().ingest(batchOf('gw-a', [], { batch: 'hb' }), ctx(T0 + 2))
    expect(new Map(await store().nodeVersions()).get('gw-a')).toBeGreaterThan(v2.get('gw-a')!)
    const named = await store().nodesNamed(['gw-b', 'nope', 'gw-a'])
    expect(named.map((r) => r.node).sort()).toEqual(['gw-a', 'gw-b'])
    expect(named.find((r) => r.node === 'gw-a')).toEqual(await store().node('gw-a'))
    expect(named.find((r) => r.node === 'gw-b')).toEqual(await store().node('gw-b'))
  })

  it('fleet fingerprints move with node row writes and node credential changes only', async () => {
    const f0 = await store().fleetVersions()
    expect(await store().fleetVersions()).toEqual(f0)
    await store().ingest(batchOf('gw-1', [wireMessage(1, T0)]), ctx(T0))
    const f1 = await store().fleetVersions()
    expect(f1.nodes).not.toBe(f0.nodes)
    expect(f1.tokens).toBe(f0.tokens)
    await store().ingest(batchOf('gw-1', [], { batch: 'hb' }), ctx(T0 + 1))
    const f2 = await store().fleetVersions()
    expect(f2.nodes).not.toBe(f1.nodes)
    await store().putToken(nodeToken('gw-1'), 'h1', T0)
    const f3 = await store().fleetVersions()
    expect(f3.nodes).toBe(f2.nodes)
    expect(f3.tokens).not.toBe(f2.tokens)
    // Other roles are not nodes; using a token is no change; replacing or removing one is.
    await store().putToken({ ...nodeToken('ops'), role: 'monitor' }, 'm1', T0)
    await store().touchToken('gw-1', T0 + 5)
    expect(await store().fleetVersions()).toEqual(f3)
    await store().putToken(nodeToken('gw-1'), 'h1b', T0 + 7)
    const f4 = await store().fleetVersions()
    expect(f4.tokens).not.toBe(f3.tokens)
    await store().revokeToken('gw-1')
    expect((await store().fleetVersions()).tokens).not.toBe(f4.tokens)
    await store().putToken(nodeToken('gw-2'), 'h2', T0 + 9)
    expect(await store().nodeTokens()).toEqual([{ name: 'gw-2', createdAt: T0 + 9 }])
  })

  it('a FleetRows read has every write made before it, by this handle or another', async () => {
    const rows = new FleetRows(store())
    await store().putToken(nodeToken('gw-1'), 'h1', T0)
    expect(await rows.read()).toEqual({ records: [], tokens: [{ name: 'gw-1', createdAt: T0 }] })
    await store().ingest(batchOf('gw-1', [wireMessage(1, T0)]), ctx(T0))
    let read = await rows.read()
    expect(read.records.map((r) => [r.node, r.counters.received])).toEqual([['gw-1', 1]])
    expect(rows.lastChanged).toBe(1)
    // Nothing written: nothing read again, the same records.
    const again = await rows.read()
    expect(again.records[0]).toBe(read.records[0])
    expect(rows.lastChanged).toBe(0)
    const other = await handle().reopen()
    try {
      await other.ingest(batchOf('gw-2', [wireMessage(1, T0)]), ctx(T0 + 1))
      await other.ingest(batchOf('gw-1', [wireMessage(2, T0 + 1)], { batch: 'b2' }), ctx(T0 + 1))
      await other.putToken(nodeToken('gw-3'), 'h3', T0 + 2)
      // Reads asked at once share the work and still see all of it.
      const [a, b] = await Promise.all([rows.read(), rows.read()])
      for (const r of [a, b]) {
        expect(r.records.map((x) => [x.node, x.counters.received])).toEqual([
          ['gw-1', 2],
          ['gw-2', 1],
        ])
        expect(r.tokens.map((t) => t.name)).toEqual(['gw-1', 'gw-3'])
      }
      read = await rows.read()
      expect(read.records[1]).toBe(a.records[1])
    } finally {
      await other.close()
    }
  })
}
