/**
 * Hostile and broken input that test/e2e/ingest.test.ts, app.test.ts,
 * the codec conformance suite and test/e2e/publish.test.ts do not already
 * cover (docs/guarantees.md lists which test covers what). Every case gets a
 * clear error; none crashes a process or stores anything partial.
 */
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createProducer } from '../../src/core/producer.js'
import { MAX_TS } from '../../src/protocol/batch.js'
import {
  encodeBody,
  makeBatch,
  message,
  postBatch,
  request,
  startBrokerProcess,
  type BrokerProcess,
} from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'

/** zstd frame header declaring `contentSize` bytes, then one small raw block. */
function zstdClaiming(contentSize: bigint): Buffer {
  const fcs = Buffer.alloc(8)
  fcs.writeBigUInt64LE(contentSize)
  const v = 1 | (0 << 1) | (16 << 3)
  return Buffer.concat([
    Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xe0]),
    fcs,
    Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff]),
    Buffer.alloc(16, 0x7b),
  ])
}

/** Open a raw TCP connection, write `parts` with `gapMs` between them; resolve when the server closes it. */
function trickle(
  port: number,
  parts: string[],
  gapMs: number,
): Promise<{ closedAfterMs: number; reply: string }> {
  return new Promise((resolve) => {
    const started = Date.now()
    const sock = net.connect(port, '127.0.0.1')
    let reply = ''
    let i = 0
    const timer = setInterval(() => {
      if (i < parts.length && !sock.destroyed) sock.write(parts[i++])
    }, gapMs)
    sock.setEncoding('utf8')
    sock.on('data', (d: string) => (reply += d))
    sock.on('error', () => {})
    sock.on('close', () => {
      clearInterval(timer)
      resolve({ closedAfterMs: Date.now() - started, reply })
    })
  })
}

