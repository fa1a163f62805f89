/**
 * Database failover end to end: a real PostgreSQL primary and a streaming
 * standby made by the test (`initdb`, `pg_basebackup -R`), a real
 * `rmq broker start` on a multi-host broker.postgres.url that lists the
 * STANDBY FIRST (the broker must skip it: pg_is_in_recovery()), a real edge
 * (`rmq publish` + `rmq sync`). The primary's postmaster is SIGKILLed, the
 * standby promoted with `pg_ctl promote`; the broker finds the new primary
 * and syncing resumes. A real `rmq consume` then reads every acknowledged
 * message exactly once, in order.
 *
 * Replication here is asynchronous: a batch acknowledged (committed on the
 * primary) just before the kill could be missing on the standby, which is
 * what docs/scaling.md ("Database failover") explains and what
 * synchronous_standby_names + synchronous_commit=on prevent. So that this test
 * checks the broker and not replication lag, it waits until the standby has
 * replayed the primary's WAL up to the primary's current LSN before killing.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'
import { postgresAvailability, startPgCluster, type PgCluster } from '../helpers/postgres.js'

const pg = postgresAvailability()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

type Cleanups = Array<() => Promise<unknown> | unknown>

/**
 * A primary and a `pg_basebackup -R` standby of it, a database, the broker
 * store's env on the multi-host URL (standby listed first, so the broker must
 * skip it) and a token maker that goes through the same URL.
 */
