// Broker ingest and read throughput against a real `rmq broker start` process
// on loopback: 100,000 ~200-byte messages in zstd batches of 500 from 4
// concurrent senders (one node each), every batch durably committed before its
// 200; then one consumer reading the whole event-time stream in pages.
// The target is for a running broker, as in the sync suite: one that has
// taken WARM_MESSAGES from 4 other nodes before the timed ingest. A broker
// started just before spends a good part of a one-second run compiling its
// own code; that cold case is reported too (on a store of its own).
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { childEnv, nodeArgs } from '../child-env.js'

const require = createRequire(import.meta.url)
const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(here, '../..')

export const TOTAL = 100_000
export const BATCH = 500
export const SENDERS = 4
const PAGE = 5000
/** Messages a running broker has taken (from other nodes) before the timed ingest. */
export const WARM_MESSAGES = 20_000

function payloadFor(i) {
  const v = (20 + ((i * 7919) % 1000) / 100).toFixed(2)
  return JSON.stringify({
    sensor: `temp-${i % 64}`,
    site: 'plant-3',
    line: `line-${i % 4}`,
    v: Number(v),
    unit: 'C',
    status: 'ok',
    seq: i,
    note: 'steady-state telemetry sample...',
  })
}

function post(agent, url, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () =>
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }),
      )
    })
    req.on('error', reject)
    req.end(body)
  })
}

function get(agent, url, headers) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent, headers }, (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }))
      })
      .on('error', reject)
  })
}

