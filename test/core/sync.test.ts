import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { backoffDelay, readBackoff, recordFailure } from '../../src/core/backoff.js'
import { loadConfig } from '../../src/core/config/load.js'
import type { RmqConfig } from '../../src/core/config/schema.js'
import { ConfigError, RejectedError, SyncFailedError } from '../../src/shared/errors.js'
import { openOutbox } from '../../src/core/outbox.js'
import { drain, readSyncStats, syncOnce, SYNC_LEASE, toWireMessage } from '../../src/core/sync.js'
import type { NewMessage, StorageDriver } from '../../src/core/storage/driver.js'
import { adviceFor } from '../../src/cli/advice.js'
import { syncSummary } from '../../src/cli/sync-summary.js'
import { makeTempDir } from '../helpers/cli.js'
import { FakeBroker } from '../helpers/fake-broker.js'
import { FaultProxy, type FaultMode } from '../helpers/fault-proxy.js'

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

async function setup(
  options: Record<string, unknown> = {},
  driver: 'memory' | 'sqlite' = 'memory',
): Promise<{ broker: FakeBroker; config: RmqConfig; store: StorageDriver; dir: string }> {
  const broker = await new FakeBroker().start()
  cleanups.push(() => broker.stop())
  const tmp = makeTempDir('rmq-sync-')
  cleanups.push(tmp.cleanup)
  const dir = tmp.dir
  const { config } = await loadConfig({
    cwd: dir,
    env: {},
    dotenv: false,
    options: {
      nodeId: 'gw-test',
      brokerUrl: broker.url,
      token: 'secret-token',
      'storage.driver': driver,
      'sync.timeout': '2s',
      'sync.backoff.initial': '10s',
      'sync.backoff.max': '1m',
      ...options,
    },
  })
  const store = await openOutbox(config, dir)
  cleanups.push(() => store.close())
  return { broker, config, store, dir }
}

function telemetry(n: number, start = 0, extra: Partial<NewMessage> = {}): NewMessage[] {
  return Array.from({ length: n }, (_, i) => ({
    topic: `plant/line${(start + i) % 3}/temp`,
    payload: Buffer.from(JSON.stringify({ i: start + i, v: 20 + ((start + i) % 50) / 10, unit: 'C' })),
    ts: 1_764_160_000_000 + (start + i) * 1000,
    ...extra,
  }))
}

