/**
 * The fault-injection suite (docs/guarantees.md): real `rmq` processes, one
 * real broker, the fault proxy between them, crashes at deterministic
 * failpoints and at random moments, full disks, overlapping runs, skewed and
 * stepped clocks, a recreated store. After every scenario all faults are
 * removed, everything is drained and the total-queue checker must find
 * nothing lost, duplicated, unexpected or out of order.
 *
 * `npm test` runs the fast form; `npm run test:faults` (RMQ_FAULTS=full) the
 * long one with more rounds and mixed faults, and prints the tally table.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { request } from '../helpers/broker.js'
import type { FaultMode } from '../helpers/fault-proxy.js'
import { violations, type CheckResult, type Delivered } from './checker.js'
import { makeTempDir } from '../helpers/cli.js'
import { Cluster, FULL, mountTmpfs, rng, runProc, sleep, type EdgeNode, type ProcResult } from './harness.js'
import { hostileNode, lyingBroker } from './peers.js'
import { record, renderTally } from './tally.js'

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})
afterAll(() => {
  console.log(renderTally(`rmq fault suite (${FULL ? 'full' : 'fast'})`))
})

async function cluster(opts: Parameters<typeof Cluster.start>[0] = {}): Promise<Cluster> {
  const c = await Cluster.start(opts)
  cleanups.push(() => c.cleanup())
  return c
}

/** Settle, record in the tally, and require every promise to hold. */
async function settleAndCheck(
  c: Cluster,
  scenario: string,
  runs = 1,
): Promise<{ check: CheckResult; event: Delivered[] }> {
  const { check, arrival, event } = await c.settle()
  record(scenario, c, check, runs)
  expect(violations(check), JSON.stringify({ ...check, lost: check.lost.slice(0, 10) })).toEqual([])
  // Everything that arrived was released: nothing is held back for ever.
  expect(check.read).toBe(arrival.length)
  expect(check.acknowledged).toBeGreaterThan(0)
  // No process died of an unexpected error (exit 1) on the way.
  expect(c.unexpected).toEqual([])
  return { check, event }
}

function killedBy(r: ProcResult): boolean {
  return r.signal === 'SIGKILL' && !r.killed
}

function json(r: ProcResult): any {
  return JSON.parse(r.stdout)
}

/**
 * Fill the file system of `dir` but `leave` bytes with a file named filler. A
 * filler that itself hits ENOSPC (another writer took the rest first) leaves
 * the disk full: that is the condition sought, not a failure of the run.
 */
function fillDisk(dir: string, leave: number): void {
  const free = fs.statfsSync(dir)
  try {
    fs.writeFileSync(path.join(dir, 'filler'), Buffer.alloc(Math.max(0, free.bavail * free.bsize - leave)))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  }
}

