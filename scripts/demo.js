#!/usr/bin/env node
// The whole store-and-forward story on loopback, driving the real CLI
// (bin/run.js) in a temporary directory: publish while the broker is down,
// see the messages stored, start a broker, sync, consume in order, stop.
// Run with `npm run demo` (it builds first). Imports nothing from src/.
import { execFile, spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { mosquittoPath, mqttAct } from './demo-mqtt.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const bin = path.join(root, 'bin/run.js')
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-demo-'))
const edgeDir = path.join(work, 'edge')
const brokerDir = path.join(work, 'broker')
fs.mkdirSync(edgeDir)
fs.mkdirSync(brokerDir)

const bold = (s) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s)
const step = (n, text) => console.log(`\n${bold(`${n}. ${text}`)}`)
const show = (text) => console.log(text.replace(/\s+$/, '').replace(/^/gm, '   '))

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

const port = await freePort()
const brokerUrl = `http://127.0.0.1:${port}`
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RMQ_')))
const edgeEnv = {
  ...baseEnv,
  RMQ_NODE_ID: 'gw-demo',
  RMQ_BROKER_URL: brokerUrl,
  RMQ_SYNC_TIMEOUT: '3s',
  RMQ_SYNC_BACKOFF_INITIAL: '30s',
}
const brokerEnv = { ...baseEnv, RMQ_BROKER_DATA_DIR: brokerDir, RMQ_BROKER_AUTH: 'token' }

/** Run the CLI; resolves with { code, stdout, stderr } (never rejects on a non-zero exit). */
function rmq(args, { env = edgeEnv, cwd = edgeDir, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(
      process.execPath,
      [bin, ...args],
      { env, cwd, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') return reject(err)
        resolve({ code: err ? err.code : 0, stdout, stderr })
      },
    )
    if (input !== undefined) child.stdin.end(input)
  })
}

function must(r, what) {
  if (r.code !== 0) {
    console.error(`demo: ${what} failed with exit ${r.code}\n${r.stderr}${r.stdout}`)
    throw new Error(`${what} failed`)
  }
  return r
}

