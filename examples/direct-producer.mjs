// Direct mode: messages go straight to the broker; send() resolves `sent`
// once the broker has durably committed them, and rejects with a typed error
// otherwise. Nothing is stored locally: the caller decides what to do.
//
//   npm run build && RMQ_MODE=direct RMQ_NODE_ID=app-1 RMQ_BROKER_URL=http://127.0.0.1:7878 \
//     RMQ_TOKEN=... node examples/direct-producer.mjs
//
// In your own project: import { createProducer } from 'rmq'
import {
  BrokerUnavailableError,
  ConfigError,
  RejectedError,
  TimeoutError,
  ValidationError,
  createProducer,
} from '../dist/index.js'

// The same calls as in edge mode; only `mode` differs (or RMQ_MODE=direct).
const producer = await createProducer({ mode: 'direct', retries: 3 })
try {
  const r = await producer.send('orders/created', JSON.stringify({ order: 4711 }), {
    contentType: 'application/json',
    priority: 7,
  })
  console.log(`${r.status} ${r.id}`)
  const many = await producer.sendMany([
    { topic: 'orders/line', payload: 'a' },
    { topic: 'orders/line', payload: 'b' },
  ])
  console.log(`${many.length} more ${many[0].status}`)
} catch (err) {
  if (err instanceof TimeoutError)
    console.error(`no answer in time (retried with the same ids): ${err.message}`)
  else if (err instanceof BrokerUnavailableError) console.error(`broker unavailable: ${err.message}`)
  else if (err instanceof RejectedError) console.error(`broker refused it: ${err.message}`)
  else if (err instanceof ConfigError)
    console.error(`configuration: ${err.message}\n  fix: ${err.suggestion}`)
  else if (err instanceof ValidationError) console.error(`bad message: ${err.message}`)
  else throw err
  process.exitCode = err.exitCode ?? 1
} finally {
  await producer.close()
}