describe('deterministic failpoints (RMQ_FAILPOINTS)', () => {
  it('crashes after read, before post, after the broker committed, after mark-sent, in cleanup, and in the broker before and after its commit: resent and deduplicated', async () => {
    const c = await cluster({ nodes: 4 })
    const [n1, n2, n3, n4] = c.nodes
    const points: Array<[EdgeNode, string]> = [
      [n1, 'sync.after-post-before-mark-sent=crash@2'],
      [n2, 'sync.after-mark-sent=crash@1'],
      [n3, 'sync.after-read=crash'],
      [n4, 'sync.before-post=crash@2'],
    ]
    await Promise.all(
      points.map(async ([n, fp]) => {
        expect((await n.publishLines(60)).code).toBe(0)
        const r = await n.sync({ env: { RMQ_FAILPOINTS: fp } })
        expect(killedBy(r), `${fp}: ${r.stderr}`).toBe(true)
        c.faults.add(`failpoint ${fp.split('=')[0]}`)
      }),
    )
    // n1 died after the broker committed its second batch: the resend is deduplicated.
    const again = await n1.sync()
    expect(again.code, again.stderr).toBe(0)
    expect(json(again).duplicates).toBeGreaterThanOrEqual(20)
    // A crashed cleanup (between two steps) deletes only sent messages and leaves a usable store.
    const cl = await n1.cleanup({ env: { RMQ_FAILPOINTS: 'cleanup.after-step=crash' } })
    expect(killedBy(cl), cl.stderr).toBe(true)
    c.faults.add('failpoint cleanup.after-step')
    // The next cleanup takes over the dead run's lease at once (not 'locked' for a minute).
    const next = await n1.cleanup()
    expect(next.code, next.stderr).toBe(0)
    expect(json(next).status).toBe('ok')
    expect((await n1.publishLines(10)).code).toBe(0)

    // The broker dies after committing a batch but before replying: the edge sees a failed
    // request (75), and the resend after the restart is deduplicated; before its commit: nothing stored.
    for (const [fp, dups] of [
      ['broker.ingest.after-commit-before-reply=crash@1', 20],
      ['broker.ingest.before-commit=crash@1', 0],
    ] as const) {
      await n2.drain() // leave exactly the 40 new messages for the crash
      expect((await n2.publishLines(40)).code).toBe(0)
      await c.stopBroker()
      await c.startBroker({ RMQ_FAILPOINTS: fp })
      const r = await n2.sync()
      expect(r.code, r.stderr).toBe(75)
      for (let i = 0; i < 50 && c.broker.child.signalCode === null; i++) await sleep(100)
      expect(c.broker.child.signalCode).toBe('SIGKILL')
      c.faults.add(`failpoint ${fp.split('=')[0]}`)
      await c.startBroker()
      const after = await n2.sync({ args: ['--force'] })
      expect(after.code, after.stderr).toBe(0)
      expect(json(after)).toMatchObject({ messages: 40, duplicates: dups })
    }
    await settleAndCheck(c, 'failpoints: edge and broker')
  }, 300_000)
})

const MODES = (r: () => number): FaultMode[] => [
  { kind: 'delay', ms: 20 + Math.floor(r() * 300) },
  { kind: 'stall', afterBytes: Math.floor(r() * 3000) },
  { kind: 'reset', afterBytes: Math.floor(r() * 3000) },
  { kind: 'blackhole' },
  { kind: 'refuse' },
]

/**
 * Random faults for `ms`: publishers, syncs and cleanups SIGKILLed at random
 * moments, the link switching between faults, the broker killed and restarted.
 */
async function chaos(c: Cluster, seed: number, ms: number, opts: { brokerKills: boolean }): Promise<void> {
  const r = rng(seed)
  const until = Date.now() + ms
  const pick = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo))
  const loops: Array<Promise<void>> = []
  for (const n of c.nodes) {
    loops.push(
      (async () => {
        while (Date.now() < until) {
          const kill = r() < 0.3 ? pick(40, 400) : undefined
          const res =
            r() < 0.2
              ? await n.publishOne({ killAfterMs: kill })
              : await n.publishLines(pick(5, 40), { killAfterMs: kill })
          if (res.killed) c.faults.add('SIGKILL publish')
        }
      })(),
      (async () => {
        while (Date.now() < until) {
          const kill = r() < 0.35 ? pick(100, 1500) : undefined
          const res = await n.sync({ args: r() < 0.5 ? ['--force'] : [], killAfterMs: kill })
          if (res.killed) c.faults.add('SIGKILL sync')
          await sleep(pick(50, 300))
        }
      })(),
      (async () => {
        while (Date.now() < until) {
          await sleep(pick(500, 2000))
          const res = await n.cleanup({ killAfterMs: r() < 0.5 ? pick(30, 300) : undefined })
          if (res.killed) c.faults.add('SIGKILL cleanup')
        }
      })(),
    )
  }
  loops.push(
    (async () => {
      while (Date.now() < until) {
        c.setLink(r() < 0.4 ? { kind: 'pass' } : MODES(r)[pick(0, 5)])
        await sleep(pick(300, 1200))
      }
      c.setLink({ kind: 'pass' })
    })(),
  )
  if (opts.brokerKills)
    loops.push(
      (async () => {
        while (Date.now() + 2000 < until) {
          await sleep(pick(2000, 5000))
          if (Date.now() + 1000 >= until) break
          await c.killBroker()
          await sleep(pick(200, 1000))
          // A broker cannot start on a full disk: retry until the disk fault is lifted.
          for (let i = 0; ; i++) {
            try {
              await c.startBroker()
              break
            } catch (err) {
              if (i >= 20) throw err
              await sleep(500)
            }
          }
        }
      })(),
    )
  await Promise.all(loops)
}

