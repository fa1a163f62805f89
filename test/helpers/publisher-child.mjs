// A continuous publisher for the cleanup concurrency test and bench: stores one
// message per call through the real outbox code (synchronous=FULL) until
// SIGTERM, then prints one JSON document: every seq it was given, failures,
// and the latency of each publish with its start time.
import '../../dist/plugins/builtins.js'
import { loadConfig } from '../../dist/core/config/load.js'
import { openOutbox, publishOptionsFrom, publishRecords } from '../../dist/core/outbox.js'

const { config, cwd } = await loadConfig({ cwd: process.cwd() })
const outbox = await openOutbox(config, cwd)
const opts = publishOptionsFrom(config)
const pauseMs = Number(process.env.PUBLISH_PAUSE_MS ?? 1)
let stop = false
process.on('SIGTERM', () => {
  stop = true
})
const seqs = []
const samples = [] // [startedAt epoch ms, latency ms]
const errors = []
process.stdout.write('ready\n')
while (!stop) {
  const startedAt = Date.now()
  const t = performance.now()
  try {
    const r = await publishRecords(outbox, [{ topic: 'plant/live', payload: `{"v":${seqs.length}}` }], opts)
    samples.push([startedAt, performance.now() - t])
    seqs.push(r.receipts[0].seq)
  } catch (err) {
    errors.push(String(err?.message ?? err))
  }
  await new Promise((r) => setTimeout(r, pauseMs))
}
await outbox.close()
process.stdout.write(JSON.stringify({ seqs, samples, errors }) + '\n')
