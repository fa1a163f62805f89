// The CPU cost of idle long-polls: a real `rmq broker start` (SQLite) on
// loopback holding 500 open `GET /v1/messages?wait=60000` with no new data.
// The broker's own CPU time (utime + stime from /proc) over a 10 s idle
// window, with and without the long-polls open, as % of one core. Idle
// long-polls wait on the broker's notifier and read nothing until data
// arrives; then one batch must wake every one of them.
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startBroker } from './broker.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(here, '../..')

const POLLS = 500
const IDLE_MS = 10_000
const TARGET_PCT = 2

/** CPU seconds (user + system) the process has used so far. */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
  return (Number(fields[11]) + Number(fields[12])) / 100
}

async function cpuPctOver(pid, ms) {
  const c0 = cpuSeconds(pid)
  const t0 = Date.now()
  await new Promise((r) => setTimeout(r, ms))
  return ((cpuSeconds(pid) - c0) / ((Date.now() - t0) / 1000)) * 100
}

function poll(agent, url, token) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }))
      })
      .on('error', reject)
  })
}

export async function run() {
  if (!fs.existsSync('/proc/self/stat')) return [{ metric: 'idle long-polls', value: 'needs /proc (Linux)' }]
  const { openSqliteBrokerStore } = await import(path.join(ROOT, 'dist/broker/store/sqlite.js'))
  const { createNodeToken } = await import(path.join(ROOT, 'dist/broker/tokens.js'))
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-long-polls-'))
  let broker
  const agent = new http.Agent({ keepAlive: true, maxSockets: POLLS + 10 })
  try {
    const store = await openSqliteBrokerStore({ dataDir })
    const { token } = await createNodeToken(store, 'bench-0')
    await store.close()
    broker = await startBroker(dataDir, {
      RMQ_BROKER_LIMITS_LONG_POLLS_PER_CREDENTIAL: '0',
      RMQ_BROKER_LIMITS_LONG_POLLS: String(POLLS + 10),
    })
    const pid = broker.child.pid
    await new Promise((r) => setTimeout(r, 2000))
    const baseline = await cpuPctOver(pid, IDLE_MS)

    const url = `${broker.url}/v1/messages?topic=%23&order=arrival&wait=60000`
    const polls = Array.from({ length: POLLS }, () => poll(agent, url, token))
    // Let them all arrive and settle into waiting.
    await new Promise((r) => setTimeout(r, 2000))
    const idle = await cpuPctOver(pid, IDLE_MS)

    // One batch wakes them all.
    const body = JSON.stringify({
      node: 'bench-0',
      epoch: 'e0',
      batch: 'b1',
      clock: Date.now(),
      backlog: { pending: 0, bytes: 0, oldestTs: null },
      messages: [
        {
          seq: 1,
          topic: 'plant/t',
          ts: Date.now(),
          payload: '{}',
          enc: 'utf8',
          expiresAt: null,
          priority: 4,
          contentType: null,
        },
      ],
    })
    const t0 = Date.now()
    await new Promise((resolve, reject) => {
      const req = http.request(
        `${broker.url}/v1/batches`,
        {
          method: 'POST',
          agent,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        },
        (res) => {
          res.resume()
          res.on('end', () =>
            res.statusCode === 200 ? resolve() : reject(new Error(`POST ${res.statusCode}`)),
          )
        },
      )
      req.on('error', reject)
      req.end(body)
    })
    const pages = await Promise.all(polls)
    const wakeMs = Date.now() - t0
    const woken = pages.filter((p) => p.status === 200 && JSON.parse(p.body).messages.length === 1).length
    return [
      { metric: 'idle broker CPU, no long-polls', value: baseline, unit: '% of a core' },
      {
        metric: `idle broker CPU, ${POLLS} long-polls open`,
        value: idle,
        unit: '% of a core',
        target: `<= ${TARGET_PCT}`,
        pass: idle <= TARGET_PCT,
      },
      {
        metric: `long-polls woken by one batch`,
        value: woken,
        unit: `of ${POLLS}`,
        target: `${POLLS}`,
        pass: woken === POLLS,
      },
      { metric: `time to answer all ${POLLS} after the batch`, value: wakeMs, unit: 'ms' },
    ]
  } finally {
    agent.destroy()
    broker?.child.kill('SIGTERM')
    await new Promise((r) => setTimeout(r, 500))
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
}