describe('hostile input at the broker', () => {
  let broker: BrokerProcess
  let token: string
  const now = Date.now()
  const total = async () => (await request('GET', `${broker.url}/healthz`)).body.total as number

  beforeAll(async () => {
    broker = await startBrokerProcess({ auth: 'token', env: { RMQ_BROKER_LIMITS_REQUEST_TIMEOUT: '2s' } })
    token = await broker.createToken('gw-h')
  })
  afterAll(async () => {
    const code = await broker?.stop()
    await broker?.cleanup()
    // After everything below the broker still shuts down cleanly.
    expect(code).toBe(0)
  })

  it('400 for over-long topics, negative, absurd and non-numeric timestamps and wrong types; nothing stored', async () => {
    const before = await total()
    const ok = message(1, now)
    const batch = (messages: unknown[], extra: Record<string, unknown> = {}) => ({
      ...makeBatch('gw-h', [ok], { clock: now }),
      messages,
      ...extra,
    })
    const cases: Array<[string, unknown]> = [
      ['topic over 1024 bytes', batch([ok, { ...message(2, now), topic: 'a/'.repeat(600) }])],
      ['topic of multi-byte characters over 1024 bytes', batch([{ ...ok, topic: 'é'.repeat(600) }])],
      ['negative ts', batch([ok, { ...message(2, now), ts: -1 }])],
      ['ts after year 9999', batch([{ ...ok, ts: MAX_TS + 1 }])],
      ['ts as a string', batch([{ ...ok, ts: String(now) }])],
      ['ts NaN-ish (null)', batch([{ ...ok, ts: null }])],
      ['absurd expiresAt', batch([{ ...ok, expiresAt: 1e300 }])],
      ['negative clock', batch([ok], { clock: -5 })],
      ['seq as a string', batch([{ ...ok, seq: '1' }])],
      ['seq 0', batch([{ ...ok, seq: 0 }])],
      ['seq beyond 2^53', batch([{ ...ok, seq: 2 ** 53 + 2 }])],
      ['payload as a number', batch([{ ...ok, payload: 42 }])],
      ['unknown enc', batch([{ ...ok, enc: 'hex' }])],
      ['bad base64', batch([{ ...ok, enc: 'base64', payload: '!!!!' }])],
      ['priority 10', batch([{ ...ok, priority: 10 }])],
      ['messages not an array', batch({ 0: ok } as unknown as unknown[])],
      ['message is null', batch([ok, null])],
      ['missing epoch', { ...batch([ok]), epoch: undefined }],
      ['node with a slash', batch([ok], { node: 'gw-h/x' })],
      ['wildcard in topic', batch([{ ...ok, topic: 'a/+/b' }])],
      ['body is an array', [batch([ok])]],
      ['body is a string', 'hello'],
      ['body is null', null],
    ]
    for (const [what, body] of cases) {
      const res = await postBatch(broker.url, Buffer.from(JSON.stringify(body) ?? 'null'), {
        token,
        raw: true,
      })
      expect(res.status, what).toBe(400)
      expect(res.body.error, what).toEqual(expect.any(String))
    }
    expect(await total()).toBe(before)
  })

  it('a zstd frame claiming 1 TiB of content is refused at once without allocating it', async () => {
    const rss = broker.rss()
    const started = Date.now()
    const res = await postBatch(broker.url, zstdClaiming(1n << 40n), { token, encoding: 'zstd', raw: true })
    expect([400, 413]).toContain(res.status)
    expect(Date.now() - started).toBeLessThan(5000)
    expect(broker.rss() - rss).toBeLessThan(100 << 20)
    // Garbage that is not zstd at all, and a truncated frame.
    for (const body of [Buffer.from('not zstd at all'), encodeBody({ a: 1 }, 'zstd').subarray(0, 6)]) {
      const r = await postBatch(broker.url, body, { token, encoding: 'zstd', raw: true })
      expect(r.status).toBe(400)
    }
  })

  it('a replayed batch, and one overlapping it, add only what is new', async () => {
    const body = makeBatch('gw-h', [message(10, now), message(11, now)], { clock: now, epoch: 'e-replay' })
    expect((await postBatch(broker.url, body, { token })).body).toMatchObject({ accepted: 2, duplicates: 0 })
    expect((await postBatch(broker.url, body, { token })).body).toMatchObject({ accepted: 0, duplicates: 2 })
    const overlap = makeBatch('gw-h', [message(11, now), message(12, now)], { clock: now, epoch: 'e-replay' })
    expect((await postBatch(broker.url, overlap, { token, encoding: 'gzip' })).body).toMatchObject({
      accepted: 1,
      duplicates: 1,
    })
  })

  it('slow-loris: headers or a body trickling in are cut off after broker.limits.requestTimeout', async () => {
    const port = broker.port
    // Headers one line every 500 ms, never finished.
    const headers = Array.from({ length: 100 }, (_, i) =>
      i === 0 ? 'POST /v1/batches HTTP/1.1\r\nHost: x\r\n' : `X-Pad-${i}: y\r\n`,
    )
    // A complete head announcing 1 MB, then the body a few bytes at a time.
    const head =
      'POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
      `Authorization: Bearer ${token}\r\nContent-Length: 1000000\r\n\r\n`
    const body = [head, ...Array.from({ length: 200 }, () => '{"node":')]
    const [h, b] = await Promise.all([trickle(port, headers, 500), trickle(port, body, 300)])
    // requestTimeout is 2 s here; the check runs every 500 ms.
    expect(h.closedAfterMs).toBeLessThan(8000)
    expect(b.closedAfterMs).toBeLessThan(8000)
    expect(b.reply).toMatch(/^HTTP\/1\.1 408/)
    // An idle connection that never sends anything is closed too.
    const idle = await trickle(port, [], 1000)
    expect(idle.closedAfterMs).toBeLessThan(8000)
    expect((await request('GET', `${broker.url}/healthz`)).status).toBe(200)
  }, 30_000)

  it('raw garbage on the socket gets 400 and the broker keeps serving', async () => {
    const r = await trickle(broker.port, ['\u0000\u0001GARBAGE\r\n\r\n'], 10)
    expect(r.reply).toMatch(/^HTTP\/1\.1 400/)
    expect((await request('GET', `${broker.url}/healthz`)).status).toBe(200)
  })
})