describe('random faults', () => {
  const rounds = FULL ? 4 : 1
  for (let round = 0; round < rounds; round++) {
    const seed = Number(process.env.RMQ_FAULTS_SEED ?? Date.now() % 1e9) + round
    it(`SIGKILL of publishers, syncs, cleanups and the broker, with a faulty link (seed ${seed})`, async () => {
      const c = await cluster({ nodes: FULL ? 3 : 2 })
      await chaos(c, seed, FULL ? 25_000 : 6_000, { brokerKills: true })
      await settleAndCheck(c, 'random: kills + link faults')
    }, 300_000)
  }
})

describe('full disk at the edge', () => {
  it('publish, cleanup and sync on a full disk exit 73 with a clear message, not an unexpected I/O error', async () => {
    const disk = mountTmpfs('2m')
    const { dir, cleanup } = makeTempDir('rmq-faults-disk-')
    cleanups.push(cleanup)
    if (disk) cleanups.push(() => disk.unmount())
    const env = {
      RMQ_NODE_ID: 'gw-disk',
      RMQ_BROKER_URL: 'http://127.0.0.1:9',
      RMQ_STORAGE_PATH: path.join(disk?.dir ?? dir, 'outbox.db'),
      // Without root (no tmpfs), SQLite's max_page_count plays the full disk.
      ...(disk ? {} : { RMQ_FAILPOINTS: 'sqlite.maxPageCount=40' }),
    }
    const run = (args: string[], input?: string) => runProc(args, { cwd: dir, env, input })
    const lines = (n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ i })).join('\n') + '\n'
    expect((await run(['publish', 't/disk', '--lines', '-f', '-'], lines(200))).code).toBe(0)
    if (disk) {
      fillDisk(disk.dir, 16 * 1024)
    }
    let pub: ProcResult | undefined
    for (let i = 0; i < 50 && (pub === undefined || pub.code === 0); i++)
      pub = await run(['publish', 't/disk', '--lines', '-f', '-'], lines(500))
    expect(pub!.code, pub!.stderr).toBe(73)
    expect(pub!.stderr).toMatch(/is full/)
    if (disk)
      for (const args of [['cleanup'], ['sync']]) {
        const r = await run(args)
        expect(r.code, `${args[0]}: ${r.stderr}`).toBe(73)
        expect(r.stderr).toMatch(/is full/)
      }
    if (disk) fs.rmSync(path.join(disk.dir, 'filler'))
    expect((await run(['publish', 't/disk', 'after'])).code).toBe(disk ? 0 : 73)
  }, 120_000)
})

// Also covered in the fast tests elsewhere (publish.test.ts: SQLITE_FULL 73; app.test.ts: 503;
// sync.test.ts: overlapping runs); here end to end with the checker, in the full form only.
if (FULL)
  describe('full disks', () => {
    it('edge disk full: publish fails with 73 and stores nothing; after sync and cleanup it works again', async () => {
      const fsmount = mountTmpfs('1m')
      if (fsmount) cleanups.push(() => fsmount.unmount())
      const storagePath = fsmount ? path.join(fsmount.dir, 'outbox.db') : undefined
      const c = await cluster({ nodes: 1, edge: () => ({ storagePath }) })
      const [n] = c.nodes
      // Without root: SQLite's max_page_count plays the full disk.
      const env: Record<string, string> = fsmount ? {} : { RMQ_FAILPOINTS: 'sqlite.maxPageCount=200' }
      n.env = { ...n.env, ...env }
      expect((await n.publishLines(50)).code).toBe(0)
      if (fsmount) {
        // Leave a few pages free, then publish until the disk says no.
        fillDisk(fsmount.dir, 48 * 1024)
      }
      let full: ProcResult | undefined
      for (let i = 0; i < 200 && !full; i++) {
        const r = await n.publishLines(100)
        if (r.code !== 0) full = r
      }
      expect(full?.code, full?.stderr).toBe(73)
      expect(full!.stderr).toMatch(/full/)
      c.faults.add('edge disk full')
      // Remove the fault: free the space (filler gone), then sync and clean up.
      if (fsmount) fs.rmSync(path.join(fsmount.dir, 'filler'))
      await n.drain()
      expect((await n.cleanup()).code).toBe(0)
      expect((await n.publishLines(20)).code).toBe(0)
      await settleAndCheck(c, 'edge disk full')
    })

    it('broker disk full: 503, the edge keeps everything and delivers it once the disk has room', async () => {
      const fsmount = mountTmpfs('4m')
      if (fsmount) cleanups.push(() => fsmount.unmount())
      const c = await cluster({ nodes: 1, brokerDataDir: fsmount?.dir })
      const [n] = c.nodes
      expect((await n.publishLines(40)).code).toBe(0)
      expect((await n.sync()).code).toBe(0)
      if (fsmount) {
        fillDisk(fsmount.dir, 8 * 1024)
      } else {
        await c.stopBroker()
        await c.startBroker({ RMQ_FAILPOINTS: 'sqlite.maxPageCount=1' })
      }
      for (let i = 0; i < 4; i++) expect((await n.publishLines(200)).code).toBe(0)
      const r = await n.sync({ args: ['--force'] })
      expect(r.code, r.stderr).toBe(75)
      expect(r.stderr).toMatch(/503|cannot commit/)
      c.faults.add('broker disk full')
      if (fsmount) fs.rmSync(path.join(fsmount.dir, 'filler'))
      else {
        await c.stopBroker()
        await c.startBroker()
      }
      await settleAndCheck(c, 'broker disk full')
    })
  })

