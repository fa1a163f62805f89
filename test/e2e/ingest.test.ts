import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeTempDir, runCli } from '../helpers/cli.js'
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

/** Concatenated zstd frames of zeros: tens of KB on the wire, `totalBytes` when decompressed. */
function zstdBomb(totalBytes: number): Buffer {
  const frameBytes = 64 << 20
  const frame = encodeBody(Buffer.alloc(frameBytes), 'zstd')
  return Buffer.concat(Array.from({ length: Math.ceil(totalBytes / frameBytes) }, () => frame))
}

describe('broker end to end: ingest over HTTP against `rmq broker start`', () => {
  let broker: BrokerProcess
  let tokenA: string
  let tokenB: string
  const now = Date.now()

  beforeAll(async () => {
    broker = await startBrokerProcess({ auth: 'token' })
    tokenA = await broker.createToken('gw-a')
    tokenB = await broker.createToken('gw-b')
  })
  afterAll(async () => {
    const code = await broker?.stop()
    await broker?.cleanup()
    expect(code).toBe(0)
  })

  const total = async () => (await request('GET', `${broker.url}/healthz`)).body.total as number

  it('stores a batch that is then readable; a resend adds nothing and reports duplicates', async () => {
    const batch = makeBatch('gw-a', [message(1, now - 30), message(2, now - 20), message(3, now - 10)], {
      clock: now,
    })
    const res = await postBatch(broker.url, batch, { token: tokenA, encoding: 'zstd' })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(res.body).toMatchObject({ accepted: 3, duplicates: 0, late: 0 })
    const again = await postBatch(broker.url, batch, { token: tokenA, encoding: 'gzip' })
    expect(again.body).toMatchObject({ accepted: 0, duplicates: 3 })
    const page = await getMessages(
      broker.url,
      { topic: 'plant/#', order: 'arrival' },
      await broker.adminToken(),
    )
    expect(page.body.messages.map((m: { seq: number }) => m.seq)).toEqual([1, 2, 3])
    expect(page.body.messages[0]).toMatchObject({
      id: 'gw-a:epoch-gw-a:1',
      node: 'gw-a',
      topic: 'plant/line1/temp',
      ts: now - 30,
      payload: JSON.stringify({ seq: 1, v: 21 }),
      enc: 'utf8',
    })
    expect(await total()).toBe(3)
  })

  it('accepts identity, gzip and zstd bodies', async () => {
    for (const [i, encoding] of (['identity', 'gzip', 'zstd'] as const).entries()) {
      const res = await postBatch(broker.url, makeBatch('gw-b', [message(10 + i, now - 5)], { clock: now }), {
        token: tokenB,
        encoding,
      })
      expect(res.status, encoding).toBe(200)
      expect(res.body.accepted).toBe(1)
    }
  })

  it('401 for a missing or wrong token, 403 for another node id; nothing stored', async () => {
    const before = await total()
    const batch = makeBatch('gw-a', [message(100, now)], { clock: now })
    expect((await postBatch(broker.url, batch)).status).toBe(401)
    expect((await postBatch(broker.url, batch, { token: 'rmq_not-a-token' })).status).toBe(401)
    const forged = await postBatch(broker.url, batch, { token: tokenB })
    expect(forged.status).toBe(403)
    expect(forged.body.error).toMatch(/gw-b/)
    expect(await total()).toBe(before)
  })

  it('413 for an oversize body', async () => {
    const before = await total()
    const huge = encodeBody(makeBatch('gw-a', [message(200, now, 't', 'x'.repeat(9 << 20))], { clock: now }))
    // The broker answers from Content-Length alone, before the body: send only its start, like a
    // careful client would, so the answer is not lost to EPIPE while the rest is being written.
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${broker.url}/v1/batches`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': String(huge.length),
          authorization: `Bearer ${tokenA}`,
        },
      })
      req.on('response', (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
        req.destroy()
      })
      req.on('error', (err) => reject(err))
      req.write(huge.subarray(0, 64 << 10))
    })
    expect(status).toBe(413)
    // A body without Content-Length (chunked) is cut off at the limit while it is read.
    const chunked = await new Promise<number>((resolve) => {
      const req = http.request(`${broker.url}/v1/batches`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenA}` },
      })
      req.on('response', (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
        req.destroy()
      })
      // A connection error before any answer fails the test at once (status -1), not by its timeout.
      req.on('error', () => resolve(-1))
      // Writing stops 512 KiB past the 8 MB limit and waits: once the broker has answered, bytes it
      // never read could make the close a reset that loses the answer (seen under a loaded full run).
      const stopAt = (8 << 20) + (512 << 10)
      const write = (i: number): void => {
        if (i >= stopAt) return
        if (req.write(huge.subarray(i, i + (256 << 10)))) setImmediate(() => write(i + (256 << 10)))
        else req.once('drain', () => write(i + (256 << 10)))
      }
      write(0)
    })
    expect(chunked).toBe(413)
    expect(await total()).toBe(before)
  })

  it('413 fast with bounded memory for a zstd bomb (KB on the wire, GB decompressed)', async () => {
    const bomb = zstdBomb(4 * 1024 ** 3)
    expect(bomb.length).toBeLessThan(256 << 10)
    const rssBefore = broker.rss()
    const started = Date.now()
    const res = await postBatch(broker.url, bomb, { token: tokenA, encoding: 'zstd', raw: true })
    const ms = Date.now() - started
    expect(res.status).toBe(413)
    expect(res.body.code).toBe('DECOMPRESSED_TOO_LARGE')
    expect(ms).toBeLessThan(5000)
    // The cap is 64 MiB: the broker never holds more than about that, whatever the frames claim.
    expect(broker.rss() - rssBefore).toBeLessThan(200 << 20)
    expect(broker.rss()).toBeLessThan(400 << 20)
    // And it still works.
    expect((await request('GET', `${broker.url}/healthz`)).status).toBe(200)
  })

  it('400 for malformed JSON, a non-integer seq and a NUL in a topic; nothing stored', async () => {
    const before = await total()
    const good = makeBatch('gw-a', [message(300, now)], { clock: now })
    const cases: Array<[string, Buffer]> = [
      ['malformed JSON', Buffer.from('{"node":"gw-a","messages":[')],
      ['non-integer seq', encodeBody({ ...good, messages: [{ ...message(300, now), seq: 300.5 }] })],
      [
        'NUL in topic',
        encodeBody({ ...good, messages: [message(301, now), { ...message(302, now), topic: 'a\u0000b' }] }),
      ],
    ]
    for (const [what, body] of cases) {
      const res = await postBatch(broker.url, body, { token: tokenA, raw: true })
      expect(res.status, what).toBe(400)
      expect(typeof res.body.error, what).toBe('string')
      const zres = await postBatch(broker.url, encodeBody(body, 'zstd'), {
        token: tokenA,
        encoding: 'zstd',
        raw: true,
      })
      expect(zres.status, `${what} (zstd)`).toBe(400)
    }
    expect(await total()).toBe(before)
  })

  it('415 for an unknown Content-Encoding', async () => {
    const res = await postBatch(broker.url, makeBatch('gw-a', [message(400, now)]), {
      token: tokenA,
      contentEncodingHeader: 'br',
    })
    expect(res.status).toBe(415)
  })

  it('rmq consume prints one line per message; --limit, --from, --order arrival and --json', async () => {
    const env = { RMQ_BROKER_URL: broker.url, RMQ_TOKEN: await broker.adminToken() }
    const human = await runCli(['consume', 'plant/#', '--order', 'arrival'], { env })
    expect(human.code, human.stderr).toBe(0)
    const lines = human.stdout.trim().split('\n')
    expect(lines.length).toBe(6)
    expect(lines[0]).toMatch(/^1 gw-a:1 \S+Z plant\/line1\/temp \{"seq":1,"v":21\}$/)
    const json = await runCli(
      ['consume', '#', '--order', 'arrival', '--from', '2', '--limit', '2', '--json'],
      { env },
    )
    expect(json.code, json.stderr).toBe(0)
    const msgs = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(msgs.map((m) => m.position)).toEqual([2, 3])
    expect(Object.keys(msgs[0]).sort()).toEqual(
      [
        'contentType',
        'enc',
        'epoch',
        'id',
        'late',
        'node',
        'payload',
        'position',
        'seq',
        'topic',
        'ts',
      ].sort(),
    )
    const none = await runCli(['consume', '#', '--from', 'now'], { env })
    expect(none.code).toBe(0)
    expect(none.stdout).toBe('')
    const bad = await runCli(['consume', 'a/#/b'], { env })
    expect(bad.code).toBe(2)
  })

  it('token list and revoke work on the data dir; a revoked token gets 401', async () => {
    const list = await runCli(['broker', 'token', 'list', '--data-dir', broker.dataDir, '--json'])
    expect(list.code).toBe(0)
    // Node tokens (role node, named by their node) and the test's admin credential.
    const tokens = JSON.parse(list.stdout).tokens.filter((t: { role: string }) => t.role === 'node')
    expect(tokens.map((t: { name: string; node: string }) => [t.name, t.node])).toEqual([
      ['gw-a', 'gw-a'],
      ['gw-b', 'gw-b'],
    ])
    expect(JSON.parse(list.stdout).tokens.map((t: { role: string }) => t.role)).toContain('admin')
    expect(tokens[0].lastUsedAt).toBeGreaterThan(0)
    expect(list.stdout).not.toContain(tokenA)
    const revoke = await runCli(['broker', 'token', 'revoke', 'gw-b', '--data-dir', broker.dataDir])
    expect(revoke.code).toBe(0)
    const res = await postBatch(broker.url, makeBatch('gw-b', [message(500, now)]), { token: tokenB })
    expect(res.status).toBe(401)
    const again = await runCli(['broker', 'token', 'revoke', 'gw-b', '--data-dir', broker.dataDir])
    expect(again.code).toBe(65)
  })

  it('GET /v1/nodes shows node records (contact, skew, backlog, counters)', async () => {
    await postBatch(
      broker.url,
      makeBatch('gw-a', [], {
        clock: Date.now() + 5000,
        backlog: { pending: 4, bytes: 99, oldestTs: now - 1000 },
      }),
      { token: tokenA },
    )
    const res = await request('GET', `${broker.url}/v1/nodes`, {
      headers: { authorization: `Bearer ${await broker.adminToken()}` },
    })
    const a = res.body.nodes.find((n: { node: string }) => n.node === 'gw-a')
    expect(a.backlog).toEqual({ pending: 4, bytes: 99, oldestTs: now - 1000 })
    expect(a.clockSkew).toBeGreaterThan(3000)
    expect(a.counters).toMatchObject({ received: 3, duplicates: 3 })
    expect(a.live).toBe(true)
  })
})

