/**
 * End to end with real processes: `rmq publish`, `rmq sync`, `rmq drain` and
 * `rmq consume` from bin/run.js against a real broker process on loopback,
 * with SIGKILL at random points and a fault proxy on the link.
 */
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli, spawnCli } from '../helpers/cli.js'
import { FaultProxy } from '../helpers/fault-proxy.js'

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

async function broker(opts: Parameters<typeof startBrokerProcess>[0] = {}): Promise<BrokerProcess> {
  const b = await startBrokerProcess({ auth: 'token', ...opts })
  cleanups.push(() => b.cleanup())
  return b
}

/** An edge node: its own directory (outbox) and environment. */
function edge(env: Record<string, string>) {
  const tmp = makeTempDir('rmq-sync-e2e-')
  cleanups.push(tmp.cleanup)
  const base = {
    RMQ_NODE_ID: 'gw-e2e',
    RMQ_SYNC_TIMEOUT: '3s',
    RMQ_SYNC_BACKOFF_INITIAL: '1m',
    ...env,
  }
  return {
    dir: tmp.dir,
    env: base,
    run: (args: string[], extra: Record<string, string> = {}, input?: string) =>
      runCli(args, { cwd: tmp.dir, env: { ...base, ...extra }, input, timeoutMs: 60_000 }),
    spawn: (args: string[], extra: Record<string, string> = {}) =>
      spawnCli(args, { cwd: tmp.dir, env: { ...base, ...extra } }),
    async publish(n: number, start = 0) {
      const lines = Array.from({ length: n }, (_, i) =>
        JSON.stringify({ i: start + i, temp: 20 + ((start + i) % 100) / 10, site: 'plant-7', unit: 'C' }),
      ).join('\n')
      const r = await runCli(['publish', 'plant/line1/temp', '--lines', '-f', '-'], {
        cwd: tmp.dir,
        env: base,
        input: lines + '\n',
      })
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toMatch(new RegExp(`stored ${n} messages`))
    },
  }
}

interface Consumed {
  seq: number
  ts: number
  position: number
  payload: string
}

async function consumeAll(
  url: string,
  token: string,
  order: 'event' | 'arrival' = 'event',
): Promise<Consumed[]> {
  const r = await runCli(['consume', '#', '--json', '--order', order], {
    env: { RMQ_BROKER_URL: url, ...(token ? { RMQ_TOKEN: token } : {}) },
    timeoutMs: 60_000,
  })
  expect(r.code, r.stderr).toBe(0)
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => parseJson<Consumed>(l))
}

/** Every published i exactly once, in event order (ts, then seq). */
function expectAllOnceInOrder(got: Consumed[], n: number): void {
  const is = got.map((m) => (JSON.parse(m.payload) as { i: number }).i)
  expect(new Set(is).size).toBe(is.length)
  expect(is.length).toBe(n)
  for (let k = 1; k < got.length; k++) {
    const a = got[k - 1]
    const b = got[k]
    expect(a.ts < b.ts || (a.ts === b.ts && a.seq < b.seq)).toBe(true)
  }
  expect([...is].sort((x, y) => x - y)).toEqual(Array.from({ length: n }, (_, k) => k))
}

