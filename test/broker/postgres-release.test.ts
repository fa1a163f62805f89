/**
 * The PostgreSQL store without a shared ingest lock (postgres-release.ts):
 * migration in place from the schema before it, and a release pass whose
 * connection is killed mid-pass (another broker takes over); a low mark
 * committed above a pass's horizon; an open transaction holding positions
 * back, as /metrics shows it.
 */
import pgmod from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createBrokerApp } from '../../src/broker/app.js'
import { openPostgresBrokerStore } from '../../src/broker/store/postgres-open.js'
import { MIGRATIONS } from '../../src/broker/store/postgres-schema.js'
import type { BrokerStore, StoredMessage } from '../../src/broker/store/types.js'
import { createToken } from '../../src/broker/tokens.js'
import { batchOf, wireMessage } from '../../src/testing/broker-store-conformance.js'
import { brokerAppOptions } from '../helpers/broker-app.js'
import { makeTempDir } from '../helpers/cli.js'
import { migrateTo, postgresAvailability, startPgCluster, type PgCluster } from '../helpers/postgres.js'

const pg = postgresAvailability()
const T0 = 1_764_000_000_000
const ctx = (now: number) => ({ now, maxLateness: 300_000 })
/** The last migration before lock-free ingest. */
const OLD_SCHEMA = 7
/** The last migration before the batch log (migration 10). */
const BEFORE_BATCH_LOG = 9

async function readAll(store: BrokerStore, order: 'event' | 'arrival'): Promise<StoredMessage[]> {
  const out: StoredMessage[] = []
  let after = 0
  for (let i = 0; i < 10_000; i++) {
    const page = await store.read({ order, after, limit: 1000 })
    out.push(...page.messages)
    after = page.next
    if (!page.more) return out
  }
  throw new Error('readAll did not finish')
}