let broker
async function startBroker() {
  const child = spawn(
    process.execPath,
    [bin, 'broker', 'start', '--host', '127.0.0.1', '--port', String(port)],
    {
      env: brokerEnv,
      cwd: brokerDir,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  let logs = ''
  child.stdout.on('data', (d) => (logs += d))
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start:\n${logs}`)), 20_000)
    child.stderr.on('data', (d) => {
      logs += d
      if (/listening on/.test(logs)) {
        clearTimeout(timer)
        resolve()
      }
    })
    child.once('exit', (code) => reject(new Error(`broker exited with ${code}:\n${logs}`)))
  })
  return child
}

async function stopBroker() {
  if (!broker || broker.exitCode !== null) return
  const exited = new Promise((resolve) => broker.once('exit', resolve))
  broker.kill('SIGTERM')
  const timer = setTimeout(() => broker.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

let ok = false
try {
  console.log(bold('rmq demo: store-and-forward on loopback'))
  console.log(`   working directory ${work}`)
  console.log(`   edge node gw-demo, broker will listen on ${brokerUrl} (not started yet)`)

  step(1, 'The link is down: publish readings on the edge. Each one is committed to the local outbox.')
  const start = Date.now() - 60_000
  const readings = [
    ['plant/line1/temp', { c: 21.4 }, 0],
    ['plant/line2/temp', { c: 22.9 }, 5_000],
    ['plant/line1/pressure', { bar: 1.02 }, 10_000],
    ['plant/line1/temp', { c: 21.7 }, 15_000],
    ['plant/line2/alarm', { door: 'open' }, 20_000],
  ]
  for (const [topic, payload, offset] of readings) {
    const r = must(
      await rmq([
        'publish',
        topic,
        JSON.stringify(payload),
        '--timestamp',
        String(start + offset),
        '--content-type',
        'application/json',
      ]),
      'publish',
    )
    show(`$ rmq publish ${topic} '${JSON.stringify(payload)}'  ->  ${r.stdout.trim()}`)
  }
  const lines = Array.from({ length: 995 }, (_, i) =>
    JSON.stringify({ seq: i, c: +(20 + (i % 30) / 10).toFixed(1) }),
  ).join('\n')
  const bulk = must(
    await rmq(['publish', 'plant/line3/temp', '--lines', '-f', '-'], { input: lines + '\n' }),
    'publish --lines',
  )
  show(
    `$ rmq publish plant/line3/temp --lines -f -   (995 NDJSON lines)  ->  ${bulk.stdout.trim().split('\n').pop()}`,
  )

  step(2, 'Nothing is lost while the broker is down: sync fails (exit 75) and backs off.')
  const failed = await rmq(['sync'])
  show(`$ rmq sync   ->  exit ${failed.code}\n${failed.stderr}`)
  const later = await rmq(['sync'])
  show(`$ rmq sync   (a cron run during the backoff)  ->  exit ${later.code}\n${later.stdout}`)
  const status = await rmq(['status'])
  show(`$ rmq status\n${status.stdout.trimEnd()}`)

  step(3, 'The broker comes up, with a token for this node.')
  broker = await startBroker()
  show(`$ rmq broker start --port ${port}   ->  listening on ${brokerUrl}`)
  const token = must(
    await rmq(['broker', 'token', 'create', 'gw-demo'], { env: brokerEnv, cwd: brokerDir }),
    'token create',
  ).stdout.trim()
  edgeEnv.RMQ_TOKEN = token
  show('$ rmq broker token create gw-demo   ->  (token saved in RMQ_TOKEN of the edge)')
  const reader = must(
    await rmq(['broker', 'token', 'create', 'analytics', '--role', 'consumer', '--topics', 'plant/#'], {
      env: brokerEnv,
      cwd: brokerDir,
    }),
    'token create analytics',
  ).stdout.trim()
  show("$ rmq broker token create analytics --role consumer --topics 'plant/#'   ->  (the consumer's token)")

  step(
    4,
    'Drain the outbox (ignores the backoff left by the failed run): compressed batches, marked sent on 200.',
  )
  const drained = must(await rmq(['drain', '--timeout', '1m']), 'drain')
  show(`$ rmq drain\n${drained.stdout}`)
  const again = must(await rmq(['sync']), 'sync')
  show(`$ rmq sync   ->  ${again.stdout.trim()}`)

  step(5, 'A consumer reads everything once, in the order it was generated (event time).')
  const consumed = must(
    await rmq(['consume', 'plant/#', '--json'], {
      env: { ...baseEnv, RMQ_BROKER_URL: brokerUrl, RMQ_TOKEN: reader },
    }),
    'consume',
  )
  const msgs = consumed.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
  for (const m of msgs.slice(0, 6))
    show(`${new Date(m.ts).toISOString()}  ${m.topic.padEnd(22)} ${m.payload}`)
  show(`... ${msgs.length} messages in total`)
  const inOrder = msgs.every((m, i) => i === 0 || msgs[i - 1].ts <= m.ts)
  const unique = new Set(msgs.map((m) => m.id)).size === msgs.length
  show(
    `in event-time order: ${inOrder ? 'yes' : 'NO'}; duplicates: ${unique ? 'none' : 'FOUND'}; expected 1000`,
  )
  if (msgs.length !== 1000 || !inOrder || !unique)
    throw new Error('the consumer did not get every message once, in order')

  let last = 6
  if (mosquittoPath()) {
    last = await mqttAct({
      rmq,
      must,
      show,
      step,
      stopBroker,
      startBroker: async () => (broker = await startBroker()),
      brokerEnv,
      brokerDir,
      edgeEnv,
      baseEnv,
      brokerUrl,
      first: 6,
    })
  } else show('\n   (the MQTT act is skipped: mosquitto is not installed; apt-get install mosquitto)')

  step(last, 'Stop everything.')
  await stopBroker()
  show('broker stopped')
  ok = true
} catch (err) {
  console.error(`demo failed: ${err.message}`)
} finally {
  await stopBroker().catch(() => {})
  fs.rmSync(work, { recursive: true, force: true })
}
console.log(
  ok
    ? `\n${bold('demo complete')}: stored while offline, forwarded once the broker was up, consumed in order.`
    : '',
)
process.exitCode = ok ? 0 : 1
