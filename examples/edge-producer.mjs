// Edge mode: every message is committed to the local outbox (SQLite,
// synchronous=FULL) before send() resolves; `rmq sync` (cron, systemd timer
// or `rmq sync --watch`) forwards it later. With RMQ_FORWARD=immediate the
// producer also tries to deliver at once and the receipt says `sent`.
//
//   npm run build && RMQ_NODE_ID=gw-1 node examples/edge-producer.mjs
//   RMQ_FORWARD=immediate RMQ_BROKER_URL=http://127.0.0.1:7878 RMQ_TOKEN=... node examples/edge-producer.mjs
//
// In your own project: import { createProducer } from 'rmq'
import { StorageFullError, ValidationError, createProducer } from '../dist/index.js'

// Configuration comes from options > RMQ_* env > .env > config file > defaults, like the CLI.
// (TypeScript, or Node 24+: `await using producer = ...` closes it at the end of the scope.)
const producer = await createProducer({ mode: 'edge' })

// Concurrent sends share one durable transaction (group commit); each gets its own receipt.
const readings = Array.from({ length: 8 }, (_, i) => ({ sensor: `t${i}`, c: 20 + i / 10 }))
const receipts = await Promise.all(
  readings.map((r) =>
    producer.send(`plant/line1/${r.sensor}`, JSON.stringify(r), {
      contentType: 'application/json',
      ttl: '24h',
    }),
  ),
)
for (const r of receipts) console.log(`${r.status} ${r.id}${r.reason ? ` (${r.reason})` : ''}`)

try {
  await producer.send('plant/line1/#', 'wildcards are for consumers')
} catch (err) {
  if (err instanceof ValidationError) console.error(`rejected: ${err.message}`)
  else if (err instanceof StorageFullError) console.error(`outbox full: ${err.suggestion}`)
  else throw err
}
await producer.close() // waits for pending sends, releases the outbox