describe('broker start: refusals and shutdown', () => {
  it('refuses a non-loopback address without auth unless forced (exit 78)', async () => {
    const r = await runCli(['broker', 'start', '--host', '0.0.0.0', '--port', '0', '--auth', 'none'], {
      env: { RMQ_BROKER_DATA_DIR: '/tmp/rmq-never-created-' + process.pid },
    })
    expect(r.code).toBe(78)
    expect(r.stderr).toMatch(/without authentication/)
    expect(r.stderr).toMatch(/--insecure/)
  })

  it('a damaged broker.db (74) or a data dir it cannot create (78): a clear error, the file left as it was', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-damaged-')
    try {
      const garbage = Buffer.alloc(64 * 1024, 'not a database ')
      fs.writeFileSync(path.join(dir, 'broker.db'), garbage)
      const r = await runCli(['broker', 'start', '--port', '0', '--auth', 'none', '--data-dir', dir])
      expect(r.code).toBe(74)
      expect(r.stderr).toContain(
        `the broker store ${path.join(dir, 'broker.db')} is not a valid rmq database`,
      )
      expect(r.stderr).toContain('move the file away')
      expect(r.stderr).not.toMatch(/\n\s+at /)
      expect(fs.readFileSync(path.join(dir, 'broker.db')).equals(garbage)).toBe(true)
      // A data dir below a file cannot be created, whoever runs the test (root included).
      const under = path.join(dir, 'broker.db', 'data')
      const d = await runCli(['broker', 'start', '--port', '0', '--auth', 'none', '--data-dir', under])
      expect(d.code).toBe(78)
      expect(d.stderr).toContain(`cannot create the broker data directory ${under}`)
    } finally {
      cleanup()
    }
  })

  it('token list and revoke on a data dir without a store: 78, and nothing is created there', async () => {
    const { dir, cleanup } = makeTempDir('rmq-broker-nostore-')
    try {
      const typo = path.join(dir, 'mistyped')
      const list = await runCli(['broker', 'token', 'list', '--data-dir', typo])
      expect(list.code).toBe(78)
      expect(list.stderr).toContain(`no broker store in ${typo}`)
      const revoke = await runCli(['broker', 'token', 'revoke', 'gw-a', '--data-dir', typo, '--json'])
      expect(revoke.code).toBe(78)
      expect(JSON.parse(revoke.stdout).error.code).toBe('CONFIG')
      expect(fs.existsSync(typo)).toBe(false)
      // create makes the store (tokens may be made before the first start) and says where.
      const create = await runCli(['broker', 'token', 'create', 'gw-a', '--data-dir', typo])
      expect(create.code).toBe(0)
      expect(create.stderr).toContain(`(data dir ${typo})`)
      expect(fs.existsSync(path.join(typo, 'broker.db'))).toBe(true)
    } finally {
      cleanup()
    }
  })

  it('consume exits 69 with a clear message when the broker is unreachable', async () => {
    const r = await runCli(['consume', '#'], { env: { RMQ_BROKER_URL: 'http://127.0.0.1:9' } })
    expect(r.code).toBe(69)
    expect(r.stderr).toMatch(/cannot reach the broker at http:\/\/127\.0\.0\.1:9/)
    expect(r.stdout).toBe('')
  })

  it('SIGTERM drains an in-flight long-poll and exits 0', async () => {
    const broker = await startBrokerProcess({ auth: 'none' })
    try {
      const poll = getMessages(broker.url, { wait: 20_000 })
      await new Promise((r) => setTimeout(r, 200))
      const started = Date.now()
      const code = await broker.stop()
      expect(code).toBe(0)
      const res = await poll
      expect(res.status).toBe(200)
      expect(Date.now() - started).toBeLessThan(5000)
      expect(broker.logs()).toMatch(/draining/)
    } finally {
      await broker.cleanup()
    }
  })
})