describe('syncOnce', () => {
  it('sends everything in batches, marks it sent and reports bytes before and after compression', async () => {
    const { broker, config, store } = await setup({ 'sync.batchSize': 100 })
    await store.append(telemetry(250))
    const r = await syncOnce({ driver: store, config })
    expect(r.status).toBe('ok')
    expect(r.messages).toBe(250)
    expect(r.batches).toBe(3)
    expect(r.pending).toBe(0)
    expect(r.stoppedBy).toBe('empty')
    expect(r.codec).toBe('zstd')
    expect(r.bytesWire).toBeLessThan(r.bytesRaw / 3)
    expect(broker.accepted.size).toBe(250)
    const seqs = broker.batches.flatMap((b) => b.body.messages.map((m) => m.seq))
    expect(seqs).toEqual(Array.from({ length: 250 }, (_, i) => i + 1))

    const first = broker.batches[0]
    expect(first.headers.authorization).toBe('Bearer secret-token')
    expect(first.headers['content-encoding']).toBe('zstd')
    expect(first.headers['content-type']).toBe('application/json')
    expect(first.body.node).toBe('gw-test')
    expect(first.body.epoch).toBe(store.epoch)
    expect(first.body.batch).toMatch(/^b-/)
    expect(first.body.backlog).toEqual({
      pending: 150,
      bytes: expect.any(Number),
      oldestTs: 1_764_160_000_000,
    })
    expect(first.body.messages[0]).toMatchObject({
      seq: 1,
      enc: 'utf8',
      priority: 4,
      topic: 'plant/line0/temp',
    })
    expect(JSON.parse(first.body.messages[0].payload)).toEqual({ i: 0, v: 20, unit: 'C' })
    const last = broker.batches[2].body
    // Sent while the second was in flight (the first ack listed pipeline): names it.
    expect(last.backlog).toEqual({
      pending: 0,
      bytes: 0,
      oldestTs: null,
      unacked: { batch: broker.batches[1].body.batch, oldestTs: 1_764_160_100_000 },
    })
    // Each report counts the request that carries it and those in flight before it (here the
    // second), as the broker keeps only reports of requests it accepted.
    expect(broker.batches[0].body.stats).toMatchObject({
      sync: { attempts: 1, successes: 1, failures: 0, batches: 1, messagesSent: 100, backoff: null },
    })
    expect((broker.batches[0].body.stats as { sync: { lastSuccessAt: number } }).sync.lastSuccessAt).toBe(
      first.body.clock,
    )
    expect(last.stats).toMatchObject({
      sync: { attempts: 3, successes: 3, batches: 3, heartbeats: 0, messagesSent: 250 },
      storage: { appendedTotal: 250 },
    })

    // The third batch named the second in backlog.unacked: the run ends with an empty batch that
    // reports the backlog as it is, whatever order the broker committed the last two in.
    const closing = broker.received.at(-1)!.body
    expect(closing.messages).toEqual([])
    expect(closing.backlog).toEqual({ pending: 0, bytes: 0, oldestTs: null })
    expect(closing.stats).toMatchObject({ sync: { attempts: 4, successes: 4, batches: 3, heartbeats: 1 } })
    expect(r.heartbeat).toBe(false)
    const stats = await readSyncStats(store)
    expect(stats).toMatchObject({
      attempts: 4,
      successes: 4,
      failures: 0,
      messagesSent: 250,
      batches: 3,
      heartbeats: 1,
    })
    expect(stats.bytesWire).toBe(r.bytesWire)
    expect(stats.lastSuccessAt).toBeGreaterThan(0)
    expect((await store.stats(Date.now())).pending).toBe(0)
  })

  it('sqlite fast path: the same wire messages as from nextBatch, and the backlog left after each batch exactly', async () => {
    const { broker, config, store } = await setup({ 'sync.batchSize': 100 }, 'sqlite')
    const ts = (i: number) => 1_764_160_000_000 + i * 1000
    await store.append([
      ...telemetry(250),
      // Older than everything, but low priority: sent last, so it holds every low mark back.
      { topic: 'late/one', payload: Buffer.from([0xff, 0xfe]), ts: ts(-5), priority: 1, headers: { h: 'v' } },
    ])
    const expected = await store.nextBatch({ limit: 1000, maxBytes: 1e12, order: 'oldest', now: Date.now() })
    const r = await syncOnce({ driver: store, config })
    expect(r.messages).toBe(251)
    const sent = broker.batches.flatMap((b) => b.body.messages)
    expect(sent).toEqual(expected.map((m) => JSON.parse(JSON.stringify(toWireMessage(m)))))
    expect(sent[250]).toMatchObject({ enc: 'base64', payload: '//4=', headers: { h: 'v' } })
    expect(broker.batches.map((b) => b.body.backlog.oldestTs)).toEqual([ts(-5), ts(-5), null])

    // Without the old message, each batch reports the oldest ts left after it and the one in flight.
    const second = await setup({ 'sync.batchSize': 100 }, 'sqlite')
    await second.store.append(telemetry(250))
    await syncOnce({ driver: second.store, config: second.config })
    expect(second.broker.batches.map((b) => b.body.backlog)).toEqual([
      { pending: 150, bytes: expect.any(Number), oldestTs: ts(100) },
      { pending: 50, bytes: expect.any(Number), oldestTs: ts(200) },
      {
        pending: 0,
        bytes: 0,
        oldestTs: null,
        unacked: { batch: second.broker.batches[1].body.batch, oldestTs: ts(100) },
      },
    ])
  })

  it('sends binary payloads as base64 and honours batchBytes', async () => {
    const { broker, config, store } = await setup({ 'sync.batchBytes': '4KB' })
    await store.append(
      Array.from({ length: 10 }, (_, i) => ({ topic: 'bin', payload: Buffer.alloc(1000, i + 0x80), ts: i })),
    )
    const r = await syncOnce({ driver: store, config })
    expect(r.messages).toBe(10)
    expect(broker.batches.length).toBeGreaterThanOrEqual(3)
    const m = broker.batches[0].body.messages[0]
    expect(m.enc).toBe('base64')
    expect(Buffer.from(m.payload, 'base64').equals(Buffer.alloc(1000, 0x80))).toBe(true)
  })

  it('sends a heartbeat when there is nothing to send', async () => {
    const { broker, config, store } = await setup()
    const r = await syncOnce({ driver: store, config })
    expect(r).toMatchObject({ status: 'ok', heartbeat: true, messages: 0, batches: 0 })
    expect(broker.received).toHaveLength(1)
    expect(broker.received[0].body.messages).toEqual([])
    expect(broker.received[0].body.backlog).toEqual({ pending: 0, bytes: 0, oldestTs: null })
    expect((await readSyncStats(store)).heartbeats).toBe(1)
  })

  it('never sends expired messages', async () => {
    const { broker, config, store } = await setup()
    const now = Date.now()
    await store.append([
      ...telemetry(3, 0, { expiresAt: now - 1 }),
      ...telemetry(2, 3, { expiresAt: now + 3_600_000 }),
    ])
    const r = await syncOnce({ driver: store, config })
    expect(r.messages).toBe(2)
    expect([...broker.accepted.values()].map((m) => m.seq)).toEqual([4, 5])
  })

  it('fails with 75 on 5xx, keeps messages, persists a backoff the next run honours; --force and success reset it', async () => {
    const { broker, config, store } = await setup({ 'sync.backoff.initial': '30s' })
    await store.append(telemetry(20))
    broker.reply = () => ({ status: 503, body: { error: { message: 'store cannot commit' } } })
    const err = await syncOnce({ driver: store, config }).catch((e) => e)
    expect(err).toBeInstanceOf(SyncFailedError)
    expect(err.exitCode).toBe(75)
    expect(err.message).toMatch(/HTTP 503: store cannot commit/)
    expect(err.message).toMatch(/next attempt in 30s/)
    expect(err.details).toMatchObject({ problem: 'attempt-failed', status: 503 })
    expect(err.suggestion).toBeUndefined()
    expect(adviceFor(err)).toMatch(/`rmq sync --force` tries now/)
    expect(err.details.result).toMatchObject({ messages: 0, pending: 20 })
    expect((await store.stats(Date.now())).pending).toBe(20)
    const b = await readBackoff(store)
    expect(b).toMatchObject({ failures: 1, delayMs: 30_000 })

    const second = await syncOnce({ driver: store, config })
    expect(second.status).toBe('backoff')
    expect(second.nextAttemptAt).toBe(b!.nextAttemptAt)
    // The engine says why; the CLI adds what to do.
    expect(second.message).toMatch(/next attempt due at /)
    expect(second.message).not.toMatch(/--force/)
    expect(syncSummary(second)).toMatch(/next attempt due at .*; use --force to try now$/)
    expect(broker.received).toHaveLength(1)

    const forced = await syncOnce({ driver: store, config }, { force: true }).catch((e) => e)
    expect(forced).toBeInstanceOf(SyncFailedError)
    expect((await readBackoff(store))!.failures).toBe(2)

    broker.reply = () => undefined
    const ok = await syncOnce({ driver: store, config }, { force: true })
    expect(ok.messages).toBe(20)
    expect(await readBackoff(store)).toBeUndefined()
    const stats = await readSyncStats(store)
    expect(stats).toMatchObject({
      attempts: 3,
      failures: 2,
      successes: 1,
      lastError: 'HTTP 503: store cannot commit',
    })
  })

  it.each([
    [429, 'TOO_MANY_IN_FLIGHT'],
    [503, 'BROKER_BUSY'],
  ])('honours Retry-After on %i (%s)', async (status, code) => {
    const { broker, config, store } = await setup({ 'sync.backoff.initial': '1s' })
    await store.append(telemetry(5))
    broker.reply = () => ({ status, body: { statusCode: status, code }, headers: { 'retry-after': '120' } })
    const before = Date.now()
    await expect(syncOnce({ driver: store, config })).rejects.toBeInstanceOf(SyncFailedError)
    const b = await readBackoff(store)
    expect(b!.nextAttemptAt).toBeGreaterThanOrEqual(before + 120_000)
  })

  it('treats connection refused and timeouts as retryable failures', async () => {
    const { broker, config, store } = await setup({ 'sync.timeout': '300ms' })
    await store.append(telemetry(5))
    broker.reply = () => ({ hang: true })
    const t0 = Date.now()
    const timeout = await syncOnce({ driver: store, config }).catch((e) => e)
    expect(timeout).toBeInstanceOf(SyncFailedError)
    expect(timeout.message).toMatch(/no answer .* within 300 ms/)
    expect(Date.now() - t0).toBeLessThan(5000)
    await broker.stop()
    const refused = await syncOnce({ driver: store, config }, { force: true }).catch((e) => e)
    expect(refused).toBeInstanceOf(SyncFailedError)
    expect(refused.message).toMatch(/connection refused/)
    expect((await store.stats(Date.now())).pending).toBe(5)
  })

  it('stops loudly on a permanent rejection and leaves the messages pending', async () => {
    const { broker, config, store } = await setup()
    await store.append(telemetry(5))
    broker.reply = () => ({
      status: 400,
      body: { error: { message: 'messages/0/topic must match pattern' } },
    })
    const err = await syncOnce({ driver: store, config }).catch((e) => e)
    expect(err).toBeInstanceOf(RejectedError)
    expect(err.exitCode).toBe(65)
    expect(err.message).toMatch(
      /permanently rejected a batch of 5 message\(s\) \(seq 1\.\.5\): HTTP 400: messages\/0\/topic/,
    )
    expect(err.message).toMatch(/stay pending/)
    expect(err.details).toMatchObject({ problem: 'batch-rejected', status: 400, seqs: [1, 5] })
    expect(adviceFor(err)).toMatch(/then run `rmq sync` again/)
    expect((await store.stats(Date.now())).pending).toBe(5)
    expect(await readBackoff(store)).toBeUndefined()
  })

  it('maps 401/403 to a configuration error with a token hint', async () => {
    const { broker, config, store } = await setup()
    broker.reply = () => ({ status: 401, body: { error: { message: 'missing or invalid token' } } })
    const err = await syncOnce({ driver: store, config }).catch((e) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.exitCode).toBe(78)
    expect(err.details).toMatchObject({ problem: 'token-refused', status: 401, node: 'gw-test' })
    expect(err.suggestion).toBeUndefined()
    expect(adviceFor(err)).toMatch(/rmq broker token create gw-test/)

    broker.reply = () => ({ status: 403, body: { error: { message: 'token is for node gw-other' } } })
    const other = await syncOnce({ driver: store, config }).catch((e) => e)
    expect(other).toBeInstanceOf(ConfigError)
    expect(other.details).toMatchObject({ problem: 'token-other-node', status: 403 })
    expect(adviceFor(other)).toMatch(/bound to another node: .*`rmq broker token create gw-test`/)
  })

  it('splits a batch the broker finds too large (413)', async () => {
    const { broker, config, store } = await setup()
    await store.append(telemetry(40))
    broker.reply = (r) => (r.body.messages.length > 10 ? { status: 413 } : undefined)
    const r = await syncOnce({ driver: store, config })
    expect(r.messages).toBe(40)
    expect(broker.accepted.size).toBe(40)
  })

  it('two overlapping runs never send at the same time; a crashed holder is taken over', async () => {
    const { broker, config, store } = await setup()
    await store.append(telemetry(50))
    let inFlight = 0
    let maxInFlight = 0
    broker.reply = async () => {
      maxInFlight = Math.max(maxInFlight, ++inFlight)
      await new Promise((r) => setTimeout(r, 100))
      inFlight--
      return undefined
    }
    const [a, b] = await Promise.all([
      syncOnce({ driver: store, config }),
      syncOnce({ driver: store, config }),
    ])
    expect([a.status, b.status].sort()).toEqual(['locked', 'ok'])
    expect([a, b].find((x) => x.status === 'locked')!.message).toMatch(/another sync is running/)
    expect(maxInFlight).toBe(1)
    expect(broker.accepted.size).toBe(50)
    expect(broker.batches.flatMap((x) => x.body.messages)).toHaveLength(50)

    // A holder whose process is gone (pid 2^22+ is never a live pid here) does not block.
    const dead = `${(await import('node:os')).hostname()}:4194999:deadbeef`
    expect(await store.acquireLease(SYNC_LEASE, dead, 3_600_000, Date.now())).toBe(true)
    await store.setState('sync.leaseOwner', dead)
    await store.append(telemetry(5, 50))
    const r = await syncOnce({ driver: store, config })
    expect(r).toMatchObject({ status: 'ok', messages: 5 })
  })

  it('sends newest first (higher priority first) under a budget; later runs send the rest', async () => {
    const { broker, config, store } = await setup({ 'sync.batchSize': 50, 'compression.codec': 'none' })
    await store.append(telemetry(400))
    await store.append(telemetry(5, 1000, { priority: 9 }))
    const first = await syncOnce({ driver: store, config }, { budget: 8 * 1024 })
    expect(first.order).toBe('newest')
    expect(first.stoppedBy).toBe('budget')
    expect(first.bytesWire).toBeLessThanOrEqual(8 * 1024)
    expect(first.messages).toBeGreaterThan(5)
    expect(first.pending).toBe(405 - first.messages)
    const sent = broker.batches.flatMap((b) => b.body.messages.map((m) => m.seq))
    // The 5 high-priority messages, then the newest of the rest.
    expect(sent.slice(0, 5)).toEqual([405, 404, 403, 402, 401])
    expect(sent.slice(5)).toEqual(Array.from({ length: sent.length - 5 }, (_, i) => 400 - i))

    let runs = 1
    while ((await store.stats(Date.now())).pending > 0 && runs < 100) {
      await syncOnce({ driver: store, config }, { budget: 8 * 1024 })
      runs++
    }
    expect(runs).toBeGreaterThan(3)
    expect(broker.accepted.size).toBe(405)
  })

  it('sends one message larger than the whole budget rather than stalling for ever', async () => {
    const { broker, config, store } = await setup({ 'compression.codec': 'none' })
    await store.append([{ topic: 't', payload: Buffer.alloc(5000, 0x61), ts: 1 }, ...telemetry(3)])
    const r = await syncOnce({ driver: store, config }, { budget: 1000 })
    expect(r.messages).toBe(1)
    expect(broker.accepted.size).toBe(1)
  })

  it('paces the wire at sync.rateLimit', async () => {
    const { config, store } = await setup({ 'sync.batchSize': 20, 'compression.codec': 'none' })
    await store.append(telemetry(100))
    const r = await syncOnce({ driver: store, config }, { rateLimit: 20_000 })
    // 5 batches; the last one may start once the first four have "paid" for their bytes.
    const perBatch = r.bytesWire / r.batches
    expect(r.durationMs).toBeGreaterThanOrEqual(((perBatch * 4) / 20_000) * 1000 * 0.9)
  })

  it('stops after --max-batches and when aborted', async () => {
    const { broker, config, store } = await setup({ 'sync.batchSize': 10 })
    await store.append(telemetry(100))
    const r = await syncOnce({ driver: store, config }, { maxBatches: 2 })
    expect(r).toMatchObject({ messages: 20, stoppedBy: 'max-batches', pending: 80 })
    const ac = new AbortController()
    broker.reply = (_rec, n) => {
      if (n === 4) ac.abort()
      return undefined
    }
    const aborted = await syncOnce({ driver: store, config }, { signal: ac.signal })
    expect(aborted.stoppedBy).toBe('aborted')
    expect(aborted.pending).toBeGreaterThan(0)
  })

  it('holds no outbox write lock while a request is in flight (sqlite, two connections)', async () => {
    const { broker, config, store, dir } = await setup({}, 'sqlite')
    await store.append(telemetry(10))
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    let started!: () => void
    const requestStarted = new Promise<void>((r) => (started = r))
    broker.reply = async () => {
      started()
      await gate
      return undefined
    }
    const run = syncOnce({ driver: store, config })
    await requestStarted
    const other = await openOutbox(config, dir)
    cleanups.push(() => other.close())
    const t0 = Date.now()
    await other.append(telemetry(1, 10))
    expect(Date.now() - t0).toBeLessThan(1000)
    release()
    const r = await run
    expect(r.messages).toBeGreaterThanOrEqual(10)
    expect(path.isAbsolute(dir)).toBe(true)
  })
})

