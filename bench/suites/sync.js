// Sync replay: a 100,000-message backlog of ~200-byte telemetry JSON in a
// real SQLite outbox, forwarded by the sync engine to a real broker process
// on loopback until every batch is durably committed (HTTP 200). Measures
// messages per second and bytes on the wire per message (request bodies and
// HTTP headers, counted by a TCP proxy in front of the broker), per codec. The
// edge writes the backlog in one process and forwards it from a fresh one
// (bench/sync-edge.js), as `rmq publish` and `rmq drain` would.
//
// The broker is a running one: before the timed replay it has taken the
// oldest WARM_MESSAGES of the same node's backlog (one untimed `rmq sync`
// run), as a broker that has been serving its nodes before the outage
// ended. A broker started just before the replay spends about a tenth of
// it compiling its own code; that cold case is reported too (zstd).
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { childEnv, nodeArgs } from '../child-env.js'
import { Worker } from 'node:worker_threads'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const MESSAGES = Number(process.env.RMQ_BENCH_SYNC_MESSAGES ?? 100_000)
const BATCH_SIZE = 5000
const CODECS = ['zstd', 'gzip', 'none']
// Each replay is about a second on a fresh broker and outbox; on a shared VM one can be a third off
// either way, so each codec is replayed this many times and the median reported (with the range).
const REPLAYS = Number(process.env.RMQ_BENCH_SYNC_REPLAYS ?? 3)
/** Messages the broker takes before the timed replay (whole batches of BATCH_SIZE). */
const WARM_MESSAGES = 20_000
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** Run bench/sync-edge.js in a process of its own; its last line of output is its result. */
async function runEdge(mode, edge) {
  const child = spawn(process.execPath, [path.join(root, 'bench/sync-edge.js'), mode, JSON.stringify(edge)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (err += d))
  const code = await new Promise((resolve) => child.once('exit', resolve))
  if (code !== 0) throw new Error(`sync-edge ${mode} exited with ${code}:\n${err}`)
  return JSON.parse(out.trim().split('\n').at(-1))
}

async function startBroker(dataDir) {
  const child = spawn(
    process.execPath,
    [...nodeArgs(), path.join(root, 'bin/run.js'), 'broker', 'start', '--host', '127.0.0.1', '--port', '0'],
    {
      cwd: dataDir,
      env: childEnv({
        RMQ_BROKER_AUTH: 'none',
        RMQ_BROKER_DATA_DIR: dataDir,
        RMQ_BROKER_LIMITS_RATE_PER_NODE: '0',
      }),
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  )
  let logs = ''
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start:\n${logs}`)), 20_000)
    child.stderr.on('data', (d) => {
      logs += d
      const m = /listening on (http:\/\/\S+)/.exec(logs)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    child.once('exit', (code) => reject(new Error(`broker exited with ${code}:\n${logs}`)))
  })
  return {
    url,
    port: Number(new URL(url).port),
    cpuSeconds: () => processCpuSeconds(child.pid),
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve()
        child.once('exit', resolve)
        child.kill('SIGTERM')
      }),
  }
}

/** CPU time (user + system, all threads) a process has used so far, from /proc; undefined elsewhere. */
function processCpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th, in ticks.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
  } catch {
    return undefined
  }
}
/** USER_HZ: 100 on Linux for every architecture rmq runs on. */
const CLOCK_TICKS = 100

/**
 * Counts the bytes the edge sends (bodies and headers) on their way to the broker. It runs on its
 * own thread: on the edge's event loop it would hold each request back while the edge prepares the
 * next batch, a delay no real link has.
 */
const PROXY_THREAD = `
const net = require('node:net')
const { parentPort, workerData } = require('node:worker_threads')
const stats = { up: 0, requests: 0 }
const server = net.createServer((client) => {
  const upstream = net.connect(workerData.port, '127.0.0.1')
  client.on('data', (d) => {
    stats.up += d.length
    upstream.write(d)
  })
  upstream.on('data', (d) => client.write(d))
  client.on('error', () => upstream.destroy())
  upstream.on('error', () => client.destroy())
  client.on('close', () => upstream.destroy())
  upstream.on('close', () => client.destroy())
})
server.listen(0, '127.0.0.1', () => parentPort.postMessage({ port: server.address().port }))
parentPort.on('message', (m) => {
  if (m === 'stats') parentPort.postMessage({ stats })
  if (m === 'stop') server.close(() => parentPort.close())
})
`

async function countingProxy(port) {
  const worker = new Worker(PROXY_THREAD, { eval: true, workerData: { port } })
  const next = () => new Promise((resolve) => worker.once('message', resolve))
  const { port: proxyPort } = await next()
  return {
    url: `http://127.0.0.1:${proxyPort}`,
    stats: async () => {
      worker.postMessage('stats')
      return (await next()).stats
    },
    stop: async () => {
      worker.postMessage('stop')
      await new Promise((resolve) => worker.once('exit', resolve))
    },
  }
}

/** `warm`: the broker first takes WARM_MESSAGES older messages of the same backlog, untimed. */
async function replay(codec, { warm }) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `rmq-bench-sync-${codec}-`))
  const broker = await startBroker(path.join(work))
  const proxy = await countingProxy(broker.port)
  try {
    const edge = {
      work,
      messages: MESSAGES,
      options: {
        nodeId: 'bench-gw',
        brokerUrl: proxy.url,
        'storage.path': 'edge/outbox.db',
        'storage.maxBytes': '1GB',
        'compression.codec': codec,
        'sync.batchSize': BATCH_SIZE,
        'sync.batchBytes': '8MB',
      },
    }
    // The backlog is written by one process and forwarded by another (bench/sync-edge.js).
    const before = warm ? WARM_MESSAGES : 0
    const { payloadBytes } = await runEdge('fill', { ...edge, messages: before + MESSAGES })
    if (warm) {
      const w = await runEdge('sync', { ...edge, maxBatches: WARM_MESSAGES / BATCH_SIZE })
      if (w.messages !== WARM_MESSAGES)
        throw new Error(`${codec}: warm-up sent ${w.messages} of ${WARM_MESSAGES}`)
    }
    const upBefore = (await proxy.stats()).up
    const brokerCpuBefore = broker.cpuSeconds()
    const result = await runEdge('drain', edge)
    const brokerCpu = broker.cpuSeconds() - brokerCpuBefore
    const wire = await proxy.stats()
    if (result.messages !== MESSAGES) throw new Error(`${codec}: sent ${result.messages} of ${MESSAGES}`)
    return {
      rate: MESSAGES / result.seconds,
      wirePerMsg: (wire.up - upBefore) / MESSAGES,
      bodyPerMsg: result.bytesWire / MESSAGES,
      payloadPerMsg: payloadBytes / (before + MESSAGES),
      batches: result.batches,
      // Edge (the timed drain) and broker (while it ran); NaN where /proc is not there.
      edgeCpuPerMsg: (result.cpuSeconds * 1e6) / MESSAGES,
      brokerCpuPerMsg: (brokerCpu * 1e6) / MESSAGES,
    }
  } finally {
    await proxy.stop()
    await broker.stop()
    fs.rmSync(work, { recursive: true, force: true })
  }
}