/** A real `rmq broker start` on a free port; `env` adds RMQ_* settings (e.g. the PostgreSQL store). */
export async function startBroker(dataDir, env = {}) {
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs(),
      path.join(ROOT, 'bin/run.js'),
      'broker',
      'start',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--log-format',
      'json',
    ],
    {
      cwd: dataDir,
      env: childEnv({
        RMQ_BROKER_DATA_DIR: dataDir,
        RMQ_BROKER_AUTH: 'token',
        RMQ_LOG_LEVEL: 'warn',
        ...env,
      }),
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  )
  let logs = ''
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start:\n${logs}`)), 20_000)
    child.stderr.setEncoding('utf8').on('data', (d) => {
      logs += d
      const m = /rmq broker listening on (http:\/\/\S+)/.exec(logs)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    child.on('exit', (code) => reject(new Error(`broker exited ${code}:\n${logs}`)))
  })
  return { child, url }
}

/**
 * The workload: TOTAL ~200-byte messages from SENDERS nodes in zstd batches of BATCH, built and
 * compressed up front so that the senders only send. Shared with bench/suites/broker-postgres.js.
 */
export function buildWork({ prefix = 'bench', total = TOTAL, earlierMs = 0, direct = false } = {}) {
  const zstd = require('zstd-napi')
  const perSender = total / SENDERS
  const t0 = Date.now() - 3_600_000 - earlierMs
  const work = []
  let rawBytes = 0
  let wireBytes = 0
  let msgBytes = 0
  for (let s = 0; s < SENDERS; s++) {
    const batches = []
    for (let b = 0; b < perSender / BATCH; b++) {
      const messages = []
      for (let k = 0; k < BATCH; k++) {
        const seq = b * BATCH + k + 1
        const m = {
          seq,
          topic: `plant/line${seq % 4}/temp`,
          ts: t0 + seq * SENDERS + s,
          payload: payloadFor(seq),
          enc: 'utf8',
          expiresAt: null,
          priority: 4,
          contentType: 'application/json',
        }
        msgBytes += JSON.stringify(m).length
        messages.push(m)
      }
      const left = perSender - (b + 1) * BATCH
      const raw = Buffer.from(
        JSON.stringify({
          node: `${prefix}-${s}`,
          epoch: `epoch-${s}`,
          batch: `${prefix}-${s}-${b}`,
          ...(direct ? { direct: true } : {}),
          clock: t0 + ((b + 1) * BATCH + 1) * SENDERS,
          backlog: {
            pending: left,
            bytes: left * 200,
            oldestTs: left ? t0 + ((b + 1) * BATCH + 1) * SENDERS : null,
          },
          messages,
        }),
      )
      rawBytes += raw.length
      const body = zstd.compress(raw, { compressionLevel: 3 })
      wireBytes += body.length
      batches.push(body)
    }
    work.push(batches)
  }
  return { work, rawBytes, wireBytes, msgBytes }
}

/**
 * Send every sender's batches concurrently (sender s to urls[s % urls.length]) until acknowledged.
 * `concurrent: 1`: one request at a time, the nodes' batches interleaved (each node's in order).
 */
export async function sendAll(work, urls, tokens, { concurrent = work.length } = {}) {
  const started = process.hrtime.bigint()
  let retries = 0
  // `concurrent` lanes, one request in flight each; sender s goes to lane s % concurrent, and a lane
  // with several senders takes their batches in turns.
  const lanes = Array.from({ length: Math.min(concurrent, work.length) }, (_, l) => {
    const mine = work.map((batches, s) => ({ batches, s })).filter(({ s }) => s % concurrent === l)
    return mine[0].batches.flatMap((_, b) => mine.map(({ batches, s }) => ({ body: batches[b], s })))
  })
  await Promise.all(
    lanes.map(async (lane, l) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      for (const { body, s } of lane) {
        for (;;) {
          const res = await post(agent, `${urls[l % urls.length]}/v1/batches`, body, {
            'content-type': 'application/json',
            'content-encoding': 'zstd',
            authorization: `Bearer ${tokens[s]}`,
          })
          if (res.status === 200) break
          if (res.status !== 429 && res.status !== 503) throw new Error(`HTTP ${res.status}: ${res.body}`)
          retries++
          await new Promise((r) => setTimeout(r, 50))
        }
      }
      agent.destroy()
    }),
  )
  const ingestSec = Number(process.hrtime.bigint() - started) / 1e9
  return { seconds: ingestSec, retries }
}

export async function run() {
  const { openSqliteBrokerStore } = await import(path.join(ROOT, 'dist/broker/store/sqlite.js'))
  const { createNodeToken, createToken } = await import(path.join(ROOT, 'dist/broker/tokens.js'))
  const dirs = []
  const brokers = []
  /** A store with node tokens for `prefixes` (SENDERS each) and a reader; then its broker. */
  async function freshBroker(prefixes) {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-broker-'))
    dirs.push(dataDir)
    const store = await openSqliteBrokerStore({ dataDir })
    const tokens = {}
    for (const prefix of prefixes) {
      tokens[prefix] = []
      for (let s = 0; s < SENDERS; s++)
        tokens[prefix].push((await createNodeToken(store, `${prefix}-${s}`)).token)
    }
    // The reader: a consumer credential (a node token may only publish).
    const reader = (await createToken(store, { name: 'bench-reader', role: 'consumer', topics: ['#'] })).token
    await store.close()
    const broker = await startBroker(dataDir)
    brokers.push(broker)
    return { broker, tokens, reader }
  }
  try {
    const { work, rawBytes, wireBytes, msgBytes } = buildWork()

    // Cold: a broker started just before the timed ingest.
    const cold = await freshBroker(['bench'])
    const { seconds: coldSec } = await sendAll(work, [cold.broker.url], cold.tokens.bench)

    // Running: the broker first takes WARM_MESSAGES from 4 other nodes, untimed.
    const { broker, tokens, reader } = await freshBroker(['warm', 'bench'])
    await sendAll(buildWork({ prefix: 'warm', total: WARM_MESSAGES }).work, [broker.url], tokens.warm)
    const { seconds: ingestSec, retries } = await sendAll(work, [broker.url], tokens.bench)

    // Read the whole event-time stream back (the last nodes' clocks release everything).
    const agent = new http.Agent({ keepAlive: true })
    const readStart = process.hrtime.bigint()
    let after = 0
    let read = 0
    for (;;) {
      const res = await get(agent, `${broker.url}/v1/messages?order=event&limit=${PAGE}&after=${after}`, {
        authorization: `Bearer ${reader}`,
      })
      if (res.status !== 200) throw new Error(`read HTTP ${res.status}`)
      const page = JSON.parse(res.body.toString('utf8'))
      if (page.messages.length === 0) break
      read += page.messages.length
      after = page.next
    }
    const readSec = Number(process.hrtime.bigint() - readStart) / 1e9
    agent.destroy()

    return [
      {
        metric: `ingest ${TOTAL} msgs (${BATCH}/batch zstd, ${SENDERS} senders, durable) to a running broker`,
        value: Math.round(TOTAL / ingestSec),
        unit: 'msg/s',
        target: '>= 100000',
        pass: TOTAL / ingestSec >= 100_000,
      },
      { metric: 'ingest wall time', value: ingestSec, unit: 's' },
      {
        metric: `ingest ${TOTAL} msgs to a broker started just before (info)`,
        value: Math.round(TOTAL / coldSec),
        unit: 'msg/s',
      },
      { metric: 'avg message size (JSON)', value: Math.round(msgBytes / TOTAL), unit: 'bytes' },
      { metric: 'zstd ratio on the wire', value: rawBytes / wireBytes, unit: 'x' },
      { metric: 'ingest retries (429/503)', value: retries, unit: '' },
      {
        metric: `consumer read, event order (pages of ${PAGE})`,
        value: Math.round(read / readSec),
        unit: 'msg/s',
        target: `${TOTAL + WARM_MESSAGES} read`,
        pass: read === TOTAL + WARM_MESSAGES,
      },
    ]
  } finally {
    for (const broker of brokers) {
      if (broker.child.exitCode !== null) continue
      broker.child.kill('SIGTERM')
      await new Promise((r) => broker.child.once('exit', r))
    }
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true })
  }
}