describe('sync end to end', () => {
  it('10,000 messages published while the broker is down: 75 and backoff, then delivered once and in order', async () => {
    const port = await freePort()
    const url = `http://127.0.0.1:${port}`
    const node = edge({ RMQ_BROKER_URL: url })
    await node.publish(10_000)

    const down = await node.run(['sync'])
    expect(down.code, down.stderr).toBe(75)
    expect(down.stderr).toMatch(/connection refused .*next attempt in 1m/)
    const again = await node.run(['sync'])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toMatch(/backing off after 1 failed attempt\(s\).*next attempt due at/)

    const b = await broker({ port })
    const token = await b.createToken('gw-e2e')
    // The backoff is still in force for cron runs; drain forwards everything now.
    const stillBackingOff = await node.run(['sync', '--json'], { RMQ_TOKEN: token })
    expect(parseJson(stillBackingOff.stdout).status).toBe('backoff')
    const drained = await node.run(['drain', '--timeout', '30s', '--json'], { RMQ_TOKEN: token })
    expect(drained.code, drained.stderr).toBe(0)
    const res = parseJson(drained.stdout)
    expect(res).toMatchObject({ messages: 10_000, pending: 0, codec: 'zstd' })
    expect(res.bytesWire).toBeLessThan(res.bytesRaw / 5)
    // Success cleared the backoff: a cron run now goes straight through (heartbeat).
    const after = await node.run(['sync', '--json'], { RMQ_TOKEN: token })
    expect(parseJson(after.stdout)).toMatchObject({ status: 'ok', heartbeat: true })

    expectAllOnceInOrder(await consumeAll(b.url, await b.adminToken()), 10_000)
  })

  it('resumes after SIGKILL at random points: nothing lost, nothing delivered twice', async () => {
    const b = await broker()
    const token = await b.createToken('gw-e2e')
    const node = edge({ RMQ_BROKER_URL: b.url, RMQ_TOKEN: token, RMQ_SYNC_BATCH_SIZE: '100' })
    const total = 20_000
    await node.publish(total)
    const kills = Number(process.env.RMQ_FAULTS === 'full' ? 40 : 8)
    let killed = 0
    for (let k = 0; k < kills; k++) {
      const child = node.spawn(['sync'])
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
      await new Promise((r) => setTimeout(r, 150 + Math.floor(Math.random() * 300)))
      if (child.exitCode === null) {
        child.kill('SIGKILL')
        killed++
      }
      await exited
    }
    expect(killed).toBeGreaterThan(kills / 2)
    const r = await node.run(['drain', '--timeout', '60s', '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(parseJson(r.stdout).pending).toBe(0)
    expectAllOnceInOrder(await consumeAll(b.url, await b.adminToken()), total)
  })

  it('survives the broker being killed mid-request and a link that resets and stalls mid-body', async () => {
    const b = await broker()
    const token = await b.createToken('gw-e2e')
    const proxy = await new FaultProxy({ host: '127.0.0.1', port: b.port }).start()
    cleanups.push(() => proxy.stop())
    const node = edge({
      RMQ_BROKER_URL: proxy.url,
      RMQ_TOKEN: token,
      RMQ_SYNC_BATCH_SIZE: '300',
      RMQ_SYNC_TIMEOUT: '1s',
      RMQ_SYNC_BACKOFF_INITIAL: '50ms',
      RMQ_SYNC_BACKOFF_MAX: '300ms',
    })
    const total = 6000
    await node.publish(total)

    // 1. SIGKILL the broker while a sync is sending.
    const child = node.spawn(['sync'])
    const code = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
    await new Promise((r) => setTimeout(r, 300))
    await b.kill()
    expect([0, 75]).toContain(await code)
    const restarted = await b.restart()
    cleanups.push(() => restarted.cleanup())

    // 2. Drain through a link that resets and stalls connections mid-body. However far step 1
    // got (a fast sync may have sent everything), the drain has a backlog to push through the faults.
    const extra = 1500
    await node.publish(extra, total)
    // Each fault stays on until the drain has met it (no message gets through meanwhile), then a
    // healthy spell lets it through.
    const until = async (met: () => boolean) => {
      for (let i = 0; i < 1000 && !met(); i++) await new Promise((r) => setTimeout(r, 10))
    }
    proxy.setMode({ kind: 'reset', afterBytes: 300 })
    const drained = node.run(['drain', '--timeout', '60s', '--json'])
    await until(() => proxy.stats.resets > 0)
    proxy.setMode({ kind: 'stall', afterBytes: 500 })
    await until(() => proxy.stats.stalls > 0)
    proxy.setMode({ kind: 'blackhole' })
    await new Promise((r) => setTimeout(r, 150))
    proxy.setMode({ kind: 'delay', ms: 5 })
    await new Promise((r) => setTimeout(r, 300))
    proxy.setMode({ kind: 'pass' })
    const r = await drained
    expect(r.code, r.stderr).toBe(0)
    expect(parseJson(r.stdout).pending).toBe(0)
    expect(proxy.stats.resets).toBeGreaterThan(0)
    expect(proxy.stats.stalls).toBeGreaterThan(0)
    expectAllOnceInOrder(await consumeAll(restarted.url, await restarted.adminToken()), total + extra)
  })

  it('under a budget sends the newest first; later runs send the rest; consumers still read in event order', async () => {
    const b = await broker()
    const token = await b.createToken('gw-e2e')
    const node = edge({ RMQ_BROKER_URL: b.url, RMQ_TOKEN: token, RMQ_SYNC_BATCH_SIZE: '50' })
    await node.publish(1000)
    const first = await node.run(['sync', '--budget', '2KB', '--json'])
    expect(first.code, first.stderr).toBe(0)
    const r1 = parseJson(first.stdout)
    expect(r1).toMatchObject({ order: 'newest', stoppedBy: 'budget' })
    expect(r1.bytesWire).toBeLessThanOrEqual(2048)
    expect(r1.messages).toBeGreaterThan(0)
    expect(r1.pending).toBe(1000 - r1.messages)
    const arrived = await consumeAll(b.url, await b.adminToken(), 'arrival')
    const firstSent = arrived.map((m) => (JSON.parse(m.payload) as { i: number }).i)
    expect(firstSent[0]).toBe(999)
    expect(Math.min(...firstSent)).toBe(1000 - r1.messages)
    // Held back by the node's backlog: nothing in the event stream yet, and the last line says why.
    const held = (await consumeAll(b.url, await b.adminToken(), 'event')) as unknown as Record<
      string,
      unknown
    >[]
    expect(held).toHaveLength(1)
    expect(held[0]).toMatchObject({ type: 'held', held: r1.messages, capped: false })
    expect(held[0].nodes).toHaveLength(1)

    let runs = 1
    for (;;) {
      const r = await node.run(['sync', '--budget', '4KB', '--json'])
      expect(r.code, r.stderr).toBe(0)
      runs++
      if (parseJson(r.stdout).pending === 0) break
    }
    expect(runs).toBeGreaterThan(2)
    expectAllOnceInOrder(await consumeAll(b.url, await b.adminToken()), 1000)
  })

  it('two overlapping sync runs: one sends, the other exits 0 saying another sync is running', async () => {
    const b = await broker()
    const token = await b.createToken('gw-e2e')
    const node = edge({ RMQ_BROKER_URL: b.url, RMQ_TOKEN: token, RMQ_SYNC_BATCH_SIZE: '20' })
    await node.publish(2000)
    const [x, y] = await Promise.all([node.run(['sync', '--json']), node.run(['sync', '--json'])])
    expect(x.code, x.stderr).toBe(0)
    expect(y.code, y.stderr).toBe(0)
    const results = [parseJson(x.stdout), parseJson(y.stdout)]
    const sent = results.reduce((s, r) => s + r.messages, 0)
    expect(sent).toBe(2000)
    if (results.some((r) => r.status === 'locked'))
      expect(results.find((r) => r.status === 'locked').message).toMatch(/another sync is running/)
    const nodes = await runCli(['consume', '#', '--json', '--order', 'arrival'], {
      env: { RMQ_BROKER_URL: b.url, RMQ_TOKEN: await b.adminToken() },
    })
    expect(nodes.stdout.split('\n').filter(Boolean)).toHaveLength(2000)
  })

  it('--watch forwards new messages every sync.interval and stops cleanly on SIGTERM', async () => {
    const b = await broker()
    const token = await b.createToken('gw-e2e')
    const node = edge({ RMQ_BROKER_URL: b.url, RMQ_TOKEN: token, RMQ_SYNC_INTERVAL: '200ms' })
    await node.publish(100)
    const child = node.spawn(['sync', '--watch', '--json'])
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
    const waitFor = async (n: number) => {
      for (let k = 0; k < 200; k++) {
        const got = await consumeAll(b.url, await b.adminToken(), 'arrival')
        if (got.length >= n) return got
        await new Promise((r) => setTimeout(r, 100))
      }
      throw new Error(`watch did not deliver ${n} messages:\n${stderr}`)
    }
    await waitFor(100)
    await node.publish(50, 100)
    expect(await waitFor(150)).toHaveLength(150)
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    const summary = parseJson(stdout)
    expect(summary.messages).toBe(150)
    expect(summary.runs).toBeGreaterThan(1)
    expect(stderr).toMatch(/sent 100 message/)
  })

  it('drain interrupted by SIGINT: exit 75 saying to run it again; the next drain sends the rest, once each', async () => {
    const b = await broker()
    const token = await b.createToken('gw-e2e')
    const node = edge({ RMQ_BROKER_URL: b.url, RMQ_TOKEN: token, RMQ_SYNC_BATCH_SIZE: '500' })
    await node.publish(20_000)
    // A rate limit keeps the drain going for about 20 s (about 84 KB compressed at 4 KB/s), so the
    // signal finds it mid-way even on a loaded machine (at 40 KB/s it was once done before the signal).
    const child = node.spawn(['drain'], { RMQ_SYNC_RATE_LIMIT: '4KB' })
    let stderr = ''
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
    for (let k = 0; k < 100 && (await consumeAll(b.url, await b.adminToken(), 'arrival')).length === 0; k++)
      await new Promise((r) => setTimeout(r, 100))
    child.kill('SIGINT')
    expect(await exited).toBe(75)
    expect(stderr).toMatch(/drain was interrupted with \d+ message\(s\) .* still pending; \d+ sent/)
    expect(stderr).toContain('run `rmq drain` again to send the rest')
    expect(stderr).not.toMatch(/\n\s+at /)
    const again = await node.run(['drain'])
    expect(again.code, again.stderr).toBe(0)
    expectAllOnceInOrder(await consumeAll(b.url, await b.adminToken()), 20_000)
  })

  it('explains a refused token with exit 78', async () => {
    const b = await broker()
    const node = edge({ RMQ_BROKER_URL: b.url, RMQ_TOKEN: 'wrong' })
    await node.publish(3)
    const r = await node.run(['sync'])
    expect(r.code).toBe(78)
    expect(r.stderr).toMatch(/refused this node's token.*HTTP 401/)
    expect(r.stderr).toMatch(/rmq broker token create gw-e2e/)
  })
})