describe('hostile and broken input at the CLI', () => {
  let dir: string
  let cleanup: () => void
  beforeAll(() => ({ dir, cleanup } = makeTempDir('rmq-hostile-cli-')))
  afterAll(() => cleanup())
  const env = { RMQ_NODE_ID: 'gw-cli' }
  const publish = (args: string[], input?: string | Buffer, extra: Record<string, string> = {}) =>
    runCli(['publish', ...args], { cwd: dir, env: { ...env, ...extra }, input })
  const pending = async () => {
    const r = await runCli(['status', '--json'], { cwd: dir, env })
    expect(r.code, r.stderr).toBe(0)
    const s = parseJson(r.stdout)
    return s.pending?.messages ?? s.outbox?.pending?.messages ?? s.pending
  }

  it('an unreadable file (a directory, a missing path) is a clear 65, nothing stored', async () => {
    fs.mkdirSync(path.join(dir, 'adir'), { recursive: true })
    for (const f of ['adir', 'missing.ndjson']) {
      for (const lines of [[], ['--lines']]) {
        const r = await publish(['t/x', '-f', f, ...lines])
        expect(r.code, `${f} ${lines}: ${r.stderr}`).toBe(65)
        expect(r.stderr).toMatch(/cannot read/)
        expect(r.stderr).not.toMatch(/\n\s+at /)
      }
    }
  })

  it('binary payloads (NUL, invalid UTF-8) are stored byte for byte', async () => {
    const bytes = Buffer.from([0, 255, 254, 0x80, 10, 13, 0, 0xc3])
    fs.writeFileSync(path.join(dir, 'bin'), bytes)
    const r = await publish(['t/bin', '-f', 'bin', '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(parseJson(r.stdout).id).toMatch(/^gw-cli:/)
  })

  it('an invalid config file is a clear 78 naming the file, for publish and sync', async () => {
    const sub = path.join(dir, 'badcfg')
    fs.mkdirSync(sub)
    fs.writeFileSync(path.join(sub, '.rmqrc.json'), '{ "sync": { "batchSize": "many" ')
    for (const args of [['publish', 't/x', 'hi'], ['sync']]) {
      const r = await runCli(args, { cwd: sub, env })
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(78)
      expect(r.stderr).toMatch(/\.rmqrc\.json/)
      expect(r.stderr).not.toMatch(/\n\s+at /)
    }
    fs.writeFileSync(path.join(sub, '.rmqrc.json'), '{ "sync": { "batchSize": "many" } }')
    const r = await runCli(['publish', 't/x', 'hi'], { cwd: sub, env })
    expect(r.code).toBe(78)
    expect(r.stderr).toMatch(/sync\.batchSize/)
  })

  it('timestamps and TTLs the broker would refuse are refused at publish (65), not stored as poison', async () => {
    const before = await pending()
    for (const args of [
      ['--timestamp', String(MAX_TS + 1)],
      ['--timestamp', '99999-01-01T00:00:00Z'],
      ['--ttl', '1000000w'],
    ]) {
      const r = await publish(['t/x', 'hi', ...args])
      expect(r.code, `${args}: ${r.stderr}`).toBe(65)
      const lines = await publish(['t/x', '--lines', ...args], 'a\nb\n')
      expect(lines.code, `${args} --lines: ${lines.stderr}`).toBe(65)
    }
    expect(await pending()).toBe(before)
  })

  it('the Producer API refuses headers the broker would refuse (65)', async () => {
    const producer = await createProducer({ cwd: dir, nodeId: 'gw-cli', env: {} })
    try {
      const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`h${i}`, 'v']))
      await expect(producer.send('t/x', 'hi', { headers: many })).rejects.toMatchObject({ exitCode: 65 })
      await expect(producer.send('t/x', 'hi', { headers: { big: 'x'.repeat(5000) } })).rejects.toMatchObject({
        exitCode: 65,
      })
    } finally {
      await producer.close()
    }
  })
})
