/**
 * The release pass killed again and again, end to end: two real `rmq broker
 * start` processes share one PostgreSQL database while four nodes send
 * batches to both, and a separate connection terminates every backend it
 * finds running `rmq_pass` (pg_terminate_backend), pausing 100 ms after each
 * kill, for as long as they send. Each node sends a batch every PACE_MS at
 * most, so that the sending lasts long enough for several kills on a fast
 * machine too (unpaced, it took 0.8 s here: 4 kills).
 * A killed pass commits nothing; the next pass, the same broker's or the
 * other's, takes over. Every batch is acknowledged (a sender retries a 503 or
 * a cut-off request at the other broker, as a load balancer would), and a
 * reader finds every message exactly once in both orders: positions dense,
 * none given twice or skipped, event order by (ts, node, seq), none late.
 * (It found that a pass read low marks committed after its horizon: the
 * messages of such a batch were released late, after newer ones; migration 12.)
 */
import pgmod from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { allMessages, makeBatch, message, postBatch, startBrokerProcess } from '../helpers/broker.js'
import { cleanupAfterEach } from '../helpers/cleanups.js'
import { runCli } from '../helpers/cli.js'
import { postgresAvailability, startPgCluster, type PgCluster } from '../helpers/postgres.js'
import { sleep } from '../../src/shared/clock.js'

const pg = postgresAvailability()

const NODES = ['gw-1', 'gw-2', 'gw-3', 'gw-4']
const BATCHES = 30
const PER_BATCH = 100
const TOTAL = NODES.length * BATCHES * PER_BATCH
/** A node's batches are at least this far apart: the sending lasts at least BATCHES * PACE_MS. */
const PACE_MS = 50

