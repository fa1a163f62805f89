/**
 * completeDriver (src/core/storage/complete-driver.ts): a driver without the
 * optional fast paths, completed with the fallbacks built from its basic
 * methods, syncs like the built-in sqlite driver with its own fast paths.
 * The driver under test is test/helpers/basic-driver.ts (the sqlite
 * driver with its optional methods removed), loaded the way a third-party
 * driver is: `storage.driver` names its file.
 */
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/core/config/load.js'
import type { RmqConfig } from '../../src/core/config/schema.js'
import { openOutbox } from '../../src/core/outbox.js'
import { completeDriver, FAST_PATHS } from '../../src/core/storage/complete-driver.js'
import type { NewMessage, StorageDriver } from '../../src/core/storage/driver.js'
import { drain, readSyncStats, syncOnce } from '../../src/core/sync.js'
import { createMemoryStorage } from '../../src/plugins/storage/memory.js'
import { ROOT, makeTempDir } from '../helpers/cli.js'
import { FakeBroker } from '../helpers/fake-broker.js'
import { withoutFastPaths } from '../../src/testing/without-fast-paths.js'

const BASIC_DRIVER = path.join(ROOT, 'test/helpers/basic-driver.ts')

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

async function setup(
  driver: string,
  options: Record<string, unknown> = {},
): Promise<{ broker: FakeBroker; config: RmqConfig; store: StorageDriver }> {
  const broker = await new FakeBroker().start()
  cleanups.push(() => broker.stop())
  const tmp = makeTempDir('rmq-complete-')
  cleanups.push(tmp.cleanup)
  const { config } = await loadConfig({
    cwd: tmp.dir,
    env: {},
    dotenv: false,
    options: {
      nodeId: 'gw-test',
      brokerUrl: broker.url,
      token: 'secret-token',
      'storage.driver': driver,
      'sync.timeout': '2s',
      'sync.backoff.initial': '20ms',
      'sync.backoff.max': '50ms',
      ...options,
    },
  })
  const store = await openOutbox(config, tmp.dir)
  cleanups.push(() => store.close())
  return { broker, config, store }
}

function telemetry(n: number, start = 0, extra: Partial<NewMessage> = {}): NewMessage[] {
  return Array.from({ length: n }, (_, i) => ({
    topic: `plant/line${(start + i) % 3}/temp`,
    payload: Buffer.from(JSON.stringify({ i: start + i, v: 20 + ((start + i) % 50) / 10 })),
    ts: 1_764_160_000_000 + (start + i) * 1000,
    ...extra,
  }))
}

/** What the broker saw, request by request: the seqs of each and its backlog's oldest ts. */
function requests(broker: FakeBroker) {
  return broker.received.map((b) => ({
    seqs: b.body.messages.map((m) => m.seq),
    pending: b.body.backlog.pending,
    oldestTs: b.body.backlog.oldestTs,
  }))
}

describe('completeDriver', () => {
  it('declares which fast paths are the driver’s own, and completes a driver once', async () => {
    const { store: sqlite } = await setup('sqlite')
    const { store: basic } = await setup(BASIC_DRIVER)
    const own = (d: StorageDriver) => completeDriver(d).fastPaths
    expect(own(sqlite)).toEqual(Object.fromEntries(FAST_PATHS.map((k) => [k, true])))
    expect(own(basic)).toEqual(Object.fromEntries(FAST_PATHS.map((k) => [k, false])))
    // openOutbox completes; completing again (as SyncRun does) changes nothing.
    expect(completeDriver(basic)).toBe(basic)
    const raw = completeDriver(basic).driver
    expect(completeDriver(raw)).toBe(basic)
  })

  it('a driver with pendingRuns but not wireJson gets both fallbacks (they name the same messages)', async () => {
    const memory = await withoutFastPaths(createMemoryStorage)({
      path: '',
      maxBytes: 1e9,
      maxMessages: 0,
      overflow: 'reject',
      durability: 'full',
    })
    const half: StorageDriver = {
      ...memory,
      pendingRuns: async () => {
        throw new Error('not used without wireJson')
      },
    }
    const d = completeDriver(half)
    expect(d.fastPaths).toMatchObject({ pendingRuns: false, wireJson: false })
    await d.append(telemetry(3))
    const runs = await d.pendingRuns({ limit: 10, maxBytes: 1e9, order: 'oldest', now: Date.now() })
    expect(runs).toEqual([expect.objectContaining({ first: 1, last: 3, count: 3 })])
    expect((await d.wireJson([1, 2, 3])).count).toBe(3)
  })

  it('the wireJson fallback refuses seqs its pendingRuns did not hand out, rather than send less than it marks sent', async () => {
    const { store } = await setup(BASIC_DRIVER)
    const d = completeDriver(store)
    await d.append(telemetry(5))
    await d.pendingRuns({ limit: 2, maxBytes: 1e9, order: 'oldest', now: Date.now() })
    expect((await d.wireJson([1, 2])).count).toBe(2)
    await expect(d.wireJson([1, 2, 3])).rejects.toThrow(/seq 3 was not returned by pendingRuns/)
  })

  it('messages handed out and not marked sent are read again, first and in order', async () => {
    const { store } = await setup(BASIC_DRIVER)
    const d = completeDriver(store)
    await d.append(telemetry(30))
    const q = { limit: 10, maxBytes: 1e9, order: 'oldest' as const, now: Date.now() }
    // RunQuery.skip is indexed by priority; these messages have the default, 4.
    const priority4 = (span: [number, number]) =>
      Object.assign(new Array<[number, number] | undefined>(10), { 4: span })
    const first = await d.pendingRuns(q)
    expect(first).toEqual([expect.objectContaining({ first: 1, last: 10 })])
    // In flight: skipped.
    expect(await d.pendingRuns({ ...q, skip: priority4([1, 10]) })).toEqual([
      expect.objectContaining({ first: 11, last: 20 }),
    ])
    // 1-10 acknowledged, 11-20 failed: 11-20 come again, before 21-30.
    await d.markSent([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], Date.now())
    expect(await d.pendingRuns(q)).toEqual([expect.objectContaining({ first: 11, last: 20 })])
  })
})

