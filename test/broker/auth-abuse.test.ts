/**
 * Abuse of the auth path (docs/security.md "Limits on the auth path"): the
 * per-address limit on failed authentication, the sampled log of failures,
 * the caps on concurrent long-polls, and idle long-polls that do not read
 * the store. All through fastify's inject, with client addresses set per
 * request and the broker's JSON log captured from stderr.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import http from 'node:http'
import { createBrokerApp, startBroker } from '../../src/broker/app.js'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import type { BrokerStore } from '../../src/broker/store/types.js'
import { createNodeToken, createToken } from '../../src/broker/tokens.js'
import { addressKey } from '../../src/broker/plugins/auth-abuse.js'
import { makeBatch, message } from '../helpers/broker.js'
import { BrokerAppFixture, T0, brokerAppOptions } from '../helpers/broker-app.js'
import { makeTempDir } from '../helpers/cli.js'

const LIMITS = { bodyBytes: 8 << 20, decompressedBytes: 64 << 20, ratePerNode: 0 }

/** The broker's JSON log lines written to stderr while capturing. */
function captureLog() {
  const lines: Record<string, any>[] = []
  const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: any) => {
    for (const line of String(chunk).split('\n'))
      if (line.trim())
        try {
          lines.push(JSON.parse(line))
        } catch {
          lines.push({ msg: line })
        }
    return true
  })
  return { lines, restore: () => spy.mockRestore() }
}

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time')
    await new Promise((r) => setTimeout(r, 5))
  }
}

