/**
 * Scale-out end to end: two real `rmq broker start` processes on different
 * ports share one PostgreSQL database. Real edge nodes (`rmq publish` into
 * their own outbox, `rmq sync` against one broker URL or the other, as a load
 * balancer would spread them) and real `rmq consume --follow` readers. One
 * broker is SIGKILLed while syncs are in flight; its readers fail over.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { makeBatch, message, postBatch, startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'
import { startFollowConsumer, type ConsumedLine } from '../helpers/consumer-process.js'
import { postgresAvailability, startPgCluster, type PgCluster } from '../helpers/postgres.js'

const pg = postgresAvailability()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

type Line = ConsumedLine

const startConsumer = (url: string, token: string, args: string[] = []) =>
  startFollowConsumer({ url, token, args })

const byEvent = (a: Line, b: Line) =>
  a.ts - b.ts || (a.node < b.node ? -1 : a.node > b.node ? 1 : a.seq - b.seq)

describe.skipIf(!pg.ok)('two brokers sharing one PostgreSQL database', () => {
  let cluster: PgCluster
  const cleanups: Array<() => Promise<unknown> | unknown> = []
  beforeAll(async () => {
    cluster = await startPgCluster()
  })
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!()
  })
  afterAll(async () => {
    await cluster?.stop()
  })

  // Real CLI processes (a dozen syncs): allow for a loaded two-core machine.
  it(
    'edges sync to both alternately, one broker is SIGKILLed midway: every message once, in event order',
    { timeout: 180_000 },
    async () => {
      const db = await cluster.createDatabase()
      cleanups.push(() => db.drop())
      const storeEnv = {
        RMQ_BROKER_STORE: 'postgres',
        RMQ_BROKER_POSTGRES_URL: db.url,
        RMQ_BROKER_ORDERING_MAX_LATENESS: '10m',
      }
      // Three real edge nodes (publish + sync) and one hand-made sender whose batch is in flight at the kill.
      const EDGES = ['gw-1', 'gw-2', 'gw-3']
      const HAND = 'gw-4'
      const PER_EDGE = 60
      const HAND_BATCHES = 8
      const HAND_PER_BATCH = 20
      const TOTAL = EDGES.length * PER_EDGE + HAND_BATCHES * HAND_PER_BATCH

      // Tokens live in the shared database: created once, accepted by both brokers.
      const tokens: Record<string, string> = {}
      for (const node of [...EDGES, HAND]) {
        const r = await runCli(['broker', 'token', 'create', node], { env: storeEnv })
        expect(r.code, r.stderr).toBe(0)
        tokens[node] = r.stdout.trim()
      }
      // Readers use a consumer credential (a node token may only publish).
      const reader = await runCli(
        ['broker', 'token', 'create', 'reader', '--role', 'consumer', '--topics', '#'],
        {
          env: storeEnv,
        },
      )
      expect(reader.code, reader.stderr).toBe(0)
      const readerToken = reader.stdout.trim()
      const monitor = await runCli(['broker', 'token', 'create', 'ops', '--role', 'monitor'], {
        env: storeEnv,
      })
      expect(monitor.code, monitor.stderr).toBe(0)
      const brokers: BrokerProcess[] = await Promise.all(
        [0, 1].map(() => startBrokerProcess({ auth: 'token', env: storeEnv })),
      )
      for (const br of brokers) cleanups.push(() => br.cleanup())
      const [a, b] = brokers
      expect(a.port).not.toBe(b.port)

      // Readers: one on each broker from the start (long-polling before anything exists).
      const readerA = startConsumer(a.url, readerToken)
      const readerB = startConsumer(b.url, readerToken)
      cleanups.push(
        () => readerA.kill(),
        () => readerB.kill(),
      )

      const t0 = Date.now()
      // Every node first announces its backlog (a heartbeat): a node the brokers have never heard of
      // cannot hold the watermark back, and its messages would be released late.
      for (const [i, node] of [...EDGES, HAND].entries()) {
        const res = await postBatch(
          brokers[i % 2].url,
          makeBatch(node, [], { clock: t0, backlog: { pending: 1, bytes: 0, oldestTs: t0 } }),
          { token: tokens[node] },
        )
        expect(res.status).toBe(200)
      }

      // Edge nodes: each its own outbox, messages published in two rounds so their times interleave.
      const edges = EDGES.map((node) => {
        const tmp = makeTempDir('rmq-pg-e2e-edge-')
        cleanups.push(tmp.cleanup)
        const env = {
          RMQ_NODE_ID: node,
          RMQ_TOKEN: tokens[node],
          RMQ_SYNC_BATCH_SIZE: '15',
          RMQ_SYNC_TIMEOUT: '5s',
          RMQ_COMPRESSION_CODEC: 'zstd',
        }
        return { node, dir: tmp.dir, env, pending: PER_EDGE, done: false }
      })
      for (let round = 0; round < 2; round++)
        await Promise.all(
          edges.map(async (e) => {
            const lines = Array.from({ length: PER_EDGE / 2 }, (_, i) => JSON.stringify({ round, i }))
            const r = await runCli(['publish', `plant/${e.node}/temp`, '--lines', '-f', '-'], {
              cwd: e.dir,
              env: e.env,
              input: lines.join('\n') + '\n',
            })
            expect(r.code, r.stderr).toBe(0)
          }),
        )
      const published = Date.now()

      const sync = async (e: (typeof edges)[number], url: string) => {
        const r = await runCli(['sync', '--force', '--max-batches', '1', '--json'], {
          cwd: e.dir,
          env: { ...e.env, RMQ_BROKER_URL: url },
          timeoutMs: 30_000,
        })
        if (r.code !== 0) return `${r.code} ${r.stderr.trim()}`
        const res = parseJson<{ pending: number }>(r.stdout)
        e.pending = res.pending
        if (res.pending === 0) e.done = true
        return 0
      }

      // The hand-made node: messages spread over the publishing period, sent until acknowledged,
      // failing over to the other broker on a network error (what a load balancer does).
      const hand = Array.from({ length: HAND_BATCHES * HAND_PER_BATCH }, (_, i) =>
        message(i + 1, t0 + Math.floor(((published - t0) * i) / (HAND_BATCHES * HAND_PER_BATCH))),
      )
      let handSent = 0
      const sendHand = async (first: BrokerProcess, duringKill?: () => Promise<void>) => {
        const part = hand.slice(handSent * HAND_PER_BATCH, (handSent + 1) * HAND_PER_BATCH)
        const rest = hand.slice((handSent + 1) * HAND_PER_BATCH)
        const body = makeBatch(HAND, part, {
          clock: Date.now(),
          backlog: { pending: rest.length, bytes: rest.length * 50, oldestTs: rest[0]?.ts ?? null },
        })
        let target = first
        for (let attempt = 0; attempt < 50; attempt++) {
          const sending = postBatch(target.url, body, { token: tokens[HAND], encoding: 'zstd' }).catch(
            (err: Error) => err,
          )
          if (duringKill && attempt === 0) await duringKill()
          const res = await sending
          if (!(res instanceof Error) && res.status === 200) {
            handSent++
            return
          }
          // In doubt (cut off by the kill, or refused): resend the same batch to the other broker.
          target = b
          await sleep(50)
        }
        throw new Error('hand-made batch never acknowledged')
      }

      // Rounds: edge i sends to broker (i + round) % 2, so each node alternates and both brokers take
      // batches at the same time. In round 2 broker A is SIGKILLed with a batch in flight to it.
      let aliveA = true
      const failures: string[] = []
      for (let round = 0; round < 20 && (edges.some((e) => !e.done) || handSent < HAND_BATCHES); round++) {
        const runs = edges.map((e, i) => sync(e, ((i + round) % 2 === 0 && aliveA ? a : b).url))
        for (let k = 0; k < 2 && handSent < HAND_BATCHES; k++) {
          const kill = round === 2 && k === 0
          await sendHand(
            aliveA && (k + round) % 2 === 0 ? a : b,
            kill
              ? async () => {
                  await a.kill()
                  aliveA = false
                }
              : undefined,
          )
        }
        if (round === 2 && aliveA) {
          await a.kill()
          aliveA = false
        }
        for (const r of await Promise.all(runs)) if (r !== 0) failures.push(r)
      }
      expect(aliveA).toBe(false)
      expect(edges.map((e) => e.pending)).toEqual([0, 0, 0])
      expect(handSent).toBe(HAND_BATCHES)
      // A sync cut off by the kill fails as "retry later" (75), never as anything else.
      expect(
        failures.every((f) => f.startsWith('75 ')),
        JSON.stringify(failures),
      ).toBe(true)
      // The hand-made node is done too: an empty backlog lets the watermark pass everything.
      await postBatch(b.url, makeBatch(HAND, [], { clock: Date.now() }), { token: tokens[HAND] })

      // The reader on the surviving broker sees everything once every node has caught up.
      await readerB.waitFor(TOTAL)
      await sleep(300)
      const got = readerB.lines
      expect(got).toHaveLength(TOTAL)
      expect(new Set(got.map((l) => l.id)).size).toBe(TOTAL)
      expect(got.map((l) => l.position)).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1))
      expect(got.filter((l) => l.late)).toEqual([])
      expect(got.map((l) => l.id)).toEqual([...got].sort(byEvent).map((l) => l.id))
      for (const node of EDGES)
        expect(got.filter((l) => l.node === node).map((l) => l.seq)).toEqual(
          Array.from({ length: PER_EDGE }, (_, i) => i + 1),
        )
      expect(got.filter((l) => l.node === HAND).map((l) => l.seq)).toEqual(hand.map((m) => m.seq))

      // The reader on the killed broker fails over: it resumes on B after the last position it printed.
      await readerA.kill()
      const seenOnA = readerA.lines.length
      const lastA = seenOnA ? readerA.lines[seenOnA - 1].position : 0
      const resumed = startConsumer(b.url, readerToken, ['--from', String(lastA + 1)])
      cleanups.push(() => resumed.kill())
      await resumed.waitFor(TOTAL - seenOnA)
      await sleep(300)
      expect([...readerA.lines, ...resumed.lines].map((l) => l.id)).toEqual(got.map((l) => l.id))

      // Node status is shared: the surviving broker knows every node, with nothing pending.
      const status = (await fetch(`${b.url}/v1/nodes`, {
        headers: { authorization: `Bearer ${monitor.stdout.trim()}` },
      }).then((r) => r.json())) as { nodes: Array<{ node: string; backlog: { pending: number } }> }
      expect(status.nodes.map((n) => [n.node, n.backlog.pending])).toEqual(
        [...EDGES, HAND].map((n) => [n, 0]),
      )
    },
  )
})
