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
import type { BatchBody } from '../../src/protocol/batch.js'
import type { BrokerStore, BrokerStoreOptions, IngestContext } from '../../src/broker/store/types.js'
import { brokerStoreConformance, batchOf, wireMessage } from '../../src/testing/broker-store-conformance.js'
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

/** The same store, told that every batch has company: batches are committed on the writer thread. */
function markedConcurrent(store: ThreadedSqliteStore): BrokerStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'ingest')
        return (batch: BatchBody, ctx: IngestContext) => target.ingest(batch, { ...ctx, concurrent: 1 })
      const value = Reflect.get(target, prop, receiver) as unknown
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}

brokerStoreConformance('sqlite with a writer thread, every batch concurrent', async () => {
  const { dir, cleanup } = makeTempDir('rmq-broker-threaded-')
  return {
    store: markedConcurrent(await openThreaded({ dataDir: dir })),
    reopen: async () => markedConcurrent(await openThreaded({ dataDir: dir })),
    cleanup,
  }
})

describe('sqlite store with a writer thread', () => {
  it('lone and concurrent batches, mixed at random, store every message once with unique positions', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-threaded-')
    try {
      const store = await openThreaded({ dataDir: dir })
      let seed = 7
      const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
      const nodes = ['a', 'b', 'c', 'd']
      const next = new Map(nodes.map((n) => [n, 1]))
      let now = T0
      for (let round = 0; round < 40; round++) {
        now += 100
        const group = nodes.filter(() => rnd() < 0.6)
        await Promise.all(
          group.map((node, i) => {
            const from = next.get(node)!
            next.set(node, from + 50)
            const batch = batchOf(
              node,
              Array.from({ length: 50 }, (_, k) => wireMessage(from + k, now - 1000 + k)),
              { clock: now },
            )
            // A resend of the same batch now and then: counted as duplicates, stored once.
            const resend =
              rnd() < 0.2 ? [store.ingest(batch, { now, maxLateness: 60_000, concurrent: 1 })] : []
            return Promise.all([
              store.ingest(batch, {
                now,
                maxLateness: 60_000,
                concurrent: rnd() < 0.5 ? 0 : group.length - 1 + i,
              }),
              ...resend,
            ])
          }),
        )
        if (rnd() < 0.3) await store.release({ now: now + 1, maxLateness: 60_000 })
      }
      await store.release({ now: now + 10_000_000, maxLateness: 60_000 })
      const total = [...next.values()].reduce((a, v) => a + v - 1, 0)
      expect(await store.heads()).toMatchObject({ total, held: 0, event: total, arrival: total })
      const page = await store.read({ order: 'event', after: 0, limit: 100_000 })
      expect(page.messages.map((m) => m.position)).toEqual(Array.from({ length: total }, (_, i) => i + 1))
      expect(new Set(page.messages.map((m) => `${m.node}:${m.seq}`)).size).toBe(total)
      await store.close()
    } finally {
      cleanup()
    }
  })

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
      const acks = Promise.all(batches.map((b) => store.ingest(b, { ...ctx, concurrent: 1 })))
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

  it('ingestJson: the thread parses and checks a JSON body as the route does, and refuses with the same HttpErrors', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-threaded-')
    try {
      const store = await openThreaded({ dataDir: dir })
      const { HttpError } = (await import(
        path.join(ROOT, 'dist/broker/http-error.js')
      )) as typeof import('../../src/broker/http-error.js')
      const ctx = { now: T0, maxLateness: 60_000 }
      const checks = {
        messageBytes: 1 << 20,
        authNode: 'n1',
        now: T0,
        futureSkew: { maxMs: 300_000, policy: 'reject' as const },
      }
      const bytesOf = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v))
      const big = 'p'.repeat(900_000)
      const body = batchOf(
        'n1',
        Array.from({ length: 6 }, (_, i) => wireMessage(i + 1, T0 - 1000 + i, 'plant/big', big)),
        { clock: T0 },
      )
      const bytes = bytesOf(body)
      const reply = await store.ingestJson(bytes, checks, ctx)
      expect(reply).toMatchObject({ accepted: 6, duplicates: 0, batch: body.batch, count: 6 })
      // The bytes went to the thread (transferred, not copied).
      expect(bytes.buffer.byteLength).toBe(0)
      const page = await store.read({ order: 'arrival', after: 0, limit: 10 })
      expect(page.messages.map((m) => [m.seq, m.payload.length])).toEqual(
        [1, 2, 3, 4, 5, 6].map((seq) => [seq, big.length]),
      )
      const refusal = async (bytes: Buffer, c = checks) => {
        const err = (await store.ingestJson(bytes, c, ctx).catch((e: unknown) => e)) as InstanceType<
          typeof HttpError
        >
        expect(err).toBeInstanceOf(HttpError)
        return [err.statusCode, err.code, err.message]
      }
      const n2 = (messages = [wireMessage(1, T0)], opts = {}) =>
        batchOf('n2', messages, { clock: T0, ...opts })
      const as2 = { ...checks, authNode: 'n2' }
      expect(await refusal(Buffer.from([0x7b, 0xff, 0x7d]))).toEqual([
        400,
        'INVALID_UTF8',
        'the JSON body is not valid UTF-8',
      ])
      expect((await refusal(bytesOf('{"node":')))[1]).toBe('MALFORMED_JSON')
      expect(await refusal(bytesOf({ ...n2(), clock: 1.5 }), as2)).toEqual([
        400,
        'INVALID_BODY',
        'body/clock must be integer',
      ])
      expect((await refusal(bytesOf(n2()), checks)).slice(0, 2)).toEqual([403, 'WRONG_NODE'])
      expect((await refusal(bytesOf(n2([wireMessage(1, T0), wireMessage(1, T0)])), as2)).slice(0, 2)).toEqual(
        [400, 'DUPLICATE_SEQ'],
      )
      expect(
        (await refusal(bytesOf(n2([wireMessage(1, T0, 'plant/big', 'x'.repeat(1_100_000))])), as2)).slice(
          0,
          2,
        ),
      ).toEqual([413, 'MESSAGE_TOO_LARGE'])
      expect((await refusal(bytesOf(n2([wireMessage(1, T0 + 3_600_000)])), as2)).slice(0, 2)).toEqual([
        400,
        'TS_IN_FUTURE',
      ])
      // Nothing of a refused body was stored; the thread keeps serving.
      expect(await store.heads()).toMatchObject({ total: 6 })
      expect((await store.ingestJson(bytesOf(n2()), as2, ctx)).accepted).toBe(1)
      await store.close()
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

  it('if the thread dies, writes carry on on the main connection', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-threaded-')
    try {
      const store = await openThreaded({ dataDir: dir })
      const ctx = { now: T0, maxLateness: 60_000, concurrent: 1 }
      expect((await store.ingest(batchOf('a', [wireMessage(1, T0 - 5)]), ctx)).accepted).toBe(1)
      await (store as unknown as { worker: import('node:worker_threads').Worker }).worker.terminate()
      expect((await store.ingest(batchOf('a', [wireMessage(2, T0 - 4)]), ctx)).accepted).toBe(1)
      expect(await store.commitGroup('g', 'event', 0, T0)).toBe(0)
      expect((await store.heads()).total).toBe(2)
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

describe('sqlite store with a writer thread: the forwarding table', () => {
  it('forwards every method of the SQLite store, and the thread runs only the writes', async () => {
    const mod = (await import(
      path.join(ROOT, 'dist/broker/store/sqlite-threaded.js')
    )) as typeof import('../../src/broker/store/sqlite-threaded.js')
    const sqlite = (await import(
      path.join(ROOT, 'dist/broker/store/sqlite.js')
    )) as typeof import('../../src/broker/store/sqlite.js')
    const ownMethods = (proto: object) =>
      Object.getOwnPropertyNames(proto).filter(
        (n) => n !== 'constructor' && typeof Object.getOwnPropertyDescriptor(proto, n)?.value === 'function',
      )
    // The SQLite store's BrokerStore methods live on its class and the ingest class it extends.
    const storeMethods = new Set([
      ...ownMethods(sqlite.SqliteBrokerStore.prototype),
      ...ownMethods(Object.getPrototypeOf(sqlite.SqliteBrokerStore.prototype) as object),
    ])
    const threaded = new Set(ownMethods(mod.ThreadedSqliteStore.prototype))
    for (const m of ['read', 'release', 'putToken', 'rotateToken', 'findToken', 'commitGroup', 'fireAlert'])
      expect(threaded.has(m), m).toBe(true)
    // ingestJson is the threaded store's own (the plain store has no other thread to parse on).
    for (const m of threaded)
      if (!['forward', 'write', 'side', 'mode', 'call', 'stop', 'ingestJson'].includes(m))
        expect(storeMethods.has(m), m).toBe(true)
    expect([...mod.THREAD_METHODS].sort()).toEqual(
      [
        'close',
        'commitGroup',
        'fireAlert',
        'ingestColumns',
        'ingestJson',
        'purge',
        'putToken',
        'release',
        'resolveAlert',
        'revokeToken',
        'rotateToken',
        'touchToken',
        'updateAlert',
      ].sort(),
    )
  })

  it('the thread refuses a method it does not run (a read) with an error, and keeps serving', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-threaded-')
    const store = await openThreaded({ dataDir: dir })
    try {
      const call = (store as unknown as { call: (m: string, a: unknown[]) => Promise<unknown> }).call.bind(
        store,
      )
      await expect(call('listTokens', [])).rejects.toThrow(/does not run listTokens/)
      await expect(call('revokeToken', ['nobody'])).resolves.toBe(false)
    } finally {
      await store.close()
      cleanup()
    }
  })
})
