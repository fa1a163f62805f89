// MQTT at both ends (docs/mqtt.md), real processes on 127.0.0.1, in one run:
// (a) ingest: N QoS 1 messages queued in a local Mosquitto for rmq's
//     persistent session, drained by `rmq mqtt ingest --until-idle` into the
//     outbox with synchronous=FULL (the default) and every PUBACK after its
//     commit (target >= 30,000 msg/s). The rate is N over the run's wall time
//     minus the wall time of the same run with nothing queued (start-up,
//     connect and the idle wait), median of 3.
// (b) forward: N messages in a real broker, `rmq mqtt forward --until-idle`
//     to a Mosquitto with a QoS 1 subscriber (mosquitto_sub, writing to a
//     file) that must receive all N exactly once (target >= 20,000 msg/s),
//     measured the same way; then the same with the subscriber at QoS 0
//     (info), and the CPU per message of each process (forwarder, rmq broker,
//     Mosquitto, subscriber): on 2 cores they all share, the rate is about
//     2 s of CPU over their sum.
// (c) Mosquitto's own offline publish rate (the publisher into a broker with
//     a queued session), and the edge->central Mosquitto bridge side by side
//     (bench/mqtt-bridge.js): online msg/s, a 20,000-message backlog with the
//     default queue, and SIGKILL before autosave.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { childEnv, nodeArgs } from '../child-env.js'
import { bridgeFigures, nativeCounter, publishQos1 } from '../mqtt-bridge.js'
import { startBroker } from './broker.js'
import { startMosquitto } from '../../dist/testing/mosquitto.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const BIN = path.resolve(here, '../../bin/run.js')
const N = Number(process.env.RMQ_BENCH_MQTT_N ?? 100_000)
const RUNS = 3
const INGEST_TARGET = 30_000
const FORWARD_TARGET = 20_000
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** CPU seconds (user + system) a process used so far, from /proc (0 once it is gone). */
function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / 100 // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return 0
  }
}

/** Run rmq to its end (bounded: killed after limitMs); resolves with wall ms, exit code, output and CPU s. */
function rmq(args, { cwd, env, limitMs = 300_000, input }) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint()
    const child = spawn(process.execPath, [...nodeArgs(), BIN, ...args], {
      cwd,
      env: childEnv(env),
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    // Its CPU as last seen (every 50 ms and at the end of its output): at most one interval is missed.
    let cpu = 0
    const sampler = setInterval(() => (cpu = cpuSeconds(child.pid) || cpu), 50)
    child.stdout.on('end', () => (cpu = cpuSeconds(child.pid) || cpu))
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d))
    child.stderr.setEncoding('utf8').on('data', (d) => (err += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      clearInterval(sampler)
      resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, code, out, err, cpu })
    })
    if (input !== undefined) child.stdin.end(input)
    else child.stdin.end()
  })
}

