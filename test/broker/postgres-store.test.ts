import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openBrokerStore } from '../../src/broker/store/index.js'
import { openPostgresBrokerStore } from '../../src/broker/store/postgres-open.js'
import { MIGRATIONS } from '../../src/broker/store/postgres-schema.js'
import type { BrokerStore } from '../../src/broker/store/types.js'
import { StoreUnavailableError } from '../../src/broker/store/types.js'
import { HUNG_AFTER_MS, WATCH_EVERY_MS } from '../../src/broker/store/postgres-watchdog.js'
import { LISTEN_PING_MS } from '../../src/broker/store/postgres.js'
import { batchOf, brokerStoreConformance, wireMessage } from '../../src/testing/broker-store-conformance.js'
import { sleep } from '../../src/shared/clock.js'
import { FaultProxy } from '../helpers/fault-proxy.js'
import { migrateTo, postgresAvailability, startPgCluster, type PgCluster } from '../helpers/postgres.js'

const pg = postgresAvailability()
const T0 = 1_764_000_000_000
const ctx = (now: number) => ({ now, maxLateness: 300_000 })

describe.skipIf(!pg.ok)('postgres broker store', () => {
  let cluster: PgCluster
  beforeAll(async () => {
    cluster = await startPgCluster()
  })
  afterAll(async () => {
    await cluster?.stop()
  })

  brokerStoreConformance('postgres', async () => {
    const db = await cluster.createDatabase()
    return {
      store: await openPostgresBrokerStore({ dataDir: '', url: db.url }),
      reopen: () => openPostgresBrokerStore({ dataDir: '', url: db.url }),
      cleanup: () => db.drop(),
    }
  })

  describe('postgres specifics', () => {
    it('is chosen by broker.store=postgres and honours PG* variables when the URL is empty', async () => {
      const db = await cluster.createDatabase()
      const saved = { ...process.env }
      Object.assign(process.env, {
        PGHOST: '127.0.0.1',
        PGPORT: String(cluster.port),
        PGUSER: 'postgres',
        PGDATABASE: db.name,
      })
      try {
        const store = await openBrokerStore('postgres', { dataDir: '' })
        expect(store.kind).toBe('postgres')
        await store.ingest(batchOf('a', [wireMessage(1, T0)]), ctx(T0))
        await store.close()
        const check = await openPostgresBrokerStore({ dataDir: '', url: db.url })
        expect((await check.heads()).total).toBe(1)
        await check.close()
      } finally {
        for (const k of ['PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE']) delete process.env[k]
        Object.assign(process.env, saved)
        await db.drop()
      }
    })

    it('migrates once when several brokers start at the same time', async () => {
      const db = await cluster.createDatabase()
      try {
        const stores = await Promise.all(
          Array.from({ length: 4 }, () => openPostgresBrokerStore({ dataDir: '', url: db.url })),
        )
        for (const s of stores) expect(await s.heads()).toMatchObject({ total: 0, event: 0 })
        await Promise.all(stores.map((s) => s.close()))
        const { default: pgmod } = await import('pg')
        const c = new pgmod.Client({ connectionString: db.url })
        await c.connect()
        const v = await c.query('SELECT version FROM rmq_schema_version ORDER BY version')
        await c.end()
        expect(v.rows.map((r) => r.version)).toEqual(MIGRATIONS.map((_, i) => i + 1))
      } finally {
        await db.drop()
      }
    })

    it('migrates a database from before rmq_nodes.epoch_batches in place (0 for known nodes, then counting)', async () => {
      const db = await cluster.createDatabase()
      const { default: pgmod } = await import('pg')
      const c = new pgmod.Client({ connectionString: db.url })
      await c.connect()
      try {
        // The schema and a node as a broker of the previous migration left them.
        const before = 7 // the schema before lock-free ingest (migration 8)
        await migrateTo(c, before)
        await c.query(
          `INSERT INTO rmq_nodes (node, epoch, direct, first_seen, last_contact, clock_skew, last_clock, backlog_pending,
             backlog_bytes, low_mark, received, duplicates, late, batches)
           VALUES ('old', 'epoch-old', false, $1, $1, 0, $1, 0, 0, $1, 5, 0, 0, 2)`,
          [T0],
        )
        const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
        try {
          expect(await store.node('old')).toMatchObject({ epochBatches: 0, counters: { batches: 2 } })
          await store.ingest(batchOf('old', [], { batch: 'b-hb' }), ctx(T0 + 1))
          expect(await store.node('old')).toMatchObject({ epochBatches: 1, counters: { batches: 3 } })
        } finally {
          await store.close()
        }
        const v = await c.query('SELECT MAX(version) AS v FROM rmq_schema_version')
        expect(v.rows[0].v).toBe(MIGRATIONS.length)
      } finally {
        await c.end()
        await db.drop()
      }
    })

    it('round-trips payloads PostgreSQL text cannot hold (U+0000)', async () => {
      const db = await cluster.createDatabase()
      const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
      try {
        const payload = 'a\u0000b\u00e9\u{1F600}'
        await store.ingest(batchOf('a', [wireMessage(1, T0, 't', payload)]), ctx(T0))
        const [m] = (await store.read({ order: 'arrival', after: 0, limit: 1 })).messages
        expect(m.payload).toBe(payload)
      } finally {
        await store.close()
        await db.drop()
      }
    })

    it('wakes subscribers of another handle (another broker) on commit, not before', async () => {
      const db = await cluster.createDatabase()
      const a = await openPostgresBrokerStore({ dataDir: '', url: db.url })
      const b = await openPostgresBrokerStore({ dataDir: '', url: db.url })
      try {
        let calls = 0
        let wake: () => void = () => {}
        const unsubscribe = b.subscribe(() => {
          calls++
          wake()
        })
        // The first call comes when LISTEN is in place.
        await new Promise<void>((r) => (wake = r))
        const base = calls
        const woken = new Promise<void>((r) => (wake = r))
        await a.ingest(batchOf('n', [wireMessage(1, T0)], { clock: T0 + 10 }), ctx(T0))
        await woken
        expect(calls).toBe(base + 1)
        // A heartbeat that neither adds nor releases anything does not wake anyone.
        await a.ingest(batchOf('n', [], { clock: T0 + 10 }), ctx(T0 + 1))
        await a.heads()
        unsubscribe()
        expect(calls).toBe(base + 1)
      } finally {
        await a.close()
        await b.close()
        await db.drop()
      }
    })

    it('concurrent batches on one broker commit in their own transactions; a bad one fails alone', async () => {
      const db = await cluster.createDatabase()
      const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
      try {
        const results = await Promise.allSettled([
          store.ingest(batchOf('a', [wireMessage(1, T0), wireMessage(2, T0 + 1)]), ctx(T0)),
          // ts beyond bigint: PostgreSQL refuses this batch, in its own transaction.
          store.ingest(batchOf('b', [wireMessage(1, 1e20)]), ctx(T0)),
          store.ingest(batchOf('c', [wireMessage(1, T0 + 2)]), ctx(T0)),
        ])
        expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
        const acks = results.map((r) => (r.status === 'fulfilled' ? r.value : null))
        expect(acks[0]).toMatchObject({ accepted: 2, duplicates: 0 })
        expect(acks[2]).toMatchObject({ accepted: 1 })
        expect(await store.ingest(batchOf('a', [wireMessage(2, T0 + 1)]), ctx(T0))).toMatchObject({
          accepted: 0,
          duplicates: 1,
        })
        const arr = await store.read({ order: 'arrival', after: 0, limit: 10 })
        // Arrival order between the two committed batches is their commit order; within one, its order.
        expect(arr.messages.map((m) => m.arrival)).toEqual([1, 2, 3])
        const keys = arr.messages.map((m) => `${m.node}${m.seq}`)
        expect([...keys].sort()).toEqual(['a1', 'a2', 'c1'])
        expect(keys.indexOf('a1')).toBeLessThan(keys.indexOf('a2'))
        expect(await store.heads()).toMatchObject({ total: 3, arrival: 3 })
        expect(await store.node('b')).toBeUndefined()
      } finally {
        await store.close()
        await db.drop()
      }
    })

    it('a cursor reader never sees a position appear behind it while six brokers ingest and release concurrently', async () => {
      const db = await cluster.createDatabase()
      const stores: BrokerStore[] = await Promise.all(
        Array.from({ length: 6 }, () => openPostgresBrokerStore({ dataDir: '', url: db.url })),
      )
      try {
        const NODES = 16
        const BATCHES = 25
        const PER = 20
        const deadline = Date.now() + 120_000
        let done = false
        const writers = Array.from({ length: NODES }, async (_, n) => {
          for (let b = 0; b < BATCHES && Date.now() < deadline; b++) {
            const msgs = Array.from({ length: PER }, (_, i) => {
              const seq = b * PER + i + 1
              return wireMessage(seq, T0 + seq * 10 + n)
            })
            const last = msgs[msgs.length - 1].ts
            const s = stores[(n + b) % stores.length]
            await s.ingest(batchOf(`node-${n}`, msgs, { clock: last + 1, batch: `b${n}-${b}` }), ctx(T0))
            if (b % 3 === 0) await stores[(n + b + 1) % stores.length].release(ctx(T0))
          }
        })
        const reader = async (order: 'event' | 'arrival', first: number) => {
          const seen: number[] = []
          let after = 0
          for (let i = first; Date.now() < deadline; i++) {
            const finished = done
            const page = await stores[i % stores.length].read({ order, after, limit: 50 })
            for (const m of page.messages) {
              const p = order === 'event' ? m.position! : m.arrival
              // Every position a page gives is above the cursor and above the last one given.
              expect(p).toBeGreaterThan(after)
              after = p
              seen.push(p)
            }
            after = page.next
            if (finished && page.messages.length === 0) return { order, seen }
          }
          throw new Error(`the ${order} reader did not finish in time`)
        }
        const readers = [reader('event', 0), reader('arrival', 1), reader('event', 2), reader('arrival', 3)]
        await Promise.all(writers)
        await stores[0].release(ctx(T0 + 3_600_000))
        done = true
        const seen = await Promise.all(readers)
        const total = NODES * BATCHES * PER
        const expected = Array.from({ length: total }, (_, i) => i + 1)
        // Every reader saw every position once, in order: none appeared behind a cursor.
        for (const r of seen) expect(r.seen, r.order).toEqual(expected)
        const all = await stores[0].read({ order: 'event', after: 0, limit: 10_000 })
        expect(all.messages).toHaveLength(total)
        const keys = all.messages.map((m) => [m.ts, m.node, m.seq] as const)
        for (let i = 1; i < keys.length; i++) {
          const [pt, pn, ps] = keys[i - 1]
          const [t, n, s] = keys[i]
          const late = all.messages[i].late
          if (!late) expect(pt < t || (pt === t && (pn < n || (pn === n && ps < s)))).toBe(true)
        }
        expect(new Set(all.messages.map((m) => `${m.node}/${m.seq}`)).size).toBe(total)
        expect(await stores[1].heads()).toMatchObject({ total, held: 0, event: total, arrival: total })
      } finally {
        await Promise.all(stores.map((s) => s.close()))
        await db.drop()
      }
    })

    it('maps an unreachable server to exit 69 with a suggestion, a missing database to exit 78', async () => {
      const port = await new Promise<number>((resolve) => {
        const srv = net.createServer().listen(0, '127.0.0.1', () => {
          const p = (srv.address() as net.AddressInfo).port
          srv.close(() => resolve(p))
        })
      })
      await expect(
        openPostgresBrokerStore({ dataDir: '', url: `postgres://postgres@127.0.0.1:${port}/x` }),
      ).rejects.toMatchObject({ exitCode: 69, suggestion: expect.stringContaining('broker.postgres.url') })
      await expect(
        openPostgresBrokerStore({ dataDir: '', url: cluster.urlFor('no_such_db') }),
      ).rejects.toMatchObject({ exitCode: 78 })
    })

    it('answers StoreUnavailableError (503) when the server goes away, and recovers', async () => {
      const db = await cluster.createDatabase()
      const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
      try {
        await store.ingest(batchOf('a', [wireMessage(1, T0)]), ctx(T0))
        await cluster.admin(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${db.name}' AND pid <> pg_backend_pid()`,
        )
        // Pooled connections were killed: the first use fails as unavailable (or reconnects cleanly).
        const r = await store.ingest(batchOf('a', [wireMessage(2, T0)]), ctx(T0)).then(
          (ack) => ack,
          (err: { code?: string }) => err,
        )
        if (!('accepted' in r)) expect(r.code).toBe('STORE_UNAVAILABLE')
        const again = await store.ingest(batchOf('a', [wireMessage(2, T0)]), ctx(T0))
        expect(again.accepted + again.duplicates).toBe(1)
        expect((await store.heads()).total).toBe(2)
      } finally {
        await store.close()
        await db.drop()
      }
    })
    /** A store through a fresh fault proxy, and a second handle straight to the same database. */
    async function throughProxy() {
      const db = await cluster.createDatabase()
      const proxy = await new FaultProxy({ host: '127.0.0.1', port: cluster.port }).start()
      const url = new URL(db.url)
      url.port = String(proxy.port)
      const store = await openPostgresBrokerStore({ dataDir: '', url: url.toString() })
      const direct = await openPostgresBrokerStore({ dataDir: '', url: db.url })
      const done = async () => {
        await direct.close()
        await store.close()
        await proxy.stop()
        await db.drop()
      }
      return { proxy, store, direct, done }
    }

    /** A commit by another handle (another broker): node d's message `seq`. */
    const commitBy = (other: BrokerStore, seq: number) =>
      other.ingest(batchOf('d', [wireMessage(seq, T0 + seq)], { batch: `d${seq}` }), ctx(T0 + seq))

    it('gives up a LISTEN that is never answered (the link went silent while listening began) and listens again', async () => {
      const { proxy, store, direct, done } = await throughProxy()
      let woken = 0
      let unsubscribe = () => {}
      try {
        await store.ingest(batchOf('a', [wireMessage(1, T0)]), ctx(T0))
        // The listening connection is made, and then its LISTEN never arrives: before any ping runs.
        proxy.setMode({ kind: 'mute-new' })
        unsubscribe = store.subscribe(() => woken++)
        await sleep(500)
        expect(woken).toBe(0) // listening never began (a LISTEN that began fires the subscribers)
        proxy.setMode({ kind: 'pass' })
        for (const until = Date.now() + LISTEN_PING_MS + 10_000; woken === 0 && Date.now() < until;)
          await sleep(100)
        expect(woken).toBeGreaterThan(0)
        // It listens for real: a commit by another handle wakes it.
        const before = woken
        await commitBy(direct, 1)
        for (let i = 0; i < 40 && woken === before; i++) await sleep(50)
        expect(woken).toBeGreaterThan(before)
      } finally {
        unsubscribe()
        await done()
      }
    }, 60_000)
    it('answers 503 for an ingest sent into a silent partition, within the watchdog bound, and recovers', async () => {
      const { proxy, store, direct, done } = await throughProxy()
      let woken = 0
      const unsubscribe = store.subscribe(() => woken++)
      try {
        await store.ingest(batchOf('a', [wireMessage(1, T0)]), ctx(T0))
        // Packets dropped without a reset: before the watchdog this ingest answered after 200 s,
        // and only because the test stopped the server.
        proxy.setMode({ kind: 'partition' })
        const started = Date.now()
        const err = await store
          .ingest(batchOf('a', [wireMessage(2, T0 + 1)], { batch: 'b2' }), ctx(T0 + 1))
          .then(
            () => undefined,
            (e: unknown) => e,
          )
        const waited = Date.now() - started
        expect(err).toBeInstanceOf(StoreUnavailableError)
        // The bound, one watch interval, the check's 5 s connect timeout, and slack for a loaded machine.
        expect(waited).toBeGreaterThanOrEqual(HUNG_AFTER_MS - 1000)
        expect(waited).toBeLessThan(HUNG_AFTER_MS + WATCH_EVERY_MS + 5000 + 10_000)
        // The link is back: the node's retry is taken (as new or as a duplicate: the first may have committed).
        proxy.setMode({ kind: 'pass' })
        let ack
        for (let i = 0; i < 50 && !ack; i++) {
          ack = await store
            .ingest(batchOf('a', [wireMessage(2, T0 + 1)], { batch: 'b2' }), ctx(T0 + 2))
            .catch(() => sleep(200))
        }
        expect(ack && ack.accepted + ack.duplicates).toBe(1)
        expect((await store.heads()).total).toBe(2)
        // Its LISTEN connection, deaf through the partition, was given up (an unanswered ping) and
        // made again: a commit by another broker wakes its subscribers again.
        let seq = 3
        for (const until = Date.now() + 30_000; Date.now() < until;) {
          const before = woken
          await commitBy(direct, seq++)
          await sleep(500)
          if (woken > before) break
        }
        const before = woken
        await commitBy(direct, seq)
        for (let i = 0; i < 40 && woken === before; i++) await sleep(50)
        expect(woken).toBeGreaterThan(before)
      } finally {
        unsubscribe()
        await done()
      }
    }, 120_000)
  })
})