export async function run() {
  const rows = []
  const label = `sync replay ${MESSAGES} msgs`
  for (const codec of CODECS) {
    const primary = codec === 'zstd'
    const runs = []
    for (let i = 0; i < REPLAYS; i++) runs.push(await replay(codec, { warm: true }))
    const rate = summary(runs.map((x) => x.rate))
    rows.push({
      metric:
        `${label} (${Math.round(runs[0].payloadPerMsg)} B JSON, batches of ${BATCH_SIZE}) to a running broker, ` +
        `${codec}: throughput${rate.note}`,
      value: Math.round(rate.median),
      unit: 'msg/s',
      target: primary ? '>= 100000' : '',
      ...(primary ? { pass: rate.median >= 100_000 } : {}),
    })
    if (primary) {
      const cold = summary(
        await (async () => {
          const rates = []
          for (let i = 0; i < REPLAYS; i++) rates.push((await replay(codec, { warm: false })).rate)
          return rates
        })(),
      )
      rows.push({
        metric: `${label} to a broker started just before, ${codec}: throughput${cold.note}`,
        value: Math.round(cold.median),
        unit: 'msg/s',
      })
    }
    const wire = median(runs.map((x) => x.wirePerMsg))
    rows.push({
      metric: `sync replay, ${codec}: bytes on the wire per message (body + HTTP headers)`,
      value: wire,
      unit: 'B/msg',
      target: primary ? '<= 30' : '',
      ...(primary ? { pass: wire <= 30 } : {}),
    })
    rows.push({
      metric: `sync replay, ${codec}: compressed body per message`,
      value: median(runs.map((x) => x.bodyPerMsg)),
      unit: 'B/msg',
    })
    const edgeCpu = median(runs.map((x) => x.edgeCpuPerMsg))
    const brokerCpu = median(runs.map((x) => x.brokerCpuPerMsg))
    if (Number.isFinite(brokerCpu))
      rows.push({
        // What the replay costs each side (edge, broker) in CPU.
        metric:
          `sync replay, ${codec}: CPU per message, edge + broker, all threads ` +
          `(info; edge ${edgeCpu.toFixed(1)}, broker ${brokerCpu.toFixed(1)})`,
        value: Number((edgeCpu + brokerCpu).toFixed(2)),
        unit: 'µs/msg',
      })
  }
  return rows
}

/** The median of `rates`, and a note with the range when there is more than one. */
function summary(rates) {
  const note =
    rates.length > 1
      ? `, median of ${rates.length} replays (${Math.round(Math.min(...rates))}-${Math.round(Math.max(...rates))})`
      : ''
  return { median: median(rates), note }
}
