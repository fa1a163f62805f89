// rmq cleanup of a large store of sent messages (default 1,000,000; set
// RMQ_BENCH_CLEANUP_MESSAGES to change) while another process publishes
// continuously through the real outbox code (synchronous=FULL). Records the
// cleanup time per million messages, the file size before/after, and the
// longest publish stall during the cleanup next to the longest one of the
// same publisher just before it (the machine's own fsync noise).
import '../../dist/plugins/builtins.js'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { cleanupOutbox } from '../../dist/core/cleanup.js'
import { loadConfig } from '../../dist/core/config/load.js'
import { openOutbox } from '../../dist/core/outbox.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const N = Number(process.env.RMQ_BENCH_CLEANUP_MESSAGES ?? 1_000_000)
const DAY = 86_400_000

function maxOf(xs) {
  return xs.reduce((a, b) => Math.max(a, b), 0)
}

function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : 0
}

export async function run() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-cleanup-'))
  const env = { ...process.env, RMQ_NODE_ID: 'gw-bench', PUBLISH_PAUSE_MS: '5' }
  for (const k of Object.keys(env)) if (k.startsWith('RMQ_') && k !== 'RMQ_NODE_ID') delete env[k]
  try {
    const { config, cwd } = await loadConfig({ cwd: dir, env, dotenv: false })
    const fill = await openOutbox(config, cwd, { durability: 'normal' })
    const payload = Buffer.from(
      JSON.stringify({ t: 21.5, h: 40.2, unit: 'C', device: 'sensor-0001', seq: 0 }),
    )
    const filled = Date.now()
    for (let i = 0; i < N; i += 10_000) {
      const n = Math.min(10_000, N - i)
      const { seqs } = await fill.append(
        Array.from({ length: n }, (_, k) => ({ topic: 'plant/line1/temp', payload, ts: 1e12 + i + k })),
      )
      await fill.markSent(seqs, Date.now() - 2 * DAY)
    }
    await fill.close()
    process.stderr.write(`bench cleanup: filled ${N} sent messages in ${Date.now() - filled} ms\n`)

    const child = spawn(process.execPath, [path.join(ROOT, 'test/helpers/publisher-child.mjs')], {
      cwd: dir,
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d))
    const exited = new Promise((resolve) => child.on('close', resolve))
    while (!out.startsWith('ready\n')) await new Promise((r) => setTimeout(r, 20))
    await new Promise((r) => setTimeout(r, 3000)) // baseline: the publisher alone

    const started = Date.now()
    const r = await cleanupOutbox(config, cwd)
    const ended = Date.now()
    await new Promise((r) => setTimeout(r, 300))
    child.kill('SIGTERM')
    await exited
    const report = JSON.parse(out.slice('ready\n'.length))
    const during = report.samples.filter(([t]) => t >= started && t <= ended).map(([, ms]) => ms)
    const before = report.samples.filter(([t]) => t < started).map(([, ms]) => ms)
    const check = await openOutbox(config, cwd)
    const s = await check.stats(Date.now())
    await check.close()
    const lost = report.seqs.length - s.pending
    const perMillion = ((ended - started) / N) * 1_000_000
    const stall = maxOf(during)
    return [
      {
        metric: `cleanup time per 1M sent messages (measured on ${N}, publisher running)`,
        value: perMillion / 1000,
        unit: 's',
        target: '',
        pass: r.sentDeleted === N,
      },
      { metric: 'cleanup write transactions', value: r.transactions, unit: '', target: '' },
      { metric: 'longest cleanup transaction (work)', value: r.longestTransactionMs, unit: 'ms', target: '' },
      {
        metric: 'file size before -> after cleanup',
        value: `${(r.fileBytesBefore / 2 ** 20).toFixed(1)} -> ${(r.fileBytesAfter / 2 ** 20).toFixed(2)}`,
        unit: 'MiB',
        target: 'shrinks',
        pass: r.fileBytesAfter < r.fileBytesBefore / 10,
      },
      {
        metric: `longest publish stall during cleanup (${during.length} publishes)`,
        value: stall,
        unit: 'ms',
        target: '< 50',
        pass: stall < 50,
      },
      { metric: 'p99 publish latency during cleanup', value: quantile(during, 0.99), unit: 'ms', target: '' },
      {
        metric: `longest publish latency without cleanup (${before.length} publishes)`,
        value: maxOf(before),
        unit: 'ms',
        target: '',
      },
      {
        metric: 'publishes failed / lost',
        value: `${report.errors.length} / ${lost}`,
        unit: '',
        target: '0 / 0',
        pass: report.errors.length === 0 && lost === 0,
      },
    ]
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
