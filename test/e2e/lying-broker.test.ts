/**
 * Trust nothing on the wire, edge side: `rmq sync` (the real binary) against
 * a real HTTP server on 127.0.0.1 that answers each batch with a lie or with
 * garbage. In every case nothing is marked sent, sync exits 75 (try again),
 * the reason names what was wrong, and a later sync to a real broker
 * delivers every message exactly once.
 */
import http from 'node:http'
import type net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'

type Handler = (body: { batch: string; messages: unknown[] }, res: http.ServerResponse) => void

/** What a lying broker answers to a batch, and the words the edge must find wrong. */
const LIES: Array<[string, Handler, RegExp]> = [
  ['200 {"accepted":0}', (_b, res) => json(res, 200, { accepted: 0 }), /without an acknowledgement/],
  [
    '200 with an HTML page',
    (_b, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end('<html><body>Welcome to nginx!</body></html>')
    },
    /content type "text\/html"/,
  ],
  ['204 with no body', (_b, res) => (res.writeHead(204), res.end()), /status 204, expected 200/],
  [
    '200 {"accepted":999999,"duplicates":-5}',
    (b, res) => json(res, 200, { ...ackFor(b), accepted: 999999, duplicates: -5 }),
    /duplicates is -5/,
  ],
  [
    '200 acknowledging another batch id',
    (b, res) => json(res, 200, { ...ackFor(b), batch: 'b-someone-else' }),
    /acknowledges batch "b-someone-else"/,
  ],
  [
    '200 counting fewer messages than were sent',
    (b, res) => json(res, 200, { ...ackFor(b), accepted: 1, count: 1 }),
    /counts 1 messages, 3 were sent/,
  ],
  ['200 with JSON that is not an object', (_b, res) => json(res, 200, [1, 2, 3]), /not a JSON object/],
  [
    '301 to elsewhere',
    (_b, res) => (res.writeHead(301, { location: 'http://127.0.0.1:1/v1/batches' }), res.end()),
    /broker answered 301 \(a redirect to http:\/\/127.0.0.1:1\/v1\/batches\).*set brokerUrl/,
  ],
  [
    '307 to elsewhere',
    (_b, res) => (res.writeHead(307, { location: 'http://127.0.0.1:1/v1/batches' }), res.end()),
    /broker answered 307 \(a redirect/,
  ],
  [
    'headers, then nothing (hangs)',
    (_b, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"accepted":')
    },
    /no answer from .* within 2000 ms/,
  ],
  [
    'a body far over the cap (a flood)',
    (b, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      const chunk = Buffer.alloc(64 * 1024, 0x20)
      let sent = 0
      const more = () => {
        // Bounded: at most 64 MiB, stops as soon as the client hangs up.
        while (sent < 1024 && !res.destroyed) {
          sent++
          if (!res.write(chunk)) return void res.once('drain', more)
        }
        res.end(JSON.stringify(ackFor(b)))
      }
      more()
    },
    /larger than the cap of 65536 bytes/,
  ],
]

function ackFor(b: { batch: string; messages: unknown[] }) {
  return {
    accepted: b.messages.length,
    duplicates: 0,
    late: 0,
    watermark: null,
    batch: b.batch,
    count: b.messages.length,
  }
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

let handler: Handler = () => {}
let liar: http.Server
let liarUrl: string
const sockets = new Set<net.Socket>()
let real: BrokerProcess
let token: string

beforeAll(async () => {
  liar = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      // Identity-encoded (RMQ_COMPRESSION_CODEC=none): JSON, or frames (the batch's JSON up to a line feed).
      const raw = Buffer.concat(chunks)
      const frames = req.headers['content-type'] === 'application/vnd.rmq.frames'
      const body = JSON.parse(raw.subarray(0, frames ? raw.indexOf(10) : raw.length).toString('utf8'))
      handler(body, res)
    })
  })
  liar.on('connection', (s) => (sockets.add(s), s.on('close', () => sockets.delete(s))))
  await new Promise<void>((r) => liar.listen(0, '127.0.0.1', () => r()))
  liarUrl = `http://127.0.0.1:${(liar.address() as net.AddressInfo).port}`
  real = await startBrokerProcess({ auth: 'token' })
  token = await real.createToken('gw-liar')
})

afterAll(async () => {
  for (const s of sockets) s.destroy()
  await new Promise<void>((r) => liar.close(() => r()))
  await real?.cleanup()
})

async function pending(
  run: (a: string[]) => Promise<{ code: number | null; stdout: string }>,
): Promise<number> {
  const r = await run(['status', '--json'])
  expect(r.code).toBe(0)
  return parseJson<{ pending: { messages: number } }>(r.stdout).pending.messages
}

describe('rmq sync against a broker that lies', () => {
  it.each(LIES)(
    '%s: nothing marked sent, exit 75 naming the problem; a real broker then gets each message once',
    async (_name, lie, why) => {
      handler = lie
      const tmp = makeTempDir('rmq-liar-')
      try {
        const env = {
          RMQ_NODE_ID: 'gw-liar',
          RMQ_TOKEN: token,
          RMQ_COMPRESSION_CODEC: 'none',
          RMQ_SYNC_TIMEOUT: '2s',
          RMQ_SYNC_BACKOFF_INITIAL: '1s',
        }
        const run = (args: string[], extra: Record<string, string> = {}) =>
          runCli(args, { cwd: tmp.dir, env: { ...env, ...extra }, timeoutMs: 60_000 })
        for (const p of ['a', 'b', 'c']) expect((await run(['publish', 'liar/t', p])).code).toBe(0)

        const lied = await run(['sync', '--force'], { RMQ_BROKER_URL: liarUrl })
        expect(lied.code, lied.stderr).toBe(75)
        expect(lied.stderr).toMatch(why)
        expect(await pending(run)).toBe(3)

        const good = await run(['sync', '--force'], { RMQ_BROKER_URL: real.url })
        expect(good.code, good.stderr).toBe(0)
        expect(await pending(run)).toBe(0)
        const consumed = await runCli(['consume', 'liar/#', '--json', '--order', 'arrival'], {
          env: { RMQ_BROKER_URL: real.url, RMQ_TOKEN: await real.adminToken() },
        })
        expect(consumed.code, consumed.stderr).toBe(0)
        const payloads = consumed.stdout
          .split('\n')
          .filter(Boolean)
          .map((l) => parseJson<{ payload: string; epoch: string }>(l))
        // Each test has its own outbox (its own epoch): count this one's messages.
        const mine = payloads.filter((m) => m.epoch === payloads[payloads.length - 1].epoch)
        expect(mine.map((m) => m.payload)).toEqual(['a', 'b', 'c'])
      } finally {
        tmp.cleanup()
      }
    },
  )
})
