// Broker work a hostile or heavy node must not slow for the others (issue 22), against a real
// `rmq broker start` on loopback:
// - GET /metrics per scrape (median, p99 of SCRAPES, each timed from request to last byte, the
//   body counted and not kept) with NODES nodes that each reported full stats (as
//   `rmq sync` sends them), after one node sent an oversized stats (refused 413);
// - one scrape right after every node reported again (a heartbeat with new stats), the worst of
//   CHURN_ROUNDS: every node's row is read and its lines written again (a fleet that reports
//   more often than it is scraped; informational, no target);
// - another node's small batch while 16 concurrent 60 MB batches (60 x 1 MB messages, zstd) are in
//   flight from one node (test/e2e/broker-memory.test.ts asserts the memory side of that load).
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { startBroker } from './broker.js'

const require = createRequire(import.meta.url)
const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(here, '../..')

const NODES = Number(process.env.RMQ_BENCH_METRICS_NODES ?? 1000)
const SCRAPES = Number(process.env.RMQ_BENCH_METRICS_SCRAPES ?? 1000)
const BIG_BATCHES = 16
const BIG_MESSAGES = 60
const MB = 1_000_000
const ROUNDS = 3
const CHURN_ROUNDS = 3

/**
 * A GET whose body is counted, not kept (as a scraper that parses as it reads): the bench's own
 * buffers and their garbage stay out of the time measured. Checks the length the broker announced.
 */