async function primaryAndStandby(cleanups: Cleanups, dbPrefix: string) {
  const primary: PgCluster = await startPgCluster()
  cleanups.push(() => primary.stop())
  const db = await primary.createDatabase(dbPrefix)
  const standby: PgCluster = await primary.startStandby()
  cleanups.push(() => standby.stop())
  expect(await standby.rows('SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }])
  const url =
    `postgres://postgres@127.0.0.1:${standby.port},127.0.0.1:${primary.port}/${db.name}` +
    '?target_session_attrs=read-write'
  const storeEnv = { RMQ_BROKER_STORE: 'postgres', RMQ_BROKER_POSTGRES_URL: url }
  // Tokens through the same URL: `rmq broker token create` finds the primary as the broker does.
  const token = async (args: string[]) => {
    const r = await runCli(['broker', 'token', 'create', ...args], { env: storeEnv })
    expect(r.code, r.stderr).toBe(0)
    return r.stdout.trim()
  }
  return { primary, standby, storeEnv, token }
}

interface Consumed {
  id?: string
  node: string
  seq: number
  payload: string
  position: number
  late: boolean
}

/** Every message `rmq consume '#' --json` reads from the broker at `brokerUrl`. */
async function consumeAll(brokerUrl: string, token: string): Promise<Consumed[]> {
  const consumed = await runCli(['consume', '#', '--json'], {
    env: { RMQ_BROKER_URL: brokerUrl, RMQ_TOKEN: token },
    timeoutMs: 30_000,
  })
  expect(consumed.code, consumed.stderr).toBe(0)
  return consumed.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Consumed)
    .filter((m) => m.id !== undefined)
}

describe.skipIf(!pg.ok)('PostgreSQL failover under a running broker', () => {
  const cleanups: Cleanups = []
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })

  it(
    'primary SIGKILLed, standby promoted: the broker switches, syncs resume, every acknowledged message once',
    { timeout: 240_000 },
    async () => {
      const { primary, standby, storeEnv, token } = await primaryAndStandby(cleanups, 'rmq_failover')
      const NODE = 'gw-1'
      const nodeToken = await token([NODE])
      const readerToken = await token(['reader', '--role', 'consumer', '--topics', '#'])

      const broker: BrokerProcess = await startBrokerProcess({ auth: 'token', env: storeEnv })
      cleanups.push(() => broker.cleanup())
      expect(broker.logs()).toContain(`PostgreSQL primary is 127.0.0.1:${primary.port}`)

      const edge = makeTempDir('rmq-pg-failover-edge-')
      cleanups.push(edge.cleanup)
      const edgeEnv = {
        RMQ_NODE_ID: NODE,
        RMQ_TOKEN: nodeToken,
        RMQ_BROKER_URL: broker.url,
        RMQ_SYNC_BATCH_SIZE: '10',
        RMQ_SYNC_TIMEOUT: '5s',
      }
      let published = 0
      const publish = async (n: number) => {
        const lines = Array.from({ length: n }, (_, i) => JSON.stringify({ n: published + i + 1 }))
        const r = await runCli(['publish', 'plant/line1/temp', '--lines', '-f', '-'], {
          cwd: edge.dir,
          env: edgeEnv,
          input: lines.join('\n') + '\n',
        })
        expect(r.code, r.stderr).toBe(0)
        published += n
      }
      /** One `rmq sync` of one batch: pending afterwards, or the exit code and stderr of a failure. */
      const syncOnce = async (): Promise<{ pending: number } | { code: number | null; stderr: string }> => {
        const r = await runCli(['sync', '--force', '--max-batches', '1', '--json'], {
          cwd: edge.dir,
          env: edgeEnv,
          timeoutMs: 30_000,
        })
        if (r.code !== 0) return { code: r.code, stderr: r.stderr.trim() }
        return { pending: parseJson<{ pending: number }>(r.stdout).pending }
      }
      const failures: string[] = []
      /** Sync until nothing is pending (bounded), keeping the failures seen on the way. */
      const drain = async (attempts: number) => {
        for (let i = 0; i < attempts; i++) {
          const r = await syncOnce()
          if ('pending' in r) {
            if (r.pending === 0) return
          } else {
            failures.push(`${r.code} ${r.stderr}`)
            await sleep(300)
          }
        }
        throw new Error(`still pending after ${attempts} syncs: ${JSON.stringify(failures)}`)
      }

      // Before the failover: 3 batches acknowledged by the primary.
      await publish(30)
      await drain(10)
      expect(failures).toEqual([])

      // Make sure the standby has everything acknowledged so far (asynchronous replication: see above).
      const [{ lsn }] = await primary.rows<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')
      let replayed = false
      for (let i = 0; i < 200 && !replayed; i++) {
        const [r] = await standby.rows<{ ok: boolean }>(
          `SELECT pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn AS ok`,
        )
        replayed = r.ok
        if (!replayed) await sleep(50)
      }
      expect(replayed).toBe(true)

      // The database host dies; the edge keeps publishing.
      await primary.killPostmaster()
      await publish(30)
      // No primary at all now: the broker answers 503 (sync exits 75, retry later), never 200.
      const during = await syncOnce()
      expect(during).toMatchObject({ code: 75 })

      standby.promote()
      expect(await standby.rows('SELECT pg_is_in_recovery() AS r')).toEqual([{ r: false }])
      // The broker searches with backoff (at most 2 s between rounds): syncing resumes within seconds.
      const resumedFrom = Date.now()
      await drain(60)
      const resumeMs = Date.now() - resumedFrom
      expect(resumeMs).toBeLessThan(30_000)
      // Every failure on the way was "retry later" (75), nothing else.
      expect(
        failures.every((f) => f.startsWith('75 ')),
        JSON.stringify(failures),
      ).toBe(true)
      expect(broker.logs()).toContain(
        `PostgreSQL primary is now 127.0.0.1:${standby.port} (was 127.0.0.1:${primary.port})`,
      )

      // After the switch, more batches go to the new primary like any others.
      await publish(20)
      await drain(10)

      // Every acknowledged message, exactly once, in order (one node: event order is seq order).
      const got = await consumeAll(broker.url, readerToken)
      expect(got.map((m) => m.seq)).toEqual(Array.from({ length: published }, (_, i) => i + 1))
      expect(got.map((m) => JSON.parse(m.payload).n)).toEqual(
        Array.from({ length: published }, (_, i) => i + 1),
      )
      expect(new Set(got.map((m) => m.id)).size).toBe(published)
      expect(got.every((m) => m.node === NODE)).toBe(true)
    },
  )

  it(
    'synchronous standby, two brokers, edges syncing throughout: primary SIGKILLed mid-stream, standby promoted, nothing acknowledged lost',
    { timeout: 300_000 },
    async () => {
      const { primary, standby, storeEnv, token } = await primaryAndStandby(cleanups, 'rmq_failover_sync')
      // Synchronous replication, set on the primary after the base backup (so the standby, once promoted,
      // does not wait for a standby of its own): every commit waits until the standby has flushed it.
      await primary.admin(`ALTER SYSTEM SET synchronous_standby_names = '*'`)
      await primary.admin('SELECT pg_reload_conf()')
      let syncState = ''
      for (let i = 0; i < 200 && syncState !== 'sync'; i++) {
        const rows = await primary.rows<{ s: string }>('SELECT sync_state AS s FROM pg_stat_replication')
        syncState = rows[0]?.s ?? ''
        if (syncState !== 'sync') await sleep(50)
      }
      expect(syncState).toBe('sync')

      const readerToken = await token(['reader', '--role', 'consumer', '--topics', '#'])
      const brokers: BrokerProcess[] = []
      for (let i = 0; i < 2; i++) {
        const b = await startBrokerProcess({ auth: 'token', env: storeEnv })
        cleanups.push(() => b.cleanup())
        brokers.push(b)
      }

      // Two edges, one per broker, each publishing and syncing in a loop until told to stop.
      const edges = await Promise.all(
        ['gw-1', 'gw-2'].map(async (node, i) => {
          const dir = makeTempDir(`rmq-pg-sync-${node}-`)
          cleanups.push(dir.cleanup)
          const env = {
            RMQ_NODE_ID: node,
            RMQ_TOKEN: await token([node]),
            RMQ_BROKER_URL: brokers[i].url,
            RMQ_SYNC_BATCH_SIZE: '10',
            RMQ_SYNC_TIMEOUT: '5s',
          }
          return {
            node,
            dir: dir.dir,
            env,
            published: 0,
            synced: [] as Array<{ at: number; ok: boolean; code: number | null }>,
          }
        }),
      )
      type Edge = (typeof edges)[number]
      const publish = async (e: Edge, n: number) => {
        const lines = Array.from({ length: n }, (_, k) =>
          JSON.stringify({ node: e.node, n: e.published + k + 1 }),
        )
        const r = await runCli(['publish', 'plant/line1/temp', '--lines', '-f', '-'], {
          cwd: e.dir,
          env: e.env,
          input: lines.join('\n') + '\n',
        })
        expect(r.code, r.stderr).toBe(0)
        e.published += n
      }
      const sync = async (e: Edge) => {
        const r = await runCli(['sync', '--force', '--json'], { cwd: e.dir, env: e.env, timeoutMs: 30_000 })
        e.synced.push({ at: Date.now(), ok: r.code === 0, code: r.code })
        return r
      }
      let stop = false
      const loops = edges.map(async (e) => {
        // Bounded: at most 400 rounds, and the test stops them after the failover.
        for (let round = 0; round < 400 && !stop; round++) {
          await publish(e, 15)
          await sync(e)
        }
      })

      // Let both edges sync for a while, then the database host dies mid-stream.
      const until = Date.now() + 20_000
      while (edges.some((e) => e.synced.filter((x) => x.ok).length < 3) && Date.now() < until)
        await sleep(100)
      expect(edges.every((e) => e.synced.filter((x) => x.ok).length >= 3)).toBe(true)
      await primary.killPostmaster()
      const killedAt = Date.now()
      await sleep(1500)
      standby.promote()
      const promotedAt = Date.now()
      // Syncing resumes within seconds: each edge has a successful sync that started after the promotion.
      const resumed = Date.now() + 60_000
      while (
        edges.some((e) => !e.synced.some((x) => x.ok && x.at > promotedAt + 200)) &&
        Date.now() < resumed
      )
        await sleep(100)
      const resumeMs = Math.max(
        ...edges.map(
          (e) => (e.synced.find((x) => x.ok && x.at > promotedAt + 200)?.at ?? Infinity) - promotedAt,
        ),
      )
      expect(resumeMs).toBeLessThan(30_000)
      stop = true
      await Promise.all(loops)
      // Failed syncs between the kill and the switch were "retry later" (75) only.
      const failed = edges.flatMap((e) => e.synced.filter((x) => !x.ok))
      expect(
        failed.every((x) => x.code === 75),
        JSON.stringify(failed),
      ).toBe(true)
      expect(edges.flatMap((e) => e.synced).some((x) => !x.ok && x.at > killedAt)).toBe(true)
      for (const b of brokers)
        expect(b.logs()).toContain(`PostgreSQL primary is now 127.0.0.1:${standby.port}`)

      // Everything left is sent to the new primary; then every message each edge published, once, in order.
      for (const e of edges) {
        const r = await sync(e)
        expect(r.code, r.stderr).toBe(0)
        const pending = parseJson<{ pending: number }>(r.stdout).pending
        expect(pending).toBe(0)
      }
      const got = await consumeAll(brokers[0].url, readerToken)
      expect(new Set(got.map((m) => m.id)).size).toBe(got.length)
      for (const e of edges) {
        const mine = got.filter((m) => m.node === e.node)
        expect(
          mine.map((m) => m.seq),
          e.node,
        ).toEqual(Array.from({ length: e.published }, (_, k) => k + 1))
        expect(mine.map((m) => JSON.parse(m.payload).n)).toEqual(
          Array.from({ length: e.published }, (_, k) => k + 1),
        )
      }
      const positions = got.map((m) => m.position)
      expect(positions).toEqual([...positions].sort((a, b) => a - b))
      const syncs = edges.flatMap((e) => e.synced)
      console.log(
        `synchronous failover: ${got.length} messages from 2 edges, ${syncs.filter((x) => x.ok).length} syncs ok, ` +
          `${failed.length} exit 75 between the kill and the switch, resumed ${resumeMs} ms after the promotion`,
      )
    },
  )
})
