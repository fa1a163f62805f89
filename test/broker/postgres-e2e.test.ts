/**
 * Scale-out end to end: two real `rmq broker start` processes on different
 * ports share one PostgreSQL database. Real edge nodes (`rmq publish` into
 * their own outbox, `rmq sync` against one broker URL or the other, as a load
 * balancer would spread them) and real `rmq consume --follow` readers. One
 * broker is SIGKILLed while syncs are in flight; its readers fail over.
 */
import type { ChildProcess } from 'node:child_process'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli, spawnCli } from '../helpers/cli.js'
import { postgresAvailability, startPgCluster, type PgCluster } from '../helpers/postgres.js'

const pg = postgresAvailability()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Line {
  id: string
  node: string
  seq: number
  ts: number
  position: number
  late: boolean
}

/** A real `rmq consume '#' --follow --json` process collecting its NDJSON lines. */
function startConsumer(url: string, token: string, extra: string[] = []) {
  const child: ChildProcess = spawnCli(['consume', '#', '--follow', '--json', ...extra], {
    env: { RMQ_BROKER_URL: url, RMQ_TOKEN: token },
  })
  const lines: Line[] = []
  let buf = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d
    let i: number
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, i)) as Line)
      buf = buf.slice(i + 1)
    }
  })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  return {
    lines,
    async waitFor(n: number, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs
      while (lines.length < n && Date.now() < until) await sleep(50)
      if (lines.length < n)
        throw new Error(`consumer printed ${lines.length} of ${n} lines; stderr:\n${stderr}`)
    },
    async kill() {
      child.kill('SIGKILL')
      await exited
    },
  }
}

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

  it('edges sync to both alternately, one broker is SIGKILLed midway: every message once, in event order', async () => {
    const db = await cluster.createDatabase()
    cleanups.push(() => db.drop())
    const storeEnv = {
      RMQ_BROKER_STORE: 'postgres',
      RMQ_BROKER_POSTGRES_URL: db.url,
      RMQ_BROKER_ORDERING_MAX_LATENESS: '10m',
    }
    const NODES = ['gw-1', 'gw-2', 'gw-3']
    const PER_NODE = 90
    const TOTAL = NODES.length * PER_NODE

    // Tokens live in the shared database: created once, accepted by both brokers.
    const tokens: Record<string, string> = {}
    for (const node of NODES) {
      const r = await runCli(['broker', 'token', 'create', node], { env: storeEnv })
      expect(r.code, r.stderr).toBe(0)
      tokens[node] = r.stdout.trim()
    }
    const brokers: BrokerProcess[] = await Promise.all(
      [0, 1].map(() => startBrokerProcess({ auth: 'token', env: storeEnv })),
    )
    for (const b of brokers) cleanups.push(() => b.cleanup())
    const [a, b] = brokers
    expect(a.port).not.toBe(b.port)

    // Readers: one on each broker from the start (long-polling before anything exists).
    const readerA = startConsumer(a.url, tokens['gw-1'])
    const readerB = startConsumer(b.url, tokens['gw-2'])
    cleanups.push(
      () => readerA.kill(),
      () => readerB.kill(),
    )

    // Edge nodes: each its own outbox; messages published first, interleaved in time across nodes.
    const edges = NODES.map((node) => {
      const tmp = makeTempDir('rmq-pg-e2e-edge-')
      cleanups.push(tmp.cleanup)
      const env = {
        RMQ_NODE_ID: node,
        RMQ_TOKEN: tokens[node],
        RMQ_SYNC_BATCH_SIZE: '15',
        RMQ_SYNC_TIMEOUT: '5s',
        RMQ_COMPRESSION_CODEC: 'zstd',
      }
      return { node, dir: tmp.dir, env, pending: PER_NODE, done: false }
    })
    for (let round = 0; round < 3; round++)
      for (const e of edges) {
        const lines = Array.from({ length: PER_NODE / 3 }, (_, i) =>
          JSON.stringify({ node: e.node, round, i }),
        )
        const r = await runCli(['publish', `plant/${e.node}/temp`, '--lines', '-f', '-'], {
          cwd: e.dir,
          env: e.env,
          input: lines.join('\n') + '\n',
        })
        expect(r.code, r.stderr).toBe(0)
      }

    const sync = async (e: (typeof edges)[number], url: string) => {
      const r = await runCli(['sync', '--force', '--max-batches', '1', '--json'], {
        cwd: e.dir,
        env: { ...e.env, RMQ_BROKER_URL: url },
        timeoutMs: 30_000,
      })
      if (process.env.DEBUG_E2E)
        console.log(e.node, url, r.code, r.stdout.slice(0, 300), r.stderr.slice(0, 300))
      if (r.code !== 0) return { ok: false, code: r.code }
      const res = parseJson<{ pending: number; messages: number }>(r.stdout)
      e.pending = res.pending
      if (res.pending === 0) e.done = true
      return { ok: true, code: 0 }
    }

    // Rounds: node i sends to broker (i + round) % 2, so each node alternates and both brokers
    // take batches at the same time. In round 2 broker A is SIGKILLed while syncs are in flight.
    let aliveA = true
    const failures: number[] = []
    for (let round = 0; round < 30 && edges.some((e) => !e.done); round++) {
      const runs = edges.map((e, i) => {
        const target = (i + round) % 2 === 0 && aliveA ? a : b
        return sync(e, target.url)
      })
      if (round === 2) {
        await sleep(150)
        await a.kill()
        aliveA = false
      }
      for (const r of await Promise.all(runs)) if (!r.ok) failures.push(r.code ?? -1)
    }
    expect(edges.map((e) => e.pending)).toEqual([0, 0, 0])
    // A sync cut off by the kill fails as "retry later" (75), never as anything else.
    expect(
      failures.every((c) => c === 75),
      JSON.stringify(failures),
    ).toBe(true)

    // The reader on the surviving broker sees everything: released once every node has caught up.
    await readerB.waitFor(TOTAL)
    await sleep(300)
    const got = readerB.lines
    expect(got).toHaveLength(TOTAL)
    expect(new Set(got.map((l) => l.id)).size).toBe(TOTAL)
    expect(got.map((l) => l.position)).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1))
    expect(got.filter((l) => l.late)).toEqual([])
    expect(got.map((l) => l.id)).toEqual([...got].sort(byEvent).map((l) => l.id))
    for (const node of NODES)
      expect(got.filter((l) => l.node === node).map((l) => l.seq)).toEqual(
        Array.from({ length: PER_NODE }, (_, i) => i + 1),
      )

    // The reader on the killed broker fails over: it resumes on B after the last position it printed.
    await readerA.kill()
    const seenOnA = readerA.lines.length
    const lastA = seenOnA ? readerA.lines[seenOnA - 1].position : 0
    const resumed = startConsumer(b.url, tokens['gw-3'], ['--from', String(lastA + 1)])
    cleanups.push(() => resumed.kill())
    await resumed.waitFor(TOTAL - seenOnA)
    await sleep(300)
    expect([...readerA.lines, ...resumed.lines].map((l) => l.id)).toEqual(got.map((l) => l.id))

    // Node status is shared: the surviving broker knows all three nodes, with nothing pending.
    const status = await fetch(`${b.url}/v1/nodes`, {
      headers: { authorization: `Bearer ${tokens['gw-1']}` },
    }).then((r) => r.json() as Promise<{ nodes: Array<{ node: string; backlog: { pending: number } }> }>)
    expect(status.nodes.map((n) => [n.node, n.backlog.pending])).toEqual(NODES.map((n) => [n, 0]))
  })
})
