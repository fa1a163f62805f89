import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import { brokerStoreConformance, batchOf, wireMessage } from '../conformance/broker-store-conformance.js'
import { makeTempDir } from '../helpers/cli.js'

brokerStoreConformance('sqlite', async () => {
  const { dir, cleanup } = makeTempDir('rmq-broker-store-')
  return {
    store: await openSqliteBrokerStore({ dataDir: dir }),
    reopen: () => openSqliteBrokerStore({ dataDir: dir }),
    cleanup,
  }
})

describe('sqlite broker store specifics', () => {
  it('uses WAL with synchronous=FULL and a file in the data dir', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const store = await openSqliteBrokerStore({ dataDir: path.join(dir, 'nested') })
      const db = (store as unknown as { db: import('better-sqlite3').Database }).db
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal')
      expect(db.pragma('synchronous', { simple: true })).toBe(2)
      await store.ingest(batchOf('a', [wireMessage(1, 1)]), { now: 2, maxLateness: 1000 })
      await store.close()
      expect(fs.existsSync(path.join(dir, 'nested', 'broker.db'))).toBe(true)
    } finally {
      cleanup()
    }
  })

  it('group commit: concurrent batches share a commit, each with its own result; a failing one spoils only itself', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const store = await openSqliteBrokerStore({ dataDir: dir })
      const ctx = { now: 10_000, maxLateness: 60_000 }
      const broken = { ...wireMessage(1, 5), topic: null as unknown as string }
      const results = await Promise.allSettled([
        store.ingest(batchOf('a', [wireMessage(1, 1), wireMessage(2, 2)], { clock: 100 }), ctx),
        store.ingest(batchOf('b', [wireMessage(1, 3), broken]), ctx),
        store.ingest(batchOf('c', [wireMessage(1, 4)], { clock: 100 }), ctx),
        store.ingest(batchOf('a', [wireMessage(2, 2)], { clock: 100 }), ctx),
      ])
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled'])
      expect((results[0] as PromiseFulfilledResult<{ accepted: number }>).value.accepted).toBe(2)
      expect((results[3] as PromiseFulfilledResult<{ duplicates: number }>).value.duplicates).toBe(1)
      const all = await store.read({ order: 'arrival', after: 0, limit: 10 })
      expect(all.messages.map((m) => `${m.node}${m.seq}`)).toEqual(['a1', 'a2', 'c1'])
      expect((await store.nodes()).map((n) => n.node)).toEqual(['a', 'c'])
      await store.close()
    } finally {
      cleanup()
    }
  })

  it('maps a full disk to StoreUnavailableError and stores nothing', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-store-')
    try {
      const store = await openSqliteBrokerStore({ dataDir: dir })
      const db = (store as unknown as { db: import('better-sqlite3').Database }).db
      const pages = db.pragma('page_count', { simple: true }) as number
      db.pragma(`max_page_count = ${pages + 1}`)
      const big = Array.from({ length: 200 }, (_, i) => wireMessage(i + 1, 1, 't', 'x'.repeat(2000)))
      await expect(store.ingest(batchOf('a', big), { now: 2, maxLateness: 1000 })).rejects.toMatchObject({
        code: 'STORE_UNAVAILABLE',
      })
      expect((await store.heads()).total).toBe(0)
      await store.close()
    } finally {
      cleanup()
    }
  })
})