if (FULL)
  describe('one store, many processes', () => {
    it('three overlapping syncs, a cleanup and a publisher on one store, with kills', async () => {
      const c = await cluster({ nodes: 1 })
      const [n] = c.nodes
      const r = rng(7)
      for (let round = 0; round < (FULL ? 8 : 2); round++) {
        const ops: Array<Promise<ProcResult>> = [
          n.publishLines(150),
          n.sync(),
          n.sync(),
          n.sync({ killAfterMs: 100 + Math.floor(r() * 400) }),
          n.cleanup(),
          n.publishLines(50),
        ]
        const res = await Promise.all(ops)
        for (const x of res) if (x.killed) c.faults.add('SIGKILL sync')
        c.faults.add('overlapping syncs + cleanup + publisher')
        // Overlapping syncs never fail: one sends, the others say another sync is running.
        for (const x of res.slice(1, 3)) expect(x.code, x.stderr).toBe(0)
      }
      await settleAndCheck(c, 'overlap: 3 syncs + cleanup + publish')
    })
  })

describe('clocks and epochs', () => {
  it('a node 2 minutes ahead, a node stepped back an hour, an outbox deleted and recreated (new epoch, seqs again from 1): nothing lost or deduplicated, order kept, late flagged', async () => {
    const c = await cluster({ nodes: 3 })
    const [ahead, stepped, reborn] = c.nodes
    ahead.env.RMQ_CLOCK_OFFSET = '120000'
    c.faults.add('clock skew +2m')
    await Promise.all([
      (async () => {
        expect((await stepped.publishLines(30)).code).toBe(0)
        expect((await stepped.sync()).code).toBe(0)
      })(),
      (async () => {
        expect((await ahead.publishLines(30)).code).toBe(0)
        expect((await ahead.sync()).code).toBe(0)
      })(),
      (async () => {
        expect((await reborn.publishLines(25)).code).toBe(0)
        expect((await reborn.sync()).code).toBe(0)
        reborn.deleteStore()
        c.faults.add('outbox deleted and recreated')
        expect((await reborn.publishLines(25)).code).toBe(0)
        const r = await reborn.sync()
        // Same seqs 1..25 under a new epoch: new messages, not duplicates.
        expect(json(r)).toMatchObject({ messages: 25, duplicates: 0 })
      })(),
    ])
    stepped.env.RMQ_CLOCK_OFFSET = '-3600000'
    c.faults.add('clock stepped back 1h')
    expect((await stepped.publishLines(30)).code).toBe(0)
    expect((await stepped.sync()).code).toBe(0)
    const status = await request('GET', `${c.broker.url}/v1/nodes/${ahead.id}`, {
      headers: { authorization: `Bearer ${c.token(ahead.id)}` },
    })
    const skew = status.body.clockSkew ?? status.body.node?.clockSkew
    expect(Math.abs(skew - 120_000), JSON.stringify(status.body)).toBeLessThan(60_000)
    const { check, event } = await settleAndCheck(c, 'clocks and epochs')
    // The messages stamped an hour back arrived below the watermark: delivered, flagged late.
    expect(check.late).toBeGreaterThanOrEqual(30)
    expect(check.deliveredOnce).toBe(140)
    expect(new Set(event.filter((m) => m.node === reborn.id).map((m) => m.epoch)).size).toBe(2)
  }, 300_000)
})

