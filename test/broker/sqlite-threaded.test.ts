/**
 * The SQLite store as `rmq broker start` runs it: writes on a writer thread,
 * reads on a second connection. The thread is the compiled
 * dist/broker/store/sqlite-worker.js (`npm test` builds dist/ first), so this
 * file loads the compiled store.
 */
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { ThreadedSqliteStore } from '../../src/broker/store/sqlite-threaded.js'
import type { BrokerStoreOptions } from '../../src/broker/store/types.js'
import { brokerStoreConformance, batchOf, wireMessage } from '../conformance/broker-store-conformance.js'
import { makeTempDir } from '../helpers/cli.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const T0 = 1_764_160_000_000

async function openThreaded(options: BrokerStoreOptions): Promise<ThreadedSqliteStore> {
  const file = path.join(ROOT, 'dist/broker/store/sqlite-threaded.js')
  expect(fs.existsSync(file), 'run `npm run build` first').toBe(true)
  const mod = (await import(file)) as typeof import('../../src/broker/store/sqlite-threaded.js')
  expect(mod.writerThreadAvailable()).toBe(true)
  return mod.openThreadedSqliteStore(options)
}

brokerStoreConformance('sqlite with a writer thread', async () => {
  const { dir, cleanup } = makeTempDir('rmq-broker-threaded-')
  return {
    store: await openThreaded({ dataDir: dir }),
    reopen: () => openThreaded({ dataDir: dir }),
    cleanup,
  }
})

describe('sqlite store with a writer thread', () => {
  it('ships batches as columns; concurrent batches share commits; close answers what was queued', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-threaded-')
    try {
      const store = await openThreaded({ dataDir: dir })
      const ctx = { now: T0, maxLateness: 60_000 }
      const batches = Array.from({ length: 20 }, (_, b) =>
        batchOf(
          `n${b % 4}`,
          Array.from({ length: 150 }, (_, i) => wireMessage(Math.floor(b / 4) * 150 + i + 1, T0 - 1000 + i)),
          { clock: T0 },
        ),
      )
      const acks = Promise.all(batches.map((b) => store.ingest(b, ctx)))
      const closing = store.close()
      expect((await acks).map((a) => a.accepted)).toEqual(batches.map(() => 150))
      await closing
      await expect(store.heads()).rejects.toThrow()
      const again = await openThreaded({ dataDir: dir })
      expect(await again.heads()).toMatchObject({ total: 3000, arrival: 3000 })
      const page = await again.read({ order: 'event', after: 0, limit: 10_000 })
      expect(page.messages).toHaveLength(3000)
      await again.close()
    } finally {
      cleanup()
    }
  })

  it('a full disk in the thread is StoreUnavailableError here (the broker answers 503); nothing is stored', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-threaded-')
    try {
      await (await openThreaded({ dataDir: dir })).close()
      const { default: Database } = await import('better-sqlite3')
      const db = new Database(path.join(dir, 'broker.db'))
      const pages = db.pragma('page_count', { simple: true }) as number
      db.close()
      // The thread reads the failpoint when it opens the file: no room for the batch.
      process.env.RMQ_FAILPOINTS = `broker.sqlite.maxPageCount=${pages + 1}`
      const store = await openThreaded({ dataDir: dir }).finally(() => delete process.env.RMQ_FAILPOINTS)
      const big = Array.from({ length: 300 }, (_, i) => wireMessage(i + 1, T0, 't', 'x'.repeat(4000)))
      await expect(store.ingest(batchOf('a', big), { now: T0, maxLateness: 1000 })).rejects.toMatchObject({
        name: 'StoreUnavailableError',
        code: 'STORE_UNAVAILABLE',
      })
      expect((await store.heads()).total).toBe(0)
      await store.close()
    } finally {
      cleanup()
    }
  })

  it('a store that cannot open rejects with the reason, and no thread is left running', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-threaded-')
    try {
      fs.writeFileSync(
        path.join(dir, 'broker.db'),
        'not a database, just text that is long enough '.repeat(100),
      )
      await expect(openThreaded({ dataDir: dir })).rejects.toThrow(/not a database|file is not a database/i)
    } finally {
      cleanup()
    }
  })
})
