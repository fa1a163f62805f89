// `rmq publish` through the real bin/run.js:
// (a) single-message wall time as a ratio to `node -e 0`, both measured here,
//     interleaved, median of 21 runs each (target <= 1.4x);
// (b) `publish --lines` of 100,000 ~200-byte JSON messages into a fresh
//     outbox with synchronous=FULL (the default), median of 3 runs
//     (target >= 150,000 msg/s), and (c) the peak RSS of that process.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const BIN = path.resolve(here, '../../bin/run.js')
const RUNS = 21
const LINES = 100_000

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

function env() {
  const e = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RMQ_')) e[k] = v
  e.RMQ_NODE_ID = 'bench-gw'
  return e
}

function timed(args, cwd) {
  const start = process.hrtime.bigint()
  const r = spawnSync(process.execPath, args, { cwd, env: env(), stdio: ['ignore', 'pipe', 'pipe'] })
  const ms = Number(process.hrtime.bigint() - start) / 1e6
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr}`)
  return ms
}

function payload(i) {
  return JSON.stringify({
    sensor: `line1/temp-${i % 64}`,
    site: 'plant-3',
    seq: i,
    ts: 1764160000000 + i * 10,
    v: Number((20 + (i % 1000) / 100).toFixed(2)),
    unit: 'C',
    status: 'ok',
    note: 'steady-state telemetry sample from the line-1 cabinet, padded to ~200 B',
  })
}

// Records the peak RSS (KiB) and CPU time (µs) of the process it is preloaded into.
const RSS_PRELOAD =
  'data:text/javascript,' +
  encodeURIComponent(
    "import fs from 'node:fs';process.on('exit',()=>{const u=process.resourceUsage();" +
      'fs.writeFileSync(process.env.BENCH_RSS_FILE,JSON.stringify({rss:u.maxRSS,cpu:u.userCPUTime+u.systemCPUTime}))})',
  )

export async function run() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-publish-'))
  try {
    // (a) start-up: the store exists already (as on a gateway), so creation is not measured.
    timed([BIN, 'publish', 'bench/t', 'warm-up'], dir)
    const base = []
    const pub = []
    for (let i = 0; i < RUNS; i++) {
      base.push(timed(['-e', '0'], dir))
      pub.push(timed([BIN, 'publish', 'bench/t', `{"v":${i}}`], dir))
    }
    const nodeMs = median(base)
    const pubMs = median(pub)
    const ratio = pubMs / nodeMs

    // (b) + (c) bulk NDJSON.
    const file = path.join(dir, 'in.ndjson')
    const lines = Array.from({ length: LINES }, (_, i) => payload(i))
    fs.writeFileSync(file, lines.join('\n') + '\n')
    const avgBytes = Math.round(fs.statSync(file).size / LINES)
    const rates = []
    const rss = []
    const cpuRates = []
    const rssFile = path.join(dir, 'rss')
    for (let i = 0; i < 3; i++) {
      const cwd = fs.mkdtempSync(path.join(dir, 'lines-'))
      const start = process.hrtime.bigint()
      const r = spawnSync(
        process.execPath,
        ['--import', RSS_PRELOAD, BIN, 'publish', 'bench/bulk', '--lines', '-f', file],
        {
          cwd,
          env: { ...env(), BENCH_RSS_FILE: rssFile },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      )
      const ms = Number(process.hrtime.bigint() - start) / 1e6
      if (r.status !== 0) throw new Error(`publish --lines exited ${r.status}: ${r.stderr}`)
      if (!String(r.stdout).includes(`stored ${LINES} messages`))
        throw new Error(`unexpected output: ${r.stdout}`)
      rates.push(LINES / (ms / 1000))
      const usage = JSON.parse(fs.readFileSync(rssFile, 'utf8'))
      rss.push(usage.rss / 1024)
      cpuRates.push(LINES / (usage.cpu / 1e6))
      fs.rmSync(cwd, { recursive: true, force: true })
    }
    const rate = median(rates)
    // Informational: the same with every line parsed as JSON (--content-type application/json).
    const jsonCwd = fs.mkdtempSync(path.join(dir, 'json-'))
    const jsonMs = timed(
      [BIN, 'publish', 'bench/bulk', '--lines', '-f', file, '--content-type', 'application/json'],
      jsonCwd,
    )

    return [
      { metric: 'node -e 0 (median wall)', value: nodeMs, unit: 'ms' },
      { metric: 'rmq publish TOPIC MSG (median wall)', value: pubMs, unit: 'ms' },
      {
        metric: 'publish start-up ratio vs node -e 0',
        value: ratio,
        unit: 'x',
        target: '<= 1.4',
        pass: ratio <= 1.4,
      },
      {
        metric: `publish --lines ${LINES} x ~${avgBytes} B, synchronous=FULL`,
        value: Math.round(rate),
        unit: 'msg/s',
        target: '>= 150000',
        pass: rate >= 150_000,
      },
      { metric: 'publish --lines peak RSS', value: Math.round(Math.max(...rss)), unit: 'MiB' },
      {
        metric: 'publish --lines per CPU-second (info: load-independent)',
        value: Math.round(median(cpuRates)),
        unit: 'msg/s',
      },
      { metric: 'load average (1 min) during the suite', value: os.loadavg()[0], unit: '' },
      {
        metric: 'publish --lines with JSON validation (info)',
        value: Math.round(LINES / (jsonMs / 1000)),
        unit: 'msg/s',
      },
    ]
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