function must(r, what) {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.err.slice(-2000)}`)
  return r
}

const payload = (i) =>
  JSON.stringify({ sensor: `line1/temp-${i % 64}`, seq: i, v: 20 + (i % 1000) / 100, unit: 'C' })

async function ingestRate() {
  const rates = []
  let publishRate = 0
  for (let run = 0; run < RUNS; run++) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-mqtt-in-'))
    const mosq = await startMosquitto()
    try {
      const env = { RMQ_NODE_ID: 'bench-gw', RMQ_MQTT_URL: mosq.url, RMQ_MQTT_TOPICS: 'dev/#' }
      const args = ['mqtt', 'ingest', '--until-idle', '300ms', '--json']
      must(await rmq(args, { cwd: dir, env }), 'mqtt ingest (session)') // opens the persistent session
      const empty = must(await rmq(args, { cwd: dir, env }), 'mqtt ingest (empty)')
      const t0 = Date.now()
      const acked = await publishQos1(mosq.url, 'dev/line1/temp', N, { payload })
      publishRate = Math.max(publishRate, Math.round((acked / (Date.now() - t0)) * 1000))
      const full = must(await rmq(args, { cwd: dir, env }), 'mqtt ingest')
      const summary = JSON.parse(full.out)
      if (summary.stored !== N) throw new Error(`ingest stored ${summary.stored} of ${N}`)
      rates.push(N / (Math.max(1, full.ms - empty.ms) / 1000))
    } finally {
      await mosq.stop()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
  return { rate: median(rates), publishRate }
}

/**
 * `rmq mqtt forward` of N messages to a Mosquitto with a subscriber (mosquitto_sub) on it, whose
 * subscription QoS is `subQos`: with 1, Mosquitto also keeps each message in flight to it until
 * its PUBACK. Median of RUNS runs, with the CPU each process used per message.
 */
export async function forwardRate({ subQos = 1 } = {}) {
  const brokerDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-mqtt-b-'))
  const edgeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-mqtt-e-'))
  const { child, url } = await startBroker(brokerDir)
  const mosq = await startMosquitto()
  try {
    const tok = async (args) =>
      must(
        await rmq(['broker', 'token', 'create', ...args], {
          cwd: brokerDir,
          env: { RMQ_BROKER_DATA_DIR: brokerDir },
        }),
        'token',
      ).out.trim()
    const nodeToken = await tok(['bench-gw'])
    const edgeEnv = { RMQ_NODE_ID: 'bench-gw', RMQ_BROKER_URL: url, RMQ_TOKEN: nodeToken }
    const lines = Array.from({ length: N }, (_, i) => payload(i)).join('\n') + '\n'
    must(
      await rmq(['publish', 'plant/line1/temp', '--lines', '-f', '-'], {
        cwd: edgeDir,
        env: edgeEnv,
        input: lines,
      }),
      'publish',
    )
    must(await rmq(['drain', '--timeout', '5m'], { cwd: edgeDir, env: edgeEnv }), 'drain')
    const rates = []
    // CPU seconds per run: the forwarder (less its start-up), the rmq broker serving it, Mosquitto,
    // the subscriber (its mosquitto_sub and this process, which counts its output).
    const cpu = { forwarder: [], broker: [], mosquitto: [], subscriber: [] }
    for (let run = 0; run < RUNS; run++) {
      const group = `bench-${run}`
      const reader = await tok([
        `bench-reader-${run}`,
        '--role',
        'consumer',
        '--topics',
        'plant/#',
        '--groups',
        group,
      ])
      const env = {
        RMQ_BROKER_URL: url,
        RMQ_TOKEN: reader,
        RMQ_MQTT_URL: mosq.url,
        RMQ_MQTT_FORWARD_GROUP: group,
        RMQ_MQTT_FORWARD_FILTER: 'plant/#',
      }
      const args = ['mqtt', 'forward', '--until-idle', '300ms', '--json']
      const sub = await nativeCounter(mosq.url, 'plant/#', undefined, { clean: true, qos: subQos })
      const before = {
        broker: cpuSeconds(child.pid),
        mosquitto: cpuSeconds(mosq.pid),
        bench: process.cpuUsage(),
      }
      const fullRun = must(await rmq(args, { cwd: edgeDir, env }), 'mqtt forward')
      await sub.until(N, 30_000)
      const benchCpu = process.cpuUsage(before.bench)
      cpu.broker.push(cpuSeconds(child.pid) - before.broker)
      cpu.mosquitto.push(cpuSeconds(mosq.pid) - before.mosquitto)
      cpu.subscriber.push(cpuSeconds(sub.pid) + (benchCpu.user + benchCpu.system) / 1e6)
      const got = await sub.end()
      if (got !== N || sub.total !== N)
        throw new Error(`the subscriber got ${sub.total} (${got} distinct) of ${N}`)
      // The same run again: the group is at the end, nothing to forward (start-up, connect, idle wait).
      const empty = must(await rmq(args, { cwd: edgeDir, env }), 'mqtt forward (empty)')
      // The forwarder's CPU for the messages: less that of the same run with nothing to do (start-up).
      cpu.forwarder.push(Math.max(0, fullRun.cpu - empty.cpu))
      rates.push(N / (Math.max(1, fullRun.ms - empty.ms) / 1000))
      if (process.env.RMQ_BENCH_VERBOSE)
        console.error(`forward run ${run}: ${fullRun.ms} ms, empty ${empty.ms} ms`)
    }
    const perMessage = Object.fromEntries(
      Object.entries(cpu).map(([k, v]) => [k, Math.round((median(v) / N) * 1e7) / 10]),
    )
    return { rate: median(rates), cpuPerMessage: perMessage }
  } finally {
    await mosq.stop()
    child.kill('SIGTERM')
    await new Promise((r) => child.once('exit', r))
    fs.rmSync(brokerDir, { recursive: true, force: true })
    fs.rmSync(edgeDir, { recursive: true, force: true })
  }
}

export async function run() {
  const load = os.loadavg()[0]
  const ingest = await ingestRate()
  const forward = await forwardRate({ subQos: 1 })
  const forwardQos0 = await forwardRate({ subQos: 0 })
  const bridge = await bridgeFigures(20_000)
  return [
    {
      metric: `rmq mqtt ingest, ${N} QoS 1 msgs into the outbox (sync=FULL)`,
      value: Math.round(ingest.rate),
      unit: 'msg/s',
      target: `>= ${INGEST_TARGET}`,
      pass: ingest.rate >= INGEST_TARGET,
    },
    {
      metric: `rmq mqtt forward, ${N} msgs to Mosquitto, QoS 1, in order (subscriber QoS 1)`,
      value: Math.round(forward.rate),
      unit: 'msg/s',
      target: `>= ${FORWARD_TARGET}`,
      pass: forward.rate >= FORWARD_TARGET,
    },
    {
      metric: `  CPU per message forwarded, all processes (forwarder / rmq broker / Mosquitto / subscriber: ${Object.values(forward.cpuPerMessage).join(' / ')} µs)`,
      value: Math.round(Object.values(forward.cpuPerMessage).reduce((a, b) => a + b, 0) * 10) / 10,
      unit: 'µs',
    },
    {
      metric: `rmq mqtt forward, the same with the subscriber at QoS 0 (info)`,
      value: Math.round(forwardQos0.rate),
      unit: 'msg/s',
    },
    {
      metric: `  CPU per message forwarded, subscriber QoS 0 (${Object.values(forwardQos0.cpuPerMessage).join(' / ')} µs)`,
      value: Math.round(Object.values(forwardQos0.cpuPerMessage).reduce((a, b) => a + b, 0) * 10) / 10,
      unit: 'µs',
    },
    { metric: 'Mosquitto offline publish (QoS 1, queued session)', value: ingest.publishRate, unit: 'msg/s' },
    {
      metric: 'Mosquitto bridge online, edge -> central, QoS 1 (subscriber QoS 1, as above)',
      value: bridge.online.msgPerSec,
      unit: 'msg/s',
    },
    {
      metric: 'Mosquitto bridge, 20,000 backlog, default queue: lost',
      value: bridge.backlogDefaultQueue.lost,
      unit: 'msgs',
    },
    {
      metric: 'Mosquitto bridge, 20,000 backlog, no queue limit: lost',
      value: bridge.backlogNoLimit.lost,
      unit: 'msgs',
    },
    {
      metric: 'Mosquitto bridge, SIGKILL before autosave: lost of 20,000',
      value: bridge.sigkillBeforeAutosave.lost,
      unit: 'msgs',
    },
    { metric: 'load average (1 min) at the start', value: Number(load.toFixed(2)), unit: '' },
  ]
}