describe.skipIf(!pg.ok)('postgres store: release passes', () => {
  let cluster: PgCluster
  beforeAll(async () => {
    cluster = await startPgCluster()
  })
  afterAll(async () => {
    await cluster?.stop()
  })

  it('migrates a database of the old schema with messages in it in place and loses nothing', async () => {
    const db = await cluster.createDatabase()
    const c = new pgmod.Client({ connectionString: db.url })
    await c.connect()
    try {
      await migrateTo(c, OLD_SCHEMA)
      // As a broker of the old schema left it: arrivals 1..8, 1..5 released (3 late), 6..8 held.
      for (let a = 1; a <= 8; a++) {
        const held = a > 5
        await c.query(
          `INSERT INTO rmq_messages (arrival, node, epoch, seq, topic, ts, payload, enc, content_type, priority,
             expires_at, headers, received_at, position, late)
           VALUES ($1, 'old', 'epoch-old', $1, 'plant/t', $2, $3, 'utf8', NULL, 4, NULL, NULL, $4, $5, $6)`,
          [a, T0 + (held ? 200 + (9 - a) : a * 10), Buffer.from(`{"a":${a}}`), T0, held ? null : a, a === 3],
        )
      }
      await c.query(
        `UPDATE rmq_meta SET watermark = $1, next_position = 6, next_arrival = 9, held = 3, ingested = 8`,
        [T0 + 100],
      )
      await c.query(
        `INSERT INTO rmq_nodes (node, epoch, direct, first_seen, last_contact, clock_skew, last_clock, backlog_pending,
           backlog_bytes, low_mark, received, duplicates, late, batches)
         VALUES ('old', 'epoch-old', false, $1, $1, 0, $1, 0, 0, $2, 8, 0, 1, 2)`,
        [T0, T0 + 100],
      )
      await c.query(`INSERT INTO rmq_groups (name, ord, position, updated_at) VALUES ('g', 'event', 4, $1)`, [
        T0,
      ])

      const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
      try {
        expect(await store.heads()).toMatchObject({
          event: 5,
          arrival: 8,
          watermark: T0 + 100,
          held: 3,
          total: 8,
        })
        const arrival = await readAll(store, 'arrival')
        expect(arrival.map((m) => [m.arrival, m.seq, m.position])).toEqual([
          [1, 1, 1],
          [2, 2, 2],
          [3, 3, 3],
          [4, 4, 4],
          [5, 5, 5],
          [6, 6, null],
          [7, 7, null],
          [8, 8, null],
        ])
        expect(arrival.map((m) => m.payload)).toEqual(arrival.map((m) => `{"a":${m.arrival}}`))
        expect((await readAll(store, 'event')).map((m) => [m.position, m.late])).toEqual([
          [1, false],
          [2, false],
          [3, true],
          [4, false],
          [5, false],
        ])
        expect(await store.groupPosition('g', 'event')).toBe(4)
        // The old rows still deduplicate; a new one gets the next arrival; the node's report moves W
        // past everything, so the held ones are released in ts order after the old positions.
        const ack = await store.ingest(
          batchOf('old', [wireMessage(2, T0 + 20), wireMessage(9, T0 + 150)], { clock: T0 + 1000 }),
          ctx(T0 + 1000),
        )
        expect(ack).toMatchObject({ accepted: 1, duplicates: 1, late: 0, watermark: T0 + 1000 })
        const after = await readAll(store, 'event')
        expect(after.map((m) => [m.position, m.seq])).toEqual([
          [1, 1],
          [2, 2],
          [3, 3],
          [4, 4],
          [5, 5],
          [6, 9],
          [7, 8],
          [8, 7],
          [9, 6],
        ])
        expect((await readAll(store, 'arrival')).map((m) => m.arrival)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9])
        expect(await store.heads()).toMatchObject({
          event: 9,
          arrival: 9,
          watermark: T0 + 1000,
          held: 0,
          total: 9,
        })
        expect(await store.purge({ receivedBefore: T0 + 1, limit: 100 })).toBe(8)
        expect((await readAll(store, 'event')).map((m) => m.seq)).toEqual([9])
        expect(await store.heads()).toMatchObject({ event: 9, arrival: 9, total: 1 })
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

  it('migrates schema 9 in place: messages committed but not yet given arrivals move to the batch log, in order', async () => {
    const db = await cluster.createDatabase()
    const c = new pgmod.Client({ connectionString: db.url })
    await c.connect()
    try {
      await migrateTo(c, BEFORE_BATCH_LOG)
      // One transaction per batch, as schema 9's ingest wrote them (their tx and id by default).
      const batch = (node: string, seqs: number[]) =>
        c.query(
          `INSERT INTO rmq_messages (node, epoch, seq, topic, ts, payload, enc, content_type, priority, expires_at,
             headers, received_at)
           SELECT $1, 'e', s, 'plant/' || $1, $2::bigint + s, convert_to('{"s":' || s || '}', 'UTF8'), 'utf8',
             NULL, 4, NULL, NULL, $2 FROM unnest($3::bigint[]) AS s`,
          [node, T0, seqs],
        )
      await batch('old', [1, 2, 3])
      // A pass of schema 9 gave those arrivals 1..3 and released them (no live node).
      await c.query('SELECT * FROM rmq_pass($1, 0, NULL)', [T0 + 1_000_000])
      // Then two more batches committed, and the broker died before its pass: no arrival yet.
      await batch('old', [5, 4])
      await batch('other', [1])

      const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
      try {
        expect(await store.heads()).toMatchObject({ arrival: 3, event: 3, total: 3 })
        const log = await c.query<{ node: string; seqs: string[] }>(
          'SELECT node, seqs FROM rmq_batches ORDER BY tx',
        )
        expect(log.rows.map((r) => [r.node, r.seqs.map(Number)])).toEqual([
          ['old', [5, 4]],
          ['other', [1]],
        ])
        const { released } = await store.release(ctx(T0 + 1_000_000))
        expect(released).toBe(3)
        const arrival = await readAll(store, 'arrival')
        expect(arrival.map((m) => [m.arrival, m.node, m.seq, m.payload])).toEqual([
          [1, 'old', 1, '{"s":1}'],
          [2, 'old', 2, '{"s":2}'],
          [3, 'old', 3, '{"s":3}'],
          [4, 'old', 5, '{"s":5}'],
          [5, 'old', 4, '{"s":4}'],
          [6, 'other', 1, '{"s":1}'],
        ])
        // Released after the first three, in (ts, node, seq) order.
        expect((await readAll(store, 'event')).map((m) => [m.position, m.node, m.seq])).toEqual([
          [1, 'old', 1],
          [2, 'old', 2],
          [3, 'old', 3],
          [4, 'other', 1],
          [5, 'old', 4],
          [6, 'old', 5],
        ])
        // The migrated rows still deduplicate.
        const ack = await store.ingest(
          batchOf('old', [wireMessage(4, T0 + 4), wireMessage(6, T0 + 6)], { epoch: 'e', clock: T0 + 10 }),
          ctx(T0 + 1_000_000),
        )
        expect(ack).toMatchObject({ accepted: 1, duplicates: 1 })
        expect(await store.heads()).toMatchObject({ arrival: 7, total: 7 })
        expect((await c.query('SELECT COUNT(*)::int AS n FROM rmq_batches')).rows[0].n).toBe(0)
        // A broker of schema 9 still running cannot store messages its passes would never position.
        await expect(
          c.query(
            `INSERT INTO rmq_messages (node, epoch, seq, topic, ts, payload, enc, priority, received_at)
             VALUES ('old', 'e', 99, 'plant/old', $1, '\\x7b7d', 'utf8', 4, $1)`,
            [T0],
          ),
        ).rejects.toMatchObject({ code: '42P01' })
      } finally {
        await store.close()
      }
    } finally {
      await c.end()
      await db.drop()
    }
  })

  it('releases 20,000 held messages in one pass in time linear in them, whatever the statistics said', async () => {
    const db = await cluster.createDatabase()
    const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
    const c = new pgmod.Client({ connectionString: db.url })
    await c.connect()
    try {
      // Statistics and cached plans from a store with nothing held: the state a pass was planned in
      // when one node then held the watermark back for a long time.
      await store.ingest(batchOf('warm', [wireMessage(1, T0)], { clock: T0 + 1 }), ctx(T0 + 1_000_000))
      await c.query('ANALYZE')
      const N = 20_000
      for (let i = 0; i < N; i += 1000) {
        const msgs = Array.from({ length: 1000 }, (_, k) =>
          wireMessage(i + k + 1, T0 + 10 + (((i + k) * 7919) % N)),
        )
        await store.ingest(batchOf('n', msgs, { batch: `b${i}`, clock: T0 + 1 }), ctx(T0 + 1))
      }
      expect(await store.heads()).toMatchObject({ held: N })
      const started = Date.now()
      const { released } = await store.release(ctx(T0 + 2_000_000))
      const took = Date.now() - started
      expect(released).toBe(N)
      // Linear: about 0.3 s here. A plan that joined every held row with every released one took
      // 81 s for these 20,000 (6.3 s for 5,000); the bound leaves room for a loaded machine.
      expect(took).toBeLessThan(20_000)
      const events = await readAll(store, 'event')
      expect(events.length).toBe(N + 1)
      expect(new Set(events.map((m) => `${m.node}/${m.seq}`)).size).toBe(N + 1)
      for (let i = 1; i < events.length; i++) expect(events[i].position).toBe(events[i - 1].position! + 1)
      for (let i = 2; i < events.length; i++) expect(events[i - 1].ts <= events[i].ts).toBe(true)
    } finally {
      await c.end()
      await store.close()
      await db.drop()
    }
  })

  it('a pass whose connection is killed mid-release is rolled back; another broker takes over, nothing twice or skipped', async () => {
    const db = await cluster.createDatabase()
    const a = await openPostgresBrokerStore({ dataDir: '', url: db.url })
    const b = await openPostgresBrokerStore({ dataDir: '', url: db.url })
    const blocker = new pgmod.Client({ connectionString: db.url })
    await blocker.connect()
    try {
      // 4,000 messages held (the node holds W back), committed by broker a.
      const N = 4000
      for (let i = 0; i < N; i += 500) {
        const msgs = Array.from({ length: 500 }, (_, k) =>
          wireMessage(i + k + 1, T0 + 10 + (((i + k) * 7919) % N)),
        )
        await a.ingest(batchOf('n', msgs, { batch: `b${i}`, clock: T0 + 1 }), ctx(T0 + 1))
      }
      expect(await a.heads()).toMatchObject({ event: 0, arrival: N, held: N })
      // Hold rmq_meta's row: a's next pass takes the release lock, writes the positions of all
      // 4,000 into rmq_order, then waits at its update of rmq_meta: mid-release.
      await blocker.query('BEGIN')
      await blocker.query('SELECT * FROM rmq_meta WHERE id = 1 FOR UPDATE')
      // The node is silent by then: W goes to the newest held ts + 1, everything is released.
      const W = T0 + 10 + (N - 1) + 1
      const released = a.release(ctx(T0 + 1_000_000)).then(
        (r) => r,
        (err: unknown) => err,
      )
      const stuck = async () => {
        for (let i = 0; i < 600; i++) {
          // The blocker is inside a transaction, where pg_stat_activity stays as it was at its first
          // read (a frozen snapshot): clear it, or a pass that got to the lock after that read is never seen.
          await blocker.query('SELECT pg_stat_clear_snapshot()')
          const r = await blocker.query<{ pid: number }>(
            `SELECT pid FROM pg_stat_activity WHERE query LIKE '%rmq_pass%' AND wait_event_type = 'Lock'
               AND pid <> pg_backend_pid()`,
          )
          if (r.rows.length === 1) return r.rows[0].pid
          await new Promise((r) => setTimeout(r, 25))
        }
        const all = await blocker.query(
          `SELECT pid, state, wait_event_type, wait_event, left(query, 80) AS query FROM pg_stat_activity
           WHERE datname = current_database()`,
        )
        const outcome = await Promise.race([released, new Promise((r) => setTimeout(() => r('pending'), 10))])
        throw new Error(
          `the release pass never reached the update of rmq_meta (${String(outcome)}): ${JSON.stringify(all.rows)}`,
        )
      }
      const pid = await stuck()
      // Broker b's pass waits for the release lock meanwhile.
      const started = Date.now()
      const taken = b.release(ctx(T0 + 1_000_000))
      await new Promise((r) => setTimeout(r, 200))
      expect((await blocker.query('SELECT pg_terminate_backend($1) AS ok', [pid])).rows[0].ok).toBe(true)
      await blocker.query('ROLLBACK')
      // a's pass failed with its connection: nothing of it was kept (the positions below are dense,
      // and given once). b's pass, first on the release lock, released everything; a's pass, sent
      // again on a fresh connection (a lost pass is retried before its callers get a 503), nothing.
      const [fromA, fromB] = await Promise.all([released, taken])
      expect(Date.now() - started).toBeLessThan(5000)
      expect(fromB).toEqual({ released: N, watermark: W })
      expect(fromA).toEqual({ released: 0, watermark: W })
      const events = await readAll(a, 'event')
      expect(events.map((m) => m.position)).toEqual(Array.from({ length: N }, (_, i) => i + 1))
      expect(new Set(events.map((m) => m.seq)).size).toBe(N)
      for (let i = 1; i < N; i++) expect(events[i - 1].ts <= events[i].ts).toBe(true)
      expect(events.some((m) => m.late)).toBe(false)
      expect(await b.heads()).toEqual({
        event: N,
        arrival: N,
        watermark: W,
        held: 0,
        total: N,
        positionWaits: { waiting: 0, oldestWaitMs: 0, stalled: 0 },
      })
      // Broker a works again on a fresh connection.
      expect(await a.release(ctx(T0 + 1_000_001))).toMatchObject({ released: 0 })
    } finally {
      await blocker.end().catch(() => {})
      await a.close()
      await b.close()
      await db.drop()
    }
  })
  // The batch committed above a pass's horizon moves b's low mark past its own messages, or takes b
  // out of the holders: as a direct producer, or with a low mark below the hold floor (maxHoldBack).
  it.each([
    { change: 'moves its low mark on', direct: false, oldestTs: null, maxHoldBack: undefined },
    { change: 'makes it a direct producer', direct: true, oldestTs: null, maxHoldBack: undefined },
    {
      change: 'puts its low mark below the hold floor',
      direct: false,
      oldestTs: T0 + 1,
      maxHoldBack: 19_995,
    },
  ])(
    'a batch committed above the horizon that $change: the watermark stops below it (none late)',
    async (c) => {
      const db = await cluster.createDatabase()
      const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
      const blocker = new pgmod.Client({ connectionString: db.url })
      const probe = new pgmod.Client({ connectionString: db.url })
      await blocker.connect()
      await probe.connect()
      const now = T0 + 20_000
      const at = { ...ctx(now), maxHoldBack: c.maxHoldBack }
      try {
        // b still has messages from T0 + 10 on; a has sent everything before T0 + 5000.
        const hello = (node: string, oldestTs: number) =>
          store.ingest(batchOf(node, [], { clock: now, backlog: { pending: 3, bytes: 100, oldestTs } }), at)
        await hello('b', T0 + 10)
        await hello('a', T0 + 5000)
        expect((await store.heads()).watermark).toBe(T0 + 10)
        // An older transaction holds the horizon: b's batch commits above it, with b's new node row,
        // and waits for a pass while passes keep running.
        await blocker.query('BEGIN')
        await blocker.query('SELECT pg_current_xact_id()')
        const msgs = [wireMessage(1, T0 + 10), wireMessage(2, T0 + 11), wireMessage(3, T0 + 12)]
        const backlog =
          c.oldestTs === null
            ? { pending: 0, bytes: 0, oldestTs: null }
            : { pending: 1, bytes: 10, oldestTs: c.oldestTs }
        const ack = store.ingest(batchOf('b', msgs, { clock: now, backlog, direct: c.direct }), at)
        let logged = 0
        for (let i = 0; i < 200 && logged === 0; i++) {
          logged = (await probe.query<{ n: number }>('SELECT count(*)::int AS n FROM rmq_batches')).rows[0].n
          if (logged === 0) await new Promise((r) => setTimeout(r, 10))
        }
        expect(logged).toBe(1)
        // Without the stop, passes that see b's new row would take the watermark to a's T0 + 5000.
        await store.release(at)
        await new Promise((r) => setTimeout(r, 100))
        expect((await store.heads()).watermark).toBe(T0 + 10)
        await blocker.query('COMMIT')
        expect(await ack).toMatchObject({ accepted: 3 })
        await store.release(at)
        const events = await readAll(store, 'event')
        expect(events.map((m) => [m.seq, m.position, m.late])).toEqual([
          [1, 1, false],
          [2, 2, false],
          [3, 3, false],
        ])
        expect((await store.heads()).watermark).toBe(T0 + 5000)
      } finally {
        await blocker.end().catch(() => {})
        await probe.end().catch(() => {})
        await store.close()
        await db.drop()
      }
    },
  )

  it('an open transaction holds an ingest back: /metrics shows its wait while it lasts, and 0 after', async () => {
    const db = await cluster.createDatabase()
    const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
    const tmp = makeTempDir('rmq-pg-metrics-')
    const monitor = (await createToken(store, { name: 'ops', role: 'monitor' })).token
    const app = await createBrokerApp(brokerAppOptions(tmp.dir, { storeInstance: store }))
    const blocker = new pgmod.Client({ connectionString: db.url })
    await blocker.connect()
    const scrape = async () => {
      const res = await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${monitor}` } })
      expect(res.statusCode).toBe(200)
      const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(res.body)?.[1])
      return {
        wait: value('rmq_broker_store_position_wait_seconds'),
        waiting: value('rmq_broker_store_position_waiting'),
        stalls: value('rmq_broker_store_position_stalls_total'),
      }
    }
    try {
      expect(await scrape()).toEqual({ wait: 0, waiting: 0, stalls: 0 })
      // A transaction with an id, left open: the horizon stays below every later commit.
      await blocker.query('BEGIN')
      await blocker.query('SELECT pg_current_xact_id()')
      let answered = false
      const ingest = store
        .ingest(batchOf('n', [wireMessage(1, T0 + 10)], { clock: T0 + 1 }), ctx(T0 + 1))
        .finally(() => (answered = true))
      let seen = await scrape()
      for (let i = 0; i < 200 && seen.wait < 0.4; i++) {
        await new Promise((r) => setTimeout(r, 25))
        seen = await scrape()
      }
      expect(answered).toBe(false)
      expect(seen.waiting).toBe(1)
      expect(seen.wait).toBeGreaterThanOrEqual(0.4)
      expect(seen.wait).toBeLessThan(10)
      await blocker.query('COMMIT')
      expect(await ingest).toMatchObject({ accepted: 1 })
      expect(await scrape()).toEqual({ wait: 0, waiting: 0, stalls: 0 })
    } finally {
      await blocker.end().catch(() => {})
      await app.close() // closes the store too
      tmp.cleanup()
      await db.drop()
    }
  })
})