describe('pipelining and frames (a broker that lists them in its acks)', () => {
  it('frames from the first batch; one at a time until an ack lists pipeline, then two in flight, each naming the unacknowledged one before it', async () => {
    const { broker, config, store } = await setup({ 'sync.batchSize': 50 }, 'sqlite')
    // Slow acks, so that a second request is really sent before the first is answered.
    broker.reply = () => ({ status: 200, delayMs: 40 })
    const ts = (i: number) => 1_764_160_000_000 + i * 1000
    await store.append([
      ...telemetry(300),
      { topic: 'bin/one', payload: Buffer.from([0xff, 0x00, 0xfe]), ts: ts(300), headers: { h: 'v' } },
      {
        topic: 'utf8/multi',
        payload: Buffer.from('€ ✓ 𝄞 "quoted" \\ \n'),
        ts: ts(301),
        contentType: 'text/plain',
      },
      { topic: 'empty/one', payload: Buffer.alloc(0), ts: ts(302) },
    ])
    const expected = await store.nextBatch({ limit: 1000, maxBytes: 1e12, order: 'oldest', now: Date.now() })
    const r = await syncOnce({ driver: store, config })
    expect(r.messages).toBe(303)
    expect(r.pending).toBe(0)

    const batches = broker.batches
    // The second batch is read while the first is in flight, before any ack lists features: it waits.
    for (const b of batches.slice(0, 2)) expect(b.inProgress).toBe(1)
    for (const b of batches) expect(b.headers['content-type']).toBe('application/vnd.rmq.frames')
    expect(broker.maxInProgress).toBe(2)
    // Every message once, byte for byte as in JSON.
    const sent = batches.flatMap((b) => b.body.messages)
    expect(sent).toEqual(expected.map((m) => JSON.parse(JSON.stringify(toWireMessage(m)))))
    expect(sent.at(-3)).toMatchObject({ enc: 'base64', payload: '/wD+', headers: { h: 'v' } })
    expect(sent.at(-2)).toMatchObject({ enc: 'utf8', payload: '€ ✓ 𝄞 "quoted" \\ \n' })
    expect(sent.at(-1)).toMatchObject({ enc: 'utf8', payload: '' })

    // A batch sent while another was in flight names it, with that batch's oldest ts, and its own
    // oldestTs leaves both out; the broker uses the lower of the two unless that batch is committed.
    const sentWithCompany = batches.filter((b) => b.body.backlog.unacked)
    expect(sentWithCompany.length).toBeGreaterThan(0)
    for (const b of sentWithCompany) {
      const i = batches.indexOf(b)
      const before = batches[i - 1]
      expect(b.body.backlog.unacked).toEqual({
        batch: before.body.batch,
        oldestTs: Math.min(...before.body.messages.map((m) => m.ts)),
      })
      const own = Math.max(...b.body.messages.map((m) => m.ts))
      if (b.body.backlog.oldestTs !== null) expect(b.body.backlog.oldestTs).toBeGreaterThan(own)
    }
    expect(batches.at(-1)!.body.backlog).toMatchObject({ pending: 0, oldestTs: null })
  })

  it('a failure of the first in flight: the second still counts, the failed messages go again, nothing twice', async () => {
    const { broker, config, store } = await setup(
      { 'sync.batchSize': 20, 'sync.backoff.initial': '20ms', 'sync.backoff.max': '50ms' },
      'sqlite',
    )
    broker.reply = (_r, n) => (n === 3 ? { status: 503, delayMs: 60 } : { status: 200, delayMs: 20 })
    await store.append(telemetry(200))
    const r = await drain({ driver: store, config }, { timeout: 20_000 })
    expect(r.pending).toBe(0)
    expect(r.retries).toBe(1)
    expect(broker.accepted.size).toBe(200)
    const received = broker.batches.flatMap((b) => b.body.messages.map((m) => m.seq))
    // The failed batch's 20 messages were sent twice (once refused); every other message once.
    expect(received.length).toBe(220)
    const failed = broker.batches[2].body.messages.map((m) => m.seq)
    const resent = broker.batches.slice(3).find((b) => b.body.messages[0].seq === failed[0])
    expect(resent?.body.messages.map((m) => m.seq)).toEqual(failed)
    expect(await readBackoff(store)).toBeUndefined()
    expect((await store.stats(Date.now())).pending).toBe(0)
  })

  it('415 to a frames body (an older broker behind the same URL): the same messages again as JSON', async () => {
    const { broker, config, store } = await setup({ 'sync.batchSize': 30 }, 'sqlite')
    const refused: number[] = []
    broker.reply = (r) => {
      if (r.headers['content-type'] !== 'application/vnd.rmq.frames') return undefined
      refused.push(...r.body.messages.map((m) => m.seq))
      return {
        status: 415,
        body: { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', error: 'Unsupported Media Type' },
      }
    }
    await store.append(telemetry(200))
    const r = await syncOnce({ driver: store, config })
    expect(r.status).toBe('ok')
    expect(r.messages).toBe(200)
    expect(refused.length).toBeGreaterThan(0)
    expect(broker.accepted.size).toBe(200)
    // Each frames batch refused was accepted again as JSON; no batch was both.
    for (const seq of refused) expect(broker.accepted.has(`gw-test:${store.epoch}:${seq}`)).toBe(true)
    expect((await store.stats(Date.now())).pending).toBe(0)
    expect(await readBackoff(store)).toBeUndefined()
  })

  it('an older broker (415 to frames, no features in its acks): the first batch again as JSON, then JSON one at a time', async () => {
    const { broker, config, store } = await setup({ 'sync.batchSize': 50 }, 'sqlite')
    broker.features = undefined
    broker.reply = () => ({ status: 200, delayMs: 20 })
    await store.append(telemetry(200))
    const r = await syncOnce({ driver: store, config })
    expect(r).toMatchObject({ status: 'ok', messages: 200, batches: 4, retries: 0 })
    // Nothing was pipelined: no closing report.
    expect(broker.received.at(-1)!.body.messages.length).toBe(50)
    expect(broker.accepted.size).toBe(200)
    expect(broker.maxInProgress).toBe(1)
    const [refused, ...rest] = broker.batches
    expect(refused.headers['content-type']).toBe('application/vnd.rmq.frames')
    expect(rest.map((b) => b.body.messages[0].seq)).toEqual([1, 51, 101, 151])
    for (const b of rest) {
      expect(b.headers['content-type']).toBe('application/json')
      expect(b.body.backlog.unacked).toBeUndefined()
    }
    expect(await readBackoff(store)).toBeUndefined()
    expect((await readSyncStats(store)).failures).toBe(0)
  })
})

describe('drain', () => {
  it('retries through failures until everything is delivered', async () => {
    const { broker, config, store } = await setup({
      'sync.batchSize': 10,
      'sync.backoff.initial': '50ms',
      'sync.backoff.max': '200ms',
    })
    await store.append(telemetry(50))
    broker.reply = (_r, n) => (n % 3 === 0 ? { status: 503 } : undefined)
    const progress: number[] = []
    const r = await drain(
      { driver: store, config },
      { timeout: 20_000, onProgress: (p) => progress.push(p.messages) },
    )
    expect(r.pending).toBe(0)
    expect(r.retries).toBeGreaterThan(0)
    expect(broker.accepted.size).toBe(50)
    expect(progress.at(-1)).toBe(50)
    expect(await readBackoff(store)).toBeUndefined()
  })

  it('retries on its own schedule, not the long backoff earned by earlier cron runs', async () => {
    const { broker, config, store } = await setup({
      'sync.backoff.initial': '50ms',
      'sync.backoff.max': '1m',
    })
    for (let k = 0; k < 20; k++)
      await recordFailure(store, config.sync.backoff, Date.now(), 'earlier outage', { random: () => 1 })
    expect((await readBackoff(store))!.delayMs).toBe(60_000)
    await store.append(telemetry(10))
    broker.reply = (_r, n) => (n === 1 ? { status: 503 } : undefined)
    const t0 = Date.now()
    const r = await drain({ driver: store, config }, { timeout: 30_000 })
    expect(r).toMatchObject({ pending: 0, retries: 1 })
    expect(Date.now() - t0).toBeLessThan(5000)
  })

  it('fails with 75 and the count left when the timeout passes', async () => {
    const { broker, config, store } = await setup({
      'sync.backoff.initial': '50ms',
      'sync.backoff.max': '100ms',
    })
    await store.append(telemetry(7))
    broker.reply = () => ({ status: 503 })
    const t0 = Date.now()
    const err = await drain({ driver: store, config }, { timeout: 600 }).catch((e) => e)
    expect(Date.now() - t0).toBeLessThan(5000)
    expect(err).toBeInstanceOf(SyncFailedError)
    expect(err.message).toMatch(
      /drain timed out after 600ms with 7 message\(s\) .* still pending \(last error: HTTP 503/,
    )
    expect(err.details).toMatchObject({ problem: 'drain-timeout', timeoutMs: 600 })
    expect(adviceFor(err)).toMatch(/`rmq status --broker`.*run `rmq drain` again/)
    expect(err.details.result.pending).toBe(7)
  })

  it('works through a proxy that resets and stalls connections mid-body', async () => {
    const { broker, config, store } = await setup({
      'sync.batchSize': 20,
      'sync.timeout': '300ms',
      'sync.backoff.initial': '20ms',
      'sync.backoff.max': '50ms',
    })
    const proxy = await new FaultProxy({ host: '127.0.0.1', port: broker.port }).start()
    cleanups.push(() => proxy.stop())
    config.brokerUrl = proxy.url
    await store.append(telemetry(600))
    // Switch the link between healthy, resetting and stalling mid-body while the drain runs.
    const modes: FaultMode[] = [
      { kind: 'reset', afterBytes: 200 },
      { kind: 'delay', ms: 10 },
      { kind: 'stall', afterBytes: 300 },
      { kind: 'delay', ms: 10 },
    ]
    let i = 0
    proxy.setMode(modes[0])
    const timer = setInterval(() => proxy.setMode(modes[++i % modes.length]), 150)
    cleanups.push(() => clearInterval(timer))
    const r = await drain({ driver: store, config }, { timeout: 30_000 })
    expect(r.pending).toBe(0)
    expect(proxy.stats.resets).toBeGreaterThan(0)
    expect(proxy.stats.stalls).toBeGreaterThan(0)
    expect(r.retries).toBeGreaterThan(0)
    expect(broker.accepted.size).toBe(600)
  })
})

describe('backoffDelay', () => {
  const policy = { initial: 1000, max: 60_000, multiplier: 2 }
  it('waits exactly `initial` after the first failure and grows with full jitter up to max', () => {
    expect(backoffDelay(policy, 1, () => 0.999)).toBe(1000)
    expect(backoffDelay(policy, 1, () => 0)).toBe(1000)
    expect(backoffDelay(policy, 4, () => 1)).toBe(8000)
    expect(backoffDelay(policy, 4, () => 0.5)).toBe(4000)
    expect(backoffDelay(policy, 4, () => 0)).toBe(1000)
    expect(backoffDelay(policy, 30, () => 1)).toBe(60_000)
  })
})