describe('sync through a driver without fast paths (completed) is the same as through sqlite', () => {
  it('the same batches in the same order, pipelined, and the same statistics', async () => {
    const runs = []
    for (const driver of ['sqlite', BASIC_DRIVER]) {
      const { broker, config, store } = await setup(driver, { 'sync.batchSize': 100 })
      broker.reply = () => ({ status: 200, delayMs: 20 })
      await store.append([...telemetry(250), ...telemetry(20, 250, { priority: 7 })])
      const r = await syncOnce({ driver: store, config })
      expect(r).toMatchObject({ status: 'ok', messages: 270, pending: 0 })
      expect(broker.maxInProgress).toBe(2)
      const stats = await readSyncStats(store)
      runs.push({ requests: requests(broker), stats, sentTotal: (await store.stats(Date.now())).sentTotal })
    }
    const [native, basic] = runs
    expect(basic.requests.map((q) => q.seqs)).toEqual(native.requests.map((q) => q.seqs))
    expect(basic.requests.map((q) => q.pending)).toEqual(native.requests.map((q) => q.pending))
    // Without an exact oldestPendingTs the backlog's oldest ts is conservative: never later.
    basic.requests.forEach((q, i) => {
      const exact = native.requests[i].oldestTs
      if (exact === null) expect(q.oldestTs).toBeNull()
      else expect(q.oldestTs!).toBeLessThanOrEqual(exact)
    })
    const counts = (s: typeof native.stats) => ({
      ...s,
      bytesRaw: 0,
      bytesWire: 0,
      lastAttemptAt: 0,
      lastSuccessAt: 0,
    })
    expect(counts(basic.stats)).toEqual(counts(native.stats))
    expect(basic.sentTotal).toBe(270)
  })

  it('a failed batch in flight: the same messages go again, in order, nothing skipped or twice accepted', async () => {
    const runs = []
    for (const driver of ['sqlite', BASIC_DRIVER]) {
      const { broker, config, store } = await setup(driver, { 'sync.batchSize': 20 })
      broker.reply = (_r, n) => (n === 3 ? { status: 503, delayMs: 60 } : { status: 200, delayMs: 20 })
      await store.append(telemetry(200))
      const r = await drain({ driver: store, config }, { timeout: 20_000 })
      expect(r).toMatchObject({ pending: 0, retries: 1 })
      expect(broker.accepted.size).toBe(200)
      runs.push(requests(broker).map((q) => q.seqs))
    }
    const [native, basic] = runs
    expect(basic).toEqual(native)
    // The refused batch (the third request) was sent again whole.
    const failed = basic[2]
    expect(basic.slice(3).some((seqs) => seqs.join() === failed.join())).toBe(true)
  })

  it('under a budget: newest first, higher priority first, and later runs send the rest', async () => {
    const sent = []
    for (const driver of ['sqlite', BASIC_DRIVER]) {
      const { broker, config, store } = await setup(driver, {
        'sync.batchSize': 50,
        'compression.codec': 'none',
      })
      // JSON batches from both, so that both meet the budget at the same message: this broker
      // refuses frames (415), and sqlite's first batch, sent as frames, goes again as JSON.
      broker.features = ['pipeline']
      await store.append(telemetry(400))
      await store.append(telemetry(5, 1000, { priority: 9 }))
      const first = await syncOnce({ driver: store, config }, { budget: 8 * 1024 })
      expect(first).toMatchObject({ order: 'newest', stoppedBy: 'budget' })
      const firstRun = broker.batches
        .filter((b) => b.headers['content-type'] === 'application/json')
        .flatMap((b) => b.body.messages.map((m) => m.seq))
      expect(firstRun.slice(0, 5)).toEqual([405, 404, 403, 402, 401])
      let runs = 1
      while ((await store.stats(Date.now())).pending > 0 && runs < 100) {
        await syncOnce({ driver: store, config }, { budget: 8 * 1024 })
        runs++
      }
      expect(broker.accepted.size).toBe(405)
      sent.push({ firstRun, runs })
    }
    expect(sent[1]).toEqual(sent[0])
  })
})