describe.skipIf(!pg.ok)('release passes killed mid-release (two broker processes, one database)', () => {
  let cluster: PgCluster
  const cleanup = cleanupAfterEach()
  beforeAll(async () => {
    cluster = await startPgCluster()
  })
  afterAll(async () => {
    await cluster?.stop()
  })

  it(
    `${TOTAL} messages from 4 nodes while running passes are terminated: all acknowledged, each released once, none late`,
    { timeout: 180_000 },
    async () => {
      const db = await cluster.createDatabase()
      cleanup(() => db.drop())
      const storeEnv = {
        RMQ_BROKER_STORE: 'postgres',
        RMQ_BROKER_POSTGRES_URL: db.url,
        RMQ_BROKER_ORDERING_MAX_LATENESS: '10m',
      }
      const tokens: Record<string, string> = {}
      for (const node of NODES) {
        const r = await runCli(['broker', 'token', 'create', node], { env: storeEnv })
        expect(r.code, r.stderr).toBe(0)
        tokens[node] = r.stdout.trim()
      }
      const reader = await runCli(
        ['broker', 'token', 'create', 'reader', '--role', 'consumer', '--topics', '#'],
        {
          env: storeEnv,
        },
      )
      expect(reader.code, reader.stderr).toBe(0)
      const readerToken = reader.stdout.trim()
      const brokers = await Promise.all(
        [0, 1].map(() => startBrokerProcess({ auth: 'token', env: storeEnv })),
      )
      for (const br of brokers) cleanup(() => br.cleanup())

      // The killer: the backends running a pass, terminated as soon as they are seen.
      const killer = new pgmod.Client({ connectionString: db.url })
      await killer.connect()
      cleanup(() => killer.end().catch(() => {}))
      let killing = true
      let kills = 0
      const killLoop = (async () => {
        while (killing) {
          const r = await killer.query<{ n: number }>(
            `SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'
               AND query LIKE '%rmq_pass(%'`,
          )
          kills += r.rows[0].n
          // Then a pause in which passes complete: a killer of every pass forever would stop all release.
          await sleep(r.rows[0].n > 0 ? 100 : 5)
        }
      })()

      // Each node: its batches in order, alternating between the brokers; a refused or cut-off
      // batch is sent again, the same batch, to the other broker. Times interleave across nodes.
      const T0 = Date.now() - 60_000
      const ts = (i: number, k: number, j: number) => T0 + ((k * PER_BATCH + j) * NODES.length + i) * 2
      // Every node first announces its backlog: a node the brokers have never heard of cannot hold the
      // watermark back, and the first batches of the others would be released ahead of its messages.
      for (const [i, node] of NODES.entries()) {
        const hello = makeBatch(node, [], {
          clock: Date.now(),
          backlog: { pending: BATCHES * PER_BATCH, bytes: 1000, oldestTs: ts(i, 0, 0) },
        })
        expect((await postBatch(brokers[i % 2].url, hello, { token: tokens[node] })).status).toBe(200)
      }
      const refused: number[] = []
      let started = 0
      const send = async (node: string, i: number) => {
        for (let k = 0; k < BATCHES; k++) {
          const due = started + k * PACE_MS
          if (Date.now() < due) await sleep(due - Date.now())
          const msgs = Array.from({ length: PER_BATCH }, (_, j) =>
            message(k * PER_BATCH + j + 1, ts(i, k, j)),
          )
          const body = makeBatch(node, msgs, {
            batch: `${node}-b${k}`,
            clock: Date.now(),
            backlog:
              k + 1 < BATCHES
                ? { pending: (BATCHES - k - 1) * PER_BATCH, bytes: 1000, oldestTs: ts(i, k + 1, 0) }
                : { pending: 0, bytes: 0, oldestTs: null },
          })
          let target = (i + k) % 2
          for (let attempt = 0; ; attempt++) {
            const res = await postBatch(brokers[target].url, body, {
              token: tokens[node],
              encoding: 'zstd',
            }).catch((err: Error) => err)
            if (!(res instanceof Error) && res.status === 200) break
            refused.push(res instanceof Error ? 0 : res.status)
            if (attempt >= 200)
              throw new Error(
                `${node} batch ${k} never acknowledged: ${res instanceof Error ? res.message : JSON.stringify(res.body)}`,
              )
            target = 1 - target
            await sleep(25)
          }
        }
      }
      started = Date.now()
      try {
        await Promise.all(NODES.map((node, i) => send(node, i)))
      } finally {
        killing = false
        await killLoop
      }
      const sent = Date.now() - started

      // The passes were really cut off, and a refused batch is only ever "try again" (503).
      expect(kills, `passes terminated in ${sent} ms`).toBeGreaterThanOrEqual(5)
      expect(
        refused.every((s) => s === 503 || s === 0),
        JSON.stringify(refused.slice(0, 20)),
      ).toBe(true)

      // With every node's backlog empty, everything is released (passes run on, unhindered now).
      let heads: { event: number; arrival: number; held: number } = { event: 0, arrival: 0, held: -1 }
      for (let i = 0; i < 100 && heads.event < TOTAL; i++) {
        await postBatch(brokers[1].url, makeBatch(NODES[0], [], { clock: Date.now() }), {
          token: tokens[NODES[0]],
        })
        const r = await fetch(`${brokers[0].url}/healthz`)
        heads = (await r.json()) as typeof heads
        if (heads.event < TOTAL) await sleep(100)
      }
      expect(heads).toMatchObject({ event: TOTAL, arrival: TOTAL, held: 0 })

      const events = await allMessages(brokers[0].url, readerToken, 100, 'event')
      expect(events).toHaveLength(TOTAL)
      expect(events.map((m) => m.position)).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1))
      expect(new Set(events.map((m) => m.id)).size).toBe(TOTAL)
      for (let n = 1; n < TOTAL; n++) {
        const [a, b] = [events[n - 1], events[n]]
        expect(
          a.ts < b.ts || (a.ts === b.ts && (a.node < b.node || (a.node === b.node && a.seq < b.seq))),
        ).toBe(true)
      }
      expect(events.filter((m) => m.late)).toEqual([])
      const arrivals = await allMessages(brokers[1].url, readerToken)
      expect(arrivals.map((m) => m.position)).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1))
      expect(new Set(arrivals.map((m) => m.id))).toEqual(new Set(events.map((m) => m.id)))
      for (const node of NODES)
        expect(events.filter((m) => m.node === node).map((m) => m.seq)).toEqual(
          Array.from({ length: BATCHES * PER_BATCH }, (_, j) => j + 1),
        )
      console.log(
        `release kills: ${kills} passes terminated in ${sent} ms; ${refused.length} batches sent again`,
      )
    },
  )
})
