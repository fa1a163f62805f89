#!/usr/bin/env node
// The side-by-side figures for `rmq mqtt` (bench/suites/mqtt.js): what a
// plain Mosquitto edge->central bridge does with the same messages, on
// 127.0.0.1, with Debian's mosquitto. Three runs, each bounded in count and time:
//   online   bridge up, QoS 1 publisher on the edge, subscriber on central: msg/s end to end;
//   backlog  central down while N messages are published, then up: how many arrive,
//            with Mosquitto's default queue (max_queued_messages 1000) and with no limit;
//   sigkill  central down, N published (persistence on, default autosave 30 min), the edge
//            broker SIGKILLed and restarted, central up: how many of the acknowledged arrive.
// `node bench/mqtt-bridge.js` prints JSON; the suite imports bridgeFigures().
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import mqtt from 'mqtt'
import { startMosquitto } from '../dist/testing/mosquitto.js'

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Publish n QoS 1 messages with up to `window` unacknowledged; resolves with the count acknowledged. */
export async function publishQos1(
  url,
  topic,
  n,
  { window = 1000, payload = (i) => `{"i":${i},"v":${i % 97}}` } = {},
) {
  const c = await mqtt.connectAsync(url, {
    protocolVersion: 5,
    clientId: `bench-pub-${process.pid}-${Date.now()}`,
  })
  let acked = 0
  for (let i = 0; i < n; i += window) {
    const batch = []
    for (let j = i; j < Math.min(n, i + window); j++)
      batch.push(c.publishAsync(topic, payload(j), { qos: 1 }))
    const r = await Promise.allSettled(batch)
    acked += r.filter((x) => x.status === 'fulfilled').length
  }
  await c.endAsync()
  return acked
}

/**
 * Subscribe (QoS 1) and count; `until(n)` waits for n messages or the deadline. A persistent session
 * by default (the bridge cases reconnect to it); `{ clean: true }` leaves nothing behind at end(), so a
 * later run on the same broker does not pay for queueing to a subscriber that is gone.
 */
export async function counter(url, filter, clientId = `bench-sub-${process.pid}-${Date.now()}`, opts = {}) {
  const c = await mqtt.connectAsync(
    url,
    opts.clean
      ? { protocolVersion: 5, clientId, clean: true }
      : { protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: 3600 } },
  )
  await c.subscribeAsync(filter, { qos: 1 })
  const seen = new Set()
  let total = 0
  let last = 0
  c.on('message', (_t, p) => {
    total++
    seen.add(p.toString())
    last = Date.now()
  })
  return {
    get total() {
      return total
    },
    get distinct() {
      return seen.size
    },
    get lastAt() {
      return last
    },
    async until(n, deadlineMs) {
      const end = Date.now() + deadlineMs
      while (seen.size < n && Date.now() < end) await sleep(20)
      return seen.size
    },
    /** Wait for a first message (up to firstMs: the bridge reconnects), then until nothing new for quietMs. */
    async settle(quietMs, deadlineMs, firstMs = 20_000) {
      const end = Date.now() + deadlineMs
      const first = Date.now() + firstMs
      while (seen.size === 0 && Date.now() < first) await sleep(50)
      let before = -1
      while (Date.now() < end) {
        await sleep(quietMs)
        if (seen.size === before) break
        before = seen.size
      }
      return seen.size
    },
    end: () => c.endAsync(),
  }
}

/**
 * counter() with Mosquitto's own subscriber (mosquitto_sub, C) instead of MQTT.js in this process:
 * for the throughput runs, so the bench's subscriber takes little of the CPU the measured programs
 * share with it. mosquitto_sub writes one line per message (-F '%t %p') to a file; while it runs,
 * this process only counts the new lines every 20 ms (the file's mtime is when the last arrived),
 * and `distinct` is known after end(). The same interface as counter() otherwise.
 */
