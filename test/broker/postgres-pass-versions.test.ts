/**
 * The current release pass (postgres-pass.ts, migration 12) against migration
 * 10's, which 11 replaced, on the same data: random batch-log rows (empty
 * ones too), nodes that hold the watermark back or not, held rows carried
 * from pass to pass, messages behind the watermark (late). Each round runs
 * both versions in a transaction that is rolled back and compares what they
 * wrote (rmq_order, rmq_meta, what is left of the log), then commits one of
 * them, so the next round starts from a state both agree on. (The frontier
 * is the horizon, the next transaction id: the rolled-back run used one.)
 * Every batch-log row is below the horizon here, so migration 12's stop
 * below batches above it never applies: postgres-release.test.ts tests it.
 */
import pgmod from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openPostgresBrokerStore } from '../../src/broker/store/postgres-open.js'
import { MIGRATIONS } from '../../src/broker/store/postgres-schema.js'
import { batchOf } from '../../src/testing/broker-store-conformance.js'
import { postgresAvailability, startPgCluster, type PgCluster } from '../helpers/postgres.js'

const pg = postgresAvailability()
const T0 = 1_764_000_000_000
const NODES = ['n0', 'n1', 'n2', 'n3']
const ROUNDS = 120

/** Migration 10's pass function under another name. */
function oldPass(): string {
  const m = MIGRATIONS[9]
  const text = m.slice(
    m.indexOf('CREATE OR REPLACE FUNCTION rmq_pass('),
    m.lastIndexOf('END $$;') + 'END $$;'.length,
  )
  return text.replace('FUNCTION rmq_pass(', 'FUNCTION rmq_pass_old(')
}

/** A small deterministic generator, mulberry32 (the failing round can be replayed). */
function random(seed: number): (n: number) => number {
  let a = seed
  return (n) => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n)
  }
}

describe.skipIf(!pg.ok)('postgres store: the current release pass against that of migration 10', () => {
  let cluster: PgCluster
  beforeAll(async () => {
    cluster = await startPgCluster()
  })
  afterAll(async () => {
    await cluster?.stop()
  })

  it(`gives the same arrivals, positions, late flags, counters and watermark over ${ROUNDS} random passes`, async () => {
    const db = await cluster.createDatabase()
    const store = await openPostgresBrokerStore({ dataDir: '', url: db.url })
    // The node rows, then every write below is by hand (the store's own passes would run the new version).
    for (const n of NODES) await store.ingest(batchOf(n, [], { clock: T0 }), { now: T0, maxLateness: 1000 })
    await store.close()
    const c = new pgmod.Client({ connectionString: db.url })
    await c.connect()
    try {
      await c.query(oldPass())
      const next = random(7)
      const seqs = new Map(NODES.map((n) => [n, 0]))
      let base = T0 + 1000
      let sequenced = 0
      let carriedHeld = 0
      const state = async () => ({
        order: (
          await c.query(
            'SELECT arrival::int, ts::text, node, seq::int, epoch, topic, position::int, late FROM rmq_order ORDER BY arrival',
          )
        ).rows,
        meta: (
          await c.query('SELECT watermark::text, next_position, next_arrival, held, ingested FROM rmq_meta')
        ).rows,
        log: (await c.query('SELECT count(*)::int AS n FROM rmq_batches')).rows[0].n,
      })
      for (let round = 0; round < ROUNDS; round++) {
        base += next(400)
        // 0-4 batches, each its own transaction (so its own tx), some empty.
        for (let b = next(5); b > 0; b--) {
          const node = NODES[next(NODES.length)]
          const count = next(6) === 0 ? 0 : 1 + next(40)
          const s: number[] = []
          const ts: number[] = []
          const topics: string[] = []
          for (let i = 0; i < count; i++) {
            const seq = seqs.get(node)! + 1
            seqs.set(node, seq)
            s.push(seq)
            // Around the base, some far behind (late once the watermark passed them), ties in ts.
            ts.push(base - 600 + next(900) - (next(10) === 0 ? 5000 : 0))
            topics.push(`t/${next(3)}`)
          }
          await c.query(
            `INSERT INTO rmq_batches (node, epoch, seqs, ts, topics, max_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
            [node, `epoch-${node}`, s, ts, topics, count ? Math.max(...ts) : 0],
          )
        }
        // Nodes live or silent, holding the watermark at their low mark or not (direct).
        for (const n of NODES)
          await c.query(
            'UPDATE rmq_nodes SET low_mark = $2, last_contact = $3, direct = $4 WHERE node = $1',
            [n, base - 300 + next(400), next(3) === 0 ? T0 : base, next(8) === 0],
          )
        const params = [base - 1000, next(4) === 0 ? base : 0]
        const run = async (fn: string) => {
          await c.query('BEGIN')
          const r = (
            await c.query(
              `SELECT p_watermark::text, p_sequenced::int, p_released::int FROM ${fn}($1, $2, NULL)`,
              params,
            )
          ).rows[0]
          return { r, after: await state() }
        }
        const old = await run('rmq_pass_old')
        await c.query('ROLLBACK')
        const now = await run('rmq_pass')
        expect(now, `round ${round}`).toEqual(old)
        // Commit one or the other (the same state), the new one most of the time.
        if (next(4) === 0) {
          await c.query('ROLLBACK')
          await c.query('SELECT rmq_pass_old($1, $2, NULL)', params)
        } else await c.query('COMMIT')
        sequenced += now.r.p_sequenced
        if (now.after.order.some((o) => o.position === null)) carriedHeld++
      }
      // The cases the rounds were meant to reach were reached.
      expect(sequenced).toBeGreaterThan(2000)
      expect(carriedHeld).toBeGreaterThan(ROUNDS / 4)
      const end = await state()
      expect(end.order.filter((o) => o.late).length).toBeGreaterThan(0)
      expect(end.log).toBe(0)
      expect(end.order.map((o) => o.arrival)).toEqual(Array.from({ length: sequenced }, (_, i) => i + 1))
    } finally {
      await c.end()
      await db.drop()
    }
  }, 120_000)
})
