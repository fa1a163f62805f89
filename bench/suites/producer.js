// The Producer API against a real broker process on loopback (auth none):
// (a) edge-mode send throughput (outbox, synchronous=FULL) with 1 caller and
//     with 64 concurrent callers (group commit: one transaction per group),
// (b) direct-mode send throughput with 64 concurrent callers (one broker batch
//     per group, acknowledged after the broker's durable commit),
// (c) latency of one edge-mode send with forward=immediate (stored, then
//     delivered and acknowledged), median and p95 over sequential sends.
// Targets are relative to a baseline measured at the same time (one-row FULL
// transactions of the bare driver), because fsync on this shared machine
// varies 50x with load; the absolute numbers are in the value column.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createProducer, createSqliteStorage } from '../../dist/index.js'
import { startBroker } from './broker.js'

const PAYLOAD = JSON.stringify({
  sensor: 'line1/temp-7',
  site: 'plant-3',
  v: 21.53,
  unit: 'C',
  status: 'ok',
  note: 'steady-state telemetry sample from the line-1 cabinet, padded to ~200 bytes in all',
})

const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]

/** Send `total` messages from `callers` concurrent loops; messages per second. */
async function throughput(producer, callers, total) {
  const per = Math.ceil(total / callers)
  const start = performance.now()
  await Promise.all(
    Array.from({ length: callers }, async (_, c) => {
      for (let i = 0; i < per; i++) await producer.send(`bench/c${c}`, PAYLOAD)
    }),
  )
  return (per * callers) / ((performance.now() - start) / 1000)
}

export async function run() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-bench-producer-'))
  const dataDir = path.join(dir, 'broker')
  fs.mkdirSync(dataDir)
  const broker = await startBroker(dataDir, { RMQ_BROKER_AUTH: 'none' })
  const base = (name, extra = {}) => ({
    cwd: dir,
    env: {},
    dotenv: false,
    nodeId: `bench-${name}`,
    brokerUrl: broker.url,
    storage: { path: path.join(dir, `${name}.db`), durability: 'full', maxBytes: '2GB' },
    compression: { codec: 'zstd' },
    ...extra,
  })
  const rows = []
  try {
    // Baseline: the bare driver, one message per FULL transaction (one fsync each).
    const raw = createSqliteStorage({
      path: path.join(dir, 'raw.db'),
      maxBytes: 2 ** 31,
      maxMessages: 0,
      overflow: 'reject',
      durability: 'full',
    })
    const t0 = performance.now()
    for (let i = 0; i < 2_000; i++)
      await raw.append([{ topic: 'bench/raw', payload: Buffer.from(PAYLOAD), ts: Date.now() }])
    const txMs = (performance.now() - t0) / 2_000
    await raw.close()
    rows.push({ metric: 'baseline: one FULL outbox transaction', value: txMs, unit: 'ms' })

    // (a) edge mode, forward=deferred: durable in the outbox when send resolves.
    const edge = await createProducer(base('edge'))
    const edge1 = await throughput(edge, 1, 2_000)
    const edge64 = await throughput(edge, 64, 100_000)
    await edge.close()
    rows.push(
      {
        metric: 'edge send, 1 caller (FULL)',
        value: edge1,
        unit: 'msg/s',
        target: '>= 0.7x baseline tx/s',
        pass: edge1 >= (0.7 * 1000) / txMs,
      },
      {
        metric: 'edge send, 64 concurrent callers (FULL, group commit)',
        value: edge64,
        unit: 'msg/s',
        target: '>= 10x 1 caller',
        pass: edge64 >= 10 * edge1,
      },
    )

    // (b) direct mode: acknowledged by the broker (durably committed) when send resolves.
    const direct = await createProducer(base('direct', { mode: 'direct' }))
    await throughput(direct, 64, 2_000) // warm-up: connection, codec
    const direct1 = await throughput(direct, 1, 500)
    const direct64 = await throughput(direct, 64, 50_000)
    await direct.close()
    rows.push(
      { metric: 'direct send, 1 caller', value: direct1, unit: 'msg/s' },
      {
        metric: 'direct send, 64 concurrent callers',
        value: direct64,
        unit: 'msg/s',
        target: '>= 10x 1 caller',
        pass: direct64 >= 10 * direct1,
      },
    )

    // (c) edge mode, forward=immediate: stored, then sent, before send resolves.
    const imm = await createProducer(base('immediate', { forward: 'immediate' }))
    const lat = []
    let sent = 0
    for (let i = 0; i < 200; i++) {
      const t = performance.now()
      const r = await imm.send('bench/imm', PAYLOAD)
      if (i >= 20) lat.push(performance.now() - t)
      if (r.status === 'sent') sent++
    }
    await imm.close()
    const p50 = quantile(lat, 0.5)
    const p95 = quantile(lat, 0.95)
    rows.push(
      // The issue asks for this latency to be reported, not for a target: one immediate send is an
      // outbox commit, an HTTP round trip with the broker's durable commit, and the mark-sent commit.
      { metric: 'immediate-forward send latency, median', value: p50, unit: 'ms' },
      { metric: 'immediate-forward send latency, p95', value: p95, unit: 'ms' },
      {
        metric: 'immediate-forward sends that resolved sent',
        value: `${sent} / 200`,
        unit: '',
        target: 'all',
        pass: sent === 200,
      },
    )
  } finally {
    broker.child.kill('SIGTERM')
    await new Promise((r) => broker.child.once('exit', r))
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return rows
}