describe('counterparts that misbehave', () => {
  const seed = Number(process.env.RMQ_FAULTS_SEED ?? Date.now() % 1e9)
  it(`a lying broker: wrong, missing, truncated, over-cap and hung acks, another batch id, a redirect; then the real broker (seed ${seed})`, async () => {
    // Rounds wait for each other's hung replies (2 s each): a maxLateness that covers a few rounds
    // keeps a node that was lied to live until its retry, so what is checked is the ack, not lateness
    // (a node silent longer than maxLateness has its resent messages flagged late, after later seqs).
    const c = await cluster({ nodes: FULL ? 3 : 2, liar: true, maxLateness: '30s' })
    // Every kind once (fast), or every kind both forwarded and not (full).
    await lyingBroker(c, seed, FULL ? 2 * 9 : 9)
    const { check } = await settleAndCheck(c, 'lying broker')
    // Nothing the liar refused to pass on is lost, nothing it passed on and then denied is doubled.
    expect(check.deliveredOnce).toBe(check.acknowledged)
  }, 600_000)

  it(`a hostile node: garbage, oversized, duplicate-seq, future-ts, invalid UTF-8 batches and bogus stats while honest nodes sync (seed ${seed})`, async () => {
    const c = await cluster({
      nodes: FULL ? 3 : 2,
      brokerEnv: { RMQ_BROKER_ALERTS_INTERVAL: '300ms' },
    })
    await hostileNode(c, seed, FULL ? 20 : 6)
    const { check } = await settleAndCheck(c, 'hostile node')
    expect(check.deliveredOnce).toBe(check.acknowledged)
  }, 300_000)
})

type Tmpfs = NonNullable<ReturnType<typeof mountTmpfs>>

/** Fill `fs` up to `leave` bytes of free space for a while, again and again, until `stop()`. */
function diskFaults(c: Cluster, disks: Array<[Tmpfs, string]>, r: () => number) {
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      await sleep(1000 + r() * 2000)
      if (stopped) break
      const [disk, kind] = disks[Math.floor(r() * disks.length)]
      fillDisk(disk.dir, 16 * 1024)
      c.faults.add(kind)
      await sleep(500 + r() * 1500)
      fs.rmSync(path.join(disk.dir, 'filler'), { force: true })
    }
  })()
  return async () => {
    stopped = true
    await loop
    for (const [disk] of disks) fs.rmSync(path.join(disk.dir, 'filler'), { force: true })
  }
}

if (FULL)
  describe('mixed faults', () => {
    for (let round = 0; round < 2; round++) {
      const seed = Number(process.env.RMQ_FAULTS_SEED ?? Date.now() % 1e9) + 100 + round
      it(`kills, link faults, full disks on both sides and skewed clocks at once (seed ${seed})`, async () => {
        const brokerFs = mountTmpfs('64m')
        const edgeFs = mountTmpfs('8m')
        if (brokerFs) cleanups.push(() => brokerFs.unmount())
        if (edgeFs) cleanups.push(() => edgeFs.unmount())
        const c = await cluster({
          nodes: 3,
          brokerDataDir: brokerFs?.dir,
          edge: (i) =>
            i === 0
              ? { storagePath: edgeFs ? path.join(edgeFs.dir, 'outbox.db') : undefined }
              : { env: { RMQ_CLOCK_OFFSET: i === 1 ? '30000' : '-30000' } },
        })
        c.faults.add('clock skew ±30s', 2)
        const disks: Array<[Tmpfs, string]> = []
        if (brokerFs) disks.push([brokerFs, 'broker disk full'])
        if (edgeFs) disks.push([edgeFs, 'edge disk full'])
        const stopDisks = diskFaults(c, disks, rng(seed + 1))
        await chaos(c, seed, 25_000, { brokerKills: true })
        await stopDisks()
        await settleAndCheck(c, 'mixed: kills + link + disks + clocks')
      }, 600_000)
    }
  })