function getCounted(agent, url, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'GET', agent, headers }, (res) => {
      let bytes = 0
      res.on('data', (c) => (bytes += c.length))
      res.on('end', () => {
        const announced = Number(res.headers['content-length'])
        if (res.statusCode === 200 && bytes !== announced)
          reject(new Error(`/metrics sent ${bytes} bytes of the ${announced} announced`))
        else resolve({ status: res.statusCode, bytes })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

/** The broker's own rmq_broker_http_request_duration_seconds buckets of GET /metrics, `le -> count`. */
function durationBuckets(text) {
  const out = new Map()
  for (const m of text.matchAll(
    /^rmq_broker_http_request_duration_seconds_bucket\{le="([^"]+)",method="GET",route="\/metrics"\} (\d+)$/gm,
  ))
    out.set(m[1], Number(m[2]))
  return out
}

function request(agent, method, url, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** What `rmq sync` sends as stats (src/core/sync/stats.ts), with values that differ per node. */
function statsFor(i, now) {
  return {
    sync: {
      attempts: 200 + i,
      successes: 198 + i,
      failures: 2,
      batches: 180,
      heartbeats: 20,
      messagesSent: 17950 + i,
      bytesRaw: 4_100_000,
      bytesWire: 450_000,
      lastAttemptAt: now,
      lastSuccessAt: now,
      lastError: i % 10 === 0 ? 'no answer from http://broker:7878 within 30000 ms' : null,
      lastErrorAt: i % 10 === 0 ? now - 60_000 : null,
      backoff: null,
    },
    storage: {
      pending: i % 7,
      pendingBytes: (i % 7) * 200,
      totalMessages: 18000,
      totalBytes: 3_900_000,
      maxBytes: 536_870_912,
      maxMessages: 0,
      fileBytes: 4_186_112,
      appendedTotal: 17950 + i,
      sentTotal: 17950 + i,
      expiredTotal: 0,
      expiredPending: 0,
      droppedTotal: 0,
    },
  }
}

function message(seq, ts, topic, payload) {
  return { seq, topic, ts, payload, enc: 'utf8', expiresAt: null, priority: 4, contentType: 'text/plain' }
}

function batch(node, messages, extra = {}) {
  const now = Date.now()
  return {
    node,
    epoch: `epoch-${node}`,
    batch: `b-${node}-${messages[0]?.seq ?? 'hb'}-${now}`,
    clock: now,
    backlog: { pending: 0, bytes: 0, oldestTs: null },
    messages,
    ...extra,
  }
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]

/** Peak resident set size (VmHWM) of a process, MiB. */
function peakRssMiB(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

export async function run() {
  const zstd = require('zstd-napi')
  const { openSqliteBrokerStore } = await import(path.join(ROOT, 'dist/broker/store/sqlite.js'))
  const { createNodeToken, createToken } = await import(path.join(ROOT, 'dist/broker/tokens.js'))
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-metrics-'))
  let broker
  try {
    const store = await openSqliteBrokerStore({ dataDir })
    const tokens = []
    for (let i = 0; i < NODES; i++) tokens.push((await createNodeToken(store, `gw-${i}`)).token)
    const big = (await createNodeToken(store, 'gw-big')).token
    // A scrape needs a monitor credential, as Prometheus would have (bearer_token_file).
    const monitor = (await createToken(store, { name: 'prometheus', role: 'monitor' })).token
    await store.close()
    broker = await startBroker(dataDir, { RMQ_BROKER_LIMITS_RATE_PER_NODE: '0' })
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
    const post = (token, body, encoding = 'identity') =>
      request(agent, 'POST', `${broker.url}/v1/batches`, body, {
        'content-type': 'application/json',
        'content-encoding': encoding,
        authorization: `Bearer ${token}`,
      })

    // Every node reports once, with one message and its stats.
    const now = Date.now()
    for (let i = 0; i < NODES; i++) {
      const body = batch(`gw-${i}`, [message(1, now, `plant/${i % 16}/t`, '{"v":1}')], {
        stats: statsFor(i, now),
      })
      const res = await post(tokens[i], JSON.stringify(body))
      if (res.status !== 200) throw new Error(`node report HTTP ${res.status}: ${res.body}`)
    }
    // One node sends a stats object far over the limit: refused, nothing of it kept.
    const wide = Object.fromEntries(Array.from({ length: 32 }, (_, k) => [`k${k}`, 'x'.repeat(500)]))
    const oversized = await post(
      tokens[0],
      JSON.stringify(batch('gw-0', [], { stats: { sync: wide, storage: wide } })),
    )
    if (oversized.status !== 413) throw new Error(`oversized stats: HTTP ${oversized.status}, expected 413`)

    // Scrapes, one at a time (as Prometheus does), after two warm-up ones.
    const scrape = () =>
      request(agent, 'GET', `${broker.url}/metrics`, undefined, { authorization: `Bearer ${monitor}` })
    let series = 0
    for (let i = 0; i < 2; i++) series = (await scrape()).body.toString().split('\n').length
    const before = durationBuckets((await scrape()).body.toString())
    const times = []
    for (let i = 0; i < SCRAPES; i++) {
      const t = process.hrtime.bigint()
      const res = await getCounted(agent, `${broker.url}/metrics`, { authorization: `Bearer ${monitor}` })
      times.push(Number(process.hrtime.bigint() - t) / 1e6)
      if (res.status !== 200) throw new Error(`/metrics HTTP ${res.status}`)
    }
    times.sort((a, b) => a - b)
    const median = percentile(times, 50)
    const p99 = percentile(times, 99)
    // The broker's own view (request read to response written): the timed scrapes plus the one above.
    const after = durationBuckets((await scrape()).body.toString())
    const within = (le) => (after.get(le) ?? NaN) - (before.get(le) ?? NaN)
    const brokerWithin10 = within('0.01')
    const brokerWithin25 = within('0.025')

    // Every node reports again (a heartbeat with new stats), then one scrape.
    const churn = []
    for (let round = 1; round <= CHURN_ROUNDS; round++) {
      const at = Date.now()
      for (let i = 0; i < NODES; i++) {
        const body = batch(`gw-${i}`, [], { batch: `hb-${i}-${round}`, stats: statsFor(i + round, at) })
        const res = await post(tokens[i], JSON.stringify(body))
        if (res.status !== 200) throw new Error(`heartbeat HTTP ${res.status}: ${res.body}`)
      }
      const t = process.hrtime.bigint()
      const res = await scrape()
      churn.push(Number(process.hrtime.bigint() - t) / 1e6)
      if (res.status !== 200) throw new Error(`/metrics HTTP ${res.status}`)
      if (!res.body.includes(`rmq_node_batches_total{node="gw-0"} ${1 + round}\n`))
        throw new Error(`/metrics after round ${round} does not show gw-0's new report`)
    }
    const churnMax = Math.max(...churn)

    // What the reports and scrapes alone reached: the large batches' share is the peak after them minus this.
    const peakBefore = peakRssMiB(broker.child.pid)
    // 16 concurrent 60 MB batches from gw-big; gw-1's one-message batch 100 ms after they start.
    const unit = Array.from({ length: 64 }, (_, k) => ((k * 7919) % 1000).toString(36)).join('-') + '\n'
    const payload = unit.repeat(Math.ceil(MB / unit.length)).slice(0, MB)
    const small = []
    const bigStatuses = new Map()
    let seq = 0
    for (let round = 0; round < ROUNDS; round++) {
      const bodies = Array.from({ length: BIG_BATCHES }, () => {
        const msgs = Array.from({ length: BIG_MESSAGES }, () =>
          message(++seq, Date.now(), 'plant/big', payload),
        )
        return zstd.compress(Buffer.from(JSON.stringify(batch('gw-big', msgs))), { compressionLevel: 3 })
      })
      const bigAgent = new http.Agent({ keepAlive: false, maxSockets: BIG_BATCHES })
      const answers = Promise.all(
        bodies.map((b) =>
          request(bigAgent, 'POST', `${broker.url}/v1/batches`, b, {
            'content-type': 'application/json',
            'content-encoding': 'zstd',
            authorization: `Bearer ${big}`,
          }),
        ),
      )
      await new Promise((r) => setTimeout(r, 100))
      const t = process.hrtime.bigint()
      const res = await post(
        tokens[1],
        JSON.stringify(batch('gw-1', [message(2 + round, Date.now(), 'plant/s', 'x')])),
      )
      small.push(Number(process.hrtime.bigint() - t) / 1e6)
      if (res.status !== 200) throw new Error(`small batch HTTP ${res.status}: ${res.body}`)
      for (const r of await answers) bigStatuses.set(r.status, (bigStatuses.get(r.status) ?? 0) + 1)
      bigAgent.destroy()
    }
    const peak = peakRssMiB(broker.child.pid)
    agent.destroy()
    const smallMax = Math.max(...small)
    const statuses = [...bigStatuses].map(([s, n]) => `${n}x${s}`).join(' ')

    return [
      {
        metric: `/metrics per scrape, median (${NODES} nodes with stats, ${series} lines)`,
        value: median,
        unit: 'ms',
        target: '< 20',
        pass: median < 20,
      },
      {
        metric: `/metrics per scrape, p99 (${SCRAPES} scrapes)`,
        value: p99,
        unit: 'ms',
        target: '< 20',
        pass: p99 < 20,
      },
      {
        metric: `/metrics scrapes the broker answered within 10 ms / 25 ms (its request-duration histogram, of ${SCRAPES + 1})`,
        value: `${brokerWithin10} / ${brokerWithin25}`,
        unit: '',
      },
      {
        metric: `/metrics right after all ${NODES} nodes reported again, worst of ${CHURN_ROUNDS}`,
        value: churnMax,
        unit: 'ms',
      },
      {
        metric: `small batch during ${BIG_BATCHES} x 60 MB in flight, worst of ${ROUNDS} (big: ${statuses})`,
        value: smallMax,
        unit: 'ms',
        target: '< 1000',
        pass: smallMax < 1000,
      },
      {
        metric: `broker peak RSS (VmHWM) after that (${Math.round(peakBefore)} MiB before the large batches)`,
        value: Math.round(peak),
        unit: 'MiB',
        target: '< 400',
        pass: peak < 400,
      },
    ]
  } finally {
    if (broker) {
      broker.child.kill('SIGTERM')
      await new Promise((r) => broker.child.once('exit', r))
    }
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
}