export async function nativeCounter(
  url,
  filter,
  clientId = `bench-sub-${process.pid}-${Date.now()}`,
  opts = {},
) {
  const { hostname, port } = new URL(url)
  // A second subscription on a probe topic of its own: once a probe published there comes back, the
  // subscription of `filter` is in place too (one SUBSCRIBE). Probe lines are not counted.
  const probe = `bench-probe/${clientId} `
  const args = [
    '-V',
    'mqttv5',
    '-h',
    hostname,
    '-p',
    port,
    '-t',
    filter,
    '-t',
    probe.trim(),
    '-q',
    String(opts.qos ?? 1),
  ]
  args.push('-i', clientId, '-F', '%t %p')
  if (!opts.clean) args.push('-c', '-x', '3600')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-sub-'))
  const out = fs.openSync(path.join(dir, 'out'), 'w+')
  const child = spawn('mosquitto_sub', args, { stdio: ['ignore', out, 'pipe'] })
  const chunks = []
  let total = 0
  let probes = 0
  let last = 0
  let offset = 0
  let distinct
  const count = (buf, text) => {
    let n = 0
    for (let i = buf.indexOf(text); i !== -1; i = buf.indexOf(text, i + text.length)) n++
    return n
  }
  const take = () => {
    const size = fs.fstatSync(out)
    if (size.size <= offset) return
    const buf = Buffer.alloc(size.size - offset)
    const n = fs.readSync(out, buf, 0, buf.length, offset)
    offset += n
    const got = buf.subarray(0, n)
    chunks.push(got)
    // A line may be cut at the chunk's end: counted by its newline, in whichever chunk has it.
    const p = count(got, probe)
    probes += p
    total += count(got, '\n') - p
    last = size.mtimeMs
  }
  const poller = setInterval(take, 20)
  let log = ''
  child.stderr.setEncoding('utf8').on('data', (d) => (log += d))
  const exited = new Promise((r) => child.once('exit', r))
  const stop = Date.now() + 10_000
  while (probes === 0 && Date.now() < stop && child.exitCode === null) {
    spawn('mosquitto_pub', ['-h', hostname, '-p', port, '-t', probe.trim(), '-m', 'probe'], {
      stdio: 'ignore',
    })
    await sleep(200)
  }
  const cleanup = () => {
    clearInterval(poller)
    fs.closeSync(out)
    fs.rmSync(dir, { recursive: true, force: true })
  }
  if (probes === 0) {
    child.kill('SIGKILL')
    cleanup()
    throw new Error(`mosquitto_sub did not subscribe to ${url}: ${log.slice(-500)}`)
  }
  return {
    get pid() {
      return child.pid
    },
    get total() {
      return total
    },
    /** Known after end() (undefined before). */
    get distinct() {
      return distinct
    },
    get lastAt() {
      return last
    },
    async until(n, deadlineMs) {
      const until = Date.now() + deadlineMs
      while (total < n && Date.now() < until) await sleep(20)
      return total
    },
    async settle(quietMs, deadlineMs, firstMs = 20_000) {
      const until = Date.now() + deadlineMs
      const first = Date.now() + firstMs
      while (total === 0 && Date.now() < first) await sleep(50)
      let before = -1
      while (Date.now() < until) {
        await sleep(quietMs)
        if (total === before) break
        before = total
      }
      return total
    },
    async end() {
      child.kill('SIGTERM')
      await exited
      take()
      cleanup()
      const lines = Buffer.concat(chunks).toString('utf8').split('\n')
      distinct = new Set(lines.filter((l) => l !== '' && !l.startsWith(probe))).size
      return distinct
    },
  }
}

function bridgeLines(centralPort, extra = []) {
  return [
    'connection central',
    `address 127.0.0.1:${centralPort}`,
    'topic # out 1',
    'cleansession false',
    'restart_timeout 1',
    'try_private true',
    ...extra,
  ]
}

async function online(n) {
  const central = await startMosquitto()
  const edge = await startMosquitto({ extra: bridgeLines(central.port) })
  try {
    // The same subscriber as the rmq forward runs (bench/suites/mqtt.js).
    const sub = await nativeCounter(central.url, 'bench/#', undefined, { clean: true })
    await sleep(1500) // the bridge connects
    const t0 = Date.now()
    const acked = await publishQos1(edge.url, 'bench/online', n)
    await sub.until(n, 60_000)
    const ms = (sub.lastAt || Date.now()) - t0
    const got = await sub.end()
    return { published: acked, delivered: got, msgPerSec: Math.round((got / ms) * 1000) }
  } finally {
    await edge.stop()
    await central.stop()
  }
}

async function backlog(n, queueLimit) {
  const central = await startMosquitto()
  const centralPort = central.port
  // The subscriber's session exists on central before the outage.
  const sub0 = await counter(central.url, 'bench/#', 'bench-backlog-sub')
  await sub0.end()
  await central.stop()
  const edge = await startMosquitto({
    extra: [...bridgeLines(centralPort), ...(queueLimit ? [`max_queued_messages ${queueLimit}`] : [])],
  })
  try {
    const acked = await publishQos1(edge.url, 'bench/backlog', n)
    const central2 = await startMosquitto({ port: centralPort })
    try {
      const sub = await counter(central2.url, 'bench/#', 'bench-backlog-sub')
      const got = await sub.settle(2000, 60_000)
      await sub.end()
      return {
        published: acked,
        delivered: got,
        lost: acked - got,
        lostPct: Math.round(((acked - got) / acked) * 100),
      }
    } finally {
      await central2.stop()
    }
  } finally {
    await edge.stop()
  }
}

async function sigkill(n) {
  const central = await startMosquitto()
  const centralPort = central.port
  const sub0 = await counter(central.url, 'bench/#', 'bench-kill-sub')
  await sub0.end()
  await central.stop()
  // Persistence as Debian ships it: saved on shutdown and every autosave_interval (30 min).
  const opts = { extra: [...bridgeLines(centralPort), 'persistence true', 'autosave_interval 1800'] }
  const edge = await startMosquitto(opts)
  const acked = await publishQos1(edge.url, 'bench/kill', n)
  await edge.kill()
  const edge2 = await startMosquitto({ ...opts, port: edge.port, dir: edge.dir })
  const central2 = await startMosquitto({ port: centralPort })
  try {
    const sub = await counter(central2.url, 'bench/#', 'bench-kill-sub')
    const got = await sub.settle(3000, 30_000)
    await sub.end()
    return {
      published: acked,
      delivered: got,
      lost: acked - got,
      lostPct: Math.round(((acked - got) / acked) * 100),
    }
  } finally {
    await edge2.stop()
    await central2.stop()
  }
}

/** All three, n messages each. */
export async function bridgeFigures(n = 20_000) {
  return {
    online: await online(n),
    backlogDefaultQueue: await backlog(n, 1000),
    backlogNoLimit: await backlog(n, 0),
    sigkillBeforeAutosave: await sigkill(n),
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const n = Number(process.argv[2] ?? 20_000)
  console.log(JSON.stringify(await bridgeFigures(n), null, 2))
}
