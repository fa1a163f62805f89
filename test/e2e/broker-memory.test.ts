/**
 * Bounded memory at a real `rmq broker start` on 127.0.0.1 (docs/guarantees.md
 * "Bounds"): many large batches at once from one node keep the broker's peak
 * RSS (VmHWM) bounded while another node's small batch goes through; a page
 * over messages far larger than the page cap is served, one at a time, and
 * `rmq consume` reads across such pages; an oversized `stats` is refused.
 * The /metrics timing target and the small batch's latency under this load are in
 * bench/suites/metrics.js.
 */
import fs from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import {
  encodeBody,
  getMessages,
  makeBatch,
  message,
  postBatch,
  request,
  startBrokerProcess,
  type BrokerProcess,
} from '../helpers/broker.js'
import { cleanEnv, runCli } from '../helpers/cli.js'

const MB = 1_000_000

/** Peak resident set size of a process (VmHWM), bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no VmHWM for process ${pid}`)
  return Number(m[1]) * 1024
}

/** A payload of `n` characters that compresses well but not to nothing. */
function payloadOf(n: number, salt: number): string {
  const unit = Array.from({ length: 64 }, (_, i) => ((i * 7919 + salt) % 1000).toString(36)).join('-') + '\n'
  return unit.repeat(Math.ceil(n / unit.length)).slice(0, n)
}

describe('broker memory bounds (real processes)', () => {
  let broker: BrokerProcess | undefined
  afterEach(async () => {
    await broker?.cleanup()
    broker = undefined
  })

  it('16 concurrent 60 MB batches from one node: peak RSS under 600 MiB (target 400 MB: bench suite metrics), another node still served', async () => {
    broker = await startBrokerProcess()
    const big = await broker.createToken('gw-big')
    const small = await broker.createToken('gw-small')
    const payload = payloadOf(MB, 1)
    // 60 messages of 1 MB: each batch decodes to 60 MB (messages stay under broker.limits.messageBytes).
    const bodies = Array.from({ length: 16 }, (_, b) =>
      encodeBody(
        makeBatch(
          'gw-big',
          Array.from({ length: 60 }, (_, i) => message(b * 60 + i + 1, Date.now(), 'plant/big', payload)),
        ),
        'zstd',
      ),
    )
    expect(bodies[0].length).toBeLessThan(2 * MB)
    const before = peakRss(broker.child.pid!)
    const t0 = Date.now()
    const answers = Promise.all(
      bodies.map((body) => postBatch(broker!.url, body, { token: big, encoding: 'zstd', raw: true })),
    )
    await new Promise((r) => setTimeout(r, 100))
    const s0 = Date.now()
    const other = await postBatch(
      broker.url,
      makeBatch('gw-small', [message(1, Date.now(), 'plant/small')]),
      {
        token: small,
        encoding: 'zstd',
      },
    )
    const smallMs = Date.now() - s0
    const statuses = (await answers).map((r) => r.status)
    const peak = peakRss(broker.child.pid!)
    console.log(
      `16 x 60 MB: statuses ${JSON.stringify(statuses)} in ${Date.now() - t0} ms; ` +
        `broker VmHWM ${(before / 2 ** 20).toFixed(0)} -> ${(peak / 2 ** 20).toFixed(0)} MiB; small batch ${smallMs} ms`,
    )
    expect(other.status, JSON.stringify(other.body)).toBe(200)
    expect(other.body).toMatchObject({ accepted: 1 })
    // The small batch's 1 s target is timing under load: logged above, not asserted (bench suite
    // metrics shows it, with the 400 MB target). Large JSON bodies are parsed on the store's writer
    // thread, which frees each one at once (json-ingest.ts): measured 308 MiB here (420-573 before,
    // 1.73 GiB before the in-flight budget). 600 MiB leaves room for a loaded box and catches a return
    // to holding several decoded bodies at once.
    expect(peak).toBeLessThan(600 * 2 ** 20)
    // Each big one is stored, or refused for now (429/503, which the edge retries): never a 500.
    for (const s of statuses) expect([200, 429, 503]).toContain(s)
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThan(0)
  }, 180_000)

  it('a page over 11 x 55 MB messages is served within the byte cap, and rmq consume reads across them', async () => {
    broker = await startBrokerProcess({ env: { RMQ_BROKER_LIMITS_MESSAGE_BYTES: '60MB' } })
    const token = await broker.createToken('gw-1')
    for (let i = 1; i <= 11; i++) {
      const res = await postBatch(
        broker.url,
        makeBatch('gw-1', [message(i, Date.now(), 'plant/huge', payloadOf(55 * MB, i))]),
        { token, encoding: 'zstd' },
      )
      expect(res.status, JSON.stringify(res.body)).toBe(200)
    }
    const reader = await broker.adminToken()
    const page = await getMessages(broker.url, { topic: '#', order: 'arrival', limit: 100 }, reader)
    expect(page.status, String(page.body).slice(0, 300)).toBe(200)
    // 16 MiB page cap: one 55 MB message per page (always at least one), more to come.
    expect(page.body.messages.map((m: any) => [m.seq, m.payload.length])).toEqual([[1, 55 * MB]])
    expect(page.body.more).toBe(true)
    expect(page.body.next).toBe(page.body.messages[0].position)
    const last = await getMessages(
      broker.url,
      { topic: '#', order: 'arrival', limit: 100, after: page.body.messages[0].position + 9 },
      reader,
    )
    expect(last.body.messages.map((m: any) => m.seq)).toEqual([11])
    expect(last.body.more).toBe(false)
    const consumed = await runCli(['consume', '#', '--order', 'arrival', '--limit', '3', '--json'], {
      env: cleanEnv({ RMQ_BROKER_URL: broker.url, RMQ_TOKEN: reader }),
      timeoutMs: 120_000,
    })
    expect(consumed.code, consumed.stderr).toBe(0)
    const lines = consumed.stdout.trim().split('\n')
    expect(lines.map((l) => JSON.parse(l).seq)).toEqual([1, 2, 3])
    console.log(`11 x 55 MB: broker VmHWM ${(peakRss(broker.child.pid!) / 2 ** 20).toFixed(0)} MiB`)
  }, 300_000)

  it('an oversized stats is refused (413/400) and /metrics still answers', async () => {
    broker = await startBrokerProcess()
    const token = await broker.createToken('gw-1')
    const wide = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`counter${i}`, 'v'.repeat(500)]))
    const res = await postBatch(
      broker.url,
      makeBatch('gw-1', [message(1, Date.now())], { stats: { sync: wide } }),
      {
        token,
      },
    )
    expect(res.status).toBe(413)
    expect(res.body.code).toBe('STATS_TOO_LARGE')
    const huge = { storage: { ['x'.repeat(20 * MB)]: 1 } }
    const res2 = await postBatch(
      broker.url,
      makeBatch('gw-1', [message(1, Date.now())], { stats: huge as any }),
      {
        token,
        encoding: 'zstd',
      },
    )
    expect(res2.status).toBe(400)
    const metrics = await request('GET', `${broker.url}/metrics`, {
      headers: { authorization: `Bearer ${await broker.adminToken()}` },
    })
    expect(metrics.status).toBe(200)
    expect(String(metrics.body)).not.toMatch(/vvvvvvvvvv/)
  }, 60_000)
})