describe('failed authentication per address', () => {
  let b: BrokerAppFixture
  let log: ReturnType<typeof captureLog> | undefined
  afterEach(async () => {
    await b.close()
    log?.restore()
    log = undefined
  })

  // GET /v1/nodes/gw-1: a route the fixture's node token (gw-1) may read.
  const get = (remoteAddress: string, token: string | null, url = '/v1/nodes/gw-1') =>
    b.app.inject({
      method: 'GET',
      url,
      remoteAddress,
      headers: token === null ? {} : { authorization: `Bearer ${token}` },
    })

  it('answers 429 with Retry-After after the burst, before looking at the token; other addresses are unaffected', async () => {
    b = await new BrokerAppFixture().open({ limits: { ...LIMITS, authFailures: 5, authFailureRate: 1 } })
    for (let i = 0; i < 5; i++) {
      const res = await get('10.0.0.9', 'wrong-token')
      expect(res.statusCode, res.body).toBe(401)
    }
    // The bucket is empty: a wrong token, no token and even the valid token are refused unread.
    for (const tok of ['wrong-token', null, b.token]) {
      const res = await get('10.0.0.9', tok)
      expect(res.statusCode, res.body).toBe(429)
      expect(res.json().code).toBe('TOO_MANY_AUTH_FAILURES')
      expect(res.json().error).toMatch(/broker\.limits\.authFailures is 5/)
      expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    }
    // Another address with the valid token, and one with a wrong token, are judged on their own.
    expect((await get('10.0.0.10', b.token)).statusCode).toBe(200)
    expect((await get('10.0.0.11', 'wrong-token')).statusCode).toBe(401)
    // /v1/batches too: a blocked address cannot make the broker decompress anything.
    const post = await b.app.inject({
      method: 'POST',
      url: '/v1/batches',
      remoteAddress: '10.0.0.9',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${b.token}` },
      payload: JSON.stringify(makeBatch('gw-1', [message(1, T0)])),
    })
    expect(post.statusCode).toBe(429)
    // The bucket refills at authFailureRate per second (broker clock): after 1 s one more try.
    b.clock += 1000
    expect((await get('10.0.0.9', b.token)).statusCode).toBe(200)
    expect((await get('10.0.0.9', 'wrong-token')).statusCode).toBe(401)
    expect((await get('10.0.0.9', b.token)).statusCode).toBe(429)
  })

  it('successful requests spend nothing: a node far over the burst keeps working', async () => {
    b = await new BrokerAppFixture().open({ limits: { ...LIMITS, authFailures: 3, authFailureRate: 1 } })
    for (let i = 0; i < 50; i++) expect((await get('10.0.0.9', b.token)).statusCode).toBe(200)
  })

  it('authFailures 0 switches the limit off', async () => {
    b = await new BrokerAppFixture().open({ limits: { ...LIMITS, authFailures: 0 } })
    for (let i = 0; i < 60; i++) expect((await get('10.0.0.9', 'wrong-token')).statusCode).toBe(401)
    expect((await get('10.0.0.9', b.token)).statusCode).toBe(200)
  })

  it('logs failures as one summary line per address per interval, not one line per request', async () => {
    log = captureLog()
    b = await new BrokerAppFixture().open({
      logFormat: 'json',
      logLevel: 'info',
      authLogIntervalMs: 200,
      limits: { ...LIMITS, authFailures: 10, authFailureRate: 1 },
    })
    await b.app.ready()
    for (let i = 0; i < 300; i++) await get('10.0.0.9', i % 2 ? 'wrong-token' : null)
    for (let i = 0; i < 4; i++) await get('10.0.0.12', 'wrong-token')
    // Other 4xx answers are still logged one per request.
    await get('10.0.0.13', b.adminToken, '/v1/messages?limit=x')
    await until(() => log!.lines.some((l) => l.address === '10.0.0.12'))
    const summaries = log.lines.filter((l) => l.address !== undefined)
    const a = summaries.filter((l) => l.address === '10.0.0.9')
    expect(a).toHaveLength(1)
    expect(a[0]).toMatchObject({ failures: 10, limited: 290, codes: { UNAUTHORIZED: 10 } })
    expect(a[0].codes.TOO_MANY_AUTH_FAILURES).toBe(290)
    expect(a[0].msg).toMatch(/authentication failed 10 time\(s\), 290 request\(s\) refused 429/)
    expect(summaries.filter((l) => l.address === '10.0.0.12')).toMatchObject([{ failures: 4, limited: 0 }])
    // Not one line per 401 or 429: the only other line is the 400.
    const others = log.lines.filter((l) => l.address === undefined)
    expect(others.map((l) => l.code)).toEqual(['INVALID_QUERY'])
    expect(log.lines.length).toBeLessThan(10)
  })

  it('counts IPv6 clients per /64 and IPv4-mapped addresses as IPv4', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:db8:1:2:bbbb:cccc:dddd:eeee')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64')
    expect(addressKey('::1')).toBe('0:0:0:0::/64')
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7')
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7')
  })
})

describe('long-polls', () => {
  let b: BrokerAppFixture
  let closeServer: (() => Promise<void>) | undefined
  afterEach(async () => {
    await (closeServer ?? (() => b.close()))()
    closeServer = undefined
  })

  /** A consumer credential that may read every topic (long-polls are a consumer's, not a node's). */
  const reader = async (store: BrokerStore, name: string) =>
    (await createToken(store, { name, role: 'consumer', topics: ['#'] })).token

  const poll = (token: string, wait = 10_000, remoteAddress = '127.0.0.1') =>
    b.app.inject({
      method: 'GET',
      url: `/v1/messages?topic=%23&order=arrival&wait=${wait}`,
      remoteAddress,
      headers: { authorization: `Bearer ${token}` },
    })

  it('caps long-polls per credential and in total with 429 naming the cap; wait=0 reads are not capped', async () => {
    b = await new BrokerAppFixture().open({ limits: { ...LIMITS, longPollsPerCredential: 2, longPolls: 3 } })
    const mine = await reader(b.store, 'reader-1')
    const other = await reader(b.store, 'reader-2')
    await b.app.ready()
    const settle = () => new Promise((r) => setTimeout(r, 300))
    const open = [poll(mine), poll(mine)]
    await settle()
    const third = await poll(mine)
    expect(third.statusCode, third.body).toBe(429)
    expect(third.json().code).toBe('TOO_MANY_LONG_POLLS')
    expect(third.json().error).toMatch(/consumer reader-1 already has 2 long-poll\(s\) open/)
    expect(third.json().error).toMatch(/broker\.limits\.longPollsPerCredential is 2/)
    expect(third.headers['retry-after']).toBe('1')
    // A plain read (wait=0) is not a long-poll.
    expect((await poll(mine, 0)).statusCode).toBe(200)
    // Another credential gets the last slot of the total, then the total cap answers.
    open.push(poll(other))
    await settle()
    const overTotal = await poll(other)
    expect(overTotal.statusCode, overTotal.body).toBe(429)
    expect(overTotal.json().error).toMatch(/broker\.limits\.longPolls is 3/)
    // New data wakes all three; their slots are free again afterwards.
    expect((await b.post(makeBatch('gw-1', [message(1, T0)]))).statusCode).toBe(200)
    const woken = await Promise.all(open)
    for (const r of woken) {
      expect(r.statusCode).toBe(200)
      expect(r.json().messages).toHaveLength(1)
    }
    const again = await b.app.inject({
      method: 'GET',
      url: '/v1/messages?topic=%23&order=arrival&after=1&wait=50',
      headers: { authorization: `Bearer ${mine}` },
    })
    expect(again.statusCode).toBe(200)
  })

  it('a client that hangs up frees its long-poll slot at once (real socket)', async () => {
    const tmp = makeTempDir('rmq-long-poll-hangup-')
    const store = await openSqliteBrokerStore({ dataDir: tmp.dir })
    const token = await reader(store, 'reader-1')
    const running = await startBroker(
      brokerAppOptions(tmp.dir, {
        storeInstance: store,
        limits: { ...LIMITS, longPollsPerCredential: 1, longPolls: 0 },
      }),
    )
    closeServer = async () => {
      await running.close()
      tmp.cleanup()
    }
    const get = (wait: number) =>
      new Promise<{ status: number; req: http.ClientRequest }>((resolve, reject) => {
        const req = http.get(
          `${running.url}/v1/messages?wait=${wait}`,
          { headers: { authorization: `Bearer ${token}` } },
          (res) => {
            res.resume()
            resolve({ status: res.statusCode ?? 0, req })
          },
        )
        req.on('error', reject)
      })
    const hanging = http.get(`${running.url}/v1/messages?wait=30000`, {
      headers: { authorization: `Bearer ${token}` },
    })
    hanging.on('error', () => {})
    await new Promise((r) => setTimeout(r, 300))
    expect((await get(100)).status).toBe(429)
    const t0 = Date.now()
    hanging.destroy()
    let status = 0
    while (Date.now() - t0 < 5000 && (status = (await get(100)).status) === 429)
      await new Promise((r) => setTimeout(r, 20))
    expect(status).toBe(200)
    // Long before the hung-up long-poll's 30 s were over.
    expect(Date.now() - t0).toBeLessThan(5000)
  })

  it('idle long-polls do not read the store; new data wakes them at once', async () => {
    const N = 40
    // The fixture's app on a wrapped store that counts reads.
    b = new BrokerAppFixture()
    b.store = await openSqliteBrokerStore({ dataDir: b.tmp.dir })
    b.token = (await createNodeToken(b.store, 'gw-9')).token
    const consumer = await reader(b.store, 'reader-1')
    let reads = 0
    b.app = await createBrokerApp(
      b.options({
        storeInstance: countReads(b.store, () => reads++),
        now: () => b.clock,
        limits: { ...LIMITS, longPollsPerCredential: 0, longPolls: 0 },
      }),
    )
    const WAIT = 3000
    const t0 = Date.now()
    const polls = Array.from({ length: N }, () => poll(consumer, WAIT))
    await until(() => reads >= N)
    // Idle for a while: with a re-read every 250 ms this would be N * 4 more reads by now.
    await new Promise((r) => setTimeout(r, 1000))
    expect(reads).toBe(N)
    expect((await b.post(makeBatch('gw-9', [message(1, T0)]))).statusCode).toBe(200)
    const pages = await Promise.all(polls)
    expect(Date.now() - t0).toBeLessThan(WAIT)
    for (const p of pages) expect(p.json().messages).toHaveLength(1)
    // One read at the start and one on the wake-up, each.
    expect(reads).toBe(2 * N)
  })
})

/** `store` with `onRead` called on every read (the broker's only way to look for new messages). */
function countReads(store: BrokerStore, onRead: () => void): BrokerStore {
  return new Proxy(store, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target)
      if (prop === 'read')
        return (...args: Parameters<BrokerStore['read']>) => {
          onRead()
          return target.read(...args)
        }
      return typeof v === 'function' ? v.bind(target) : v
    },
  })
}
