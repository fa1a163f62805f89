// The edge side of the sync replay bench (bench/suites/sync.js), in processes of its own:
//   node bench/sync-edge.js fill  '<json>'   writes the backlog into the outbox, prints {payloadBytes}
//   node bench/sync-edge.js sync  '<json>'   one `rmq sync` run of at most maxBatches batches, prints {messages}
//   node bench/sync-edge.js drain '<json>'   forwards it all, prints {seconds, cpuSeconds, messages, bytesWire}
// The drain runs in a fresh process, as `rmq sync` or `rmq drain` would: in the bench's own process it
// would also collect the garbage of writing the backlog and of the suites before it (about 7% slower,
// measured over 10 paired replays).
import '../dist/plugins/builtins.js'
import { loadConfig } from '../dist/core/config/load.js'
import { openOutbox } from '../dist/core/outbox.js'
import { drain, syncOnce } from '../dist/core/sync.js'

const [mode, arg] = process.argv.slice(2)
const { work, options, messages, maxBatches } = JSON.parse(arg)

function telemetry(i, t0) {
  return JSON.stringify({
    device: `sensor-${String(i % 64).padStart(3, '0')}`,
    site: 'plant-7',
    line: `line${i % 4}`,
    ts: t0 + i * 100,
    temperature: +(20 + (i % 97) / 10).toFixed(1),
    humidity: +(40 + (i % 53) / 5).toFixed(1),
    pressure: +(1.0 + (i % 11) / 1000).toFixed(3),
    vibration: +((i % 37) / 1000).toFixed(3),
    battery: 100 - (i % 40),
    rssi: -50 - (i % 30),
    status: i % 500 === 0 ? 'warn' : 'ok',
    fw: '2.4.1',
  })
}

const { config } = await loadConfig({ cwd: work, env: {}, dotenv: false, options })
const driver = await openOutbox(config, work)
try {
  if (mode === 'fill') {
    const t0 = Date.now() - messages * 100
    let payloadBytes = 0
    for (let start = 0; start < messages; start += 10_000) {
      const batch = []
      for (let i = start; i < Math.min(messages, start + 10_000); i++) {
        const payload = Buffer.from(telemetry(i, t0))
        payloadBytes += payload.length
        batch.push({
          topic: `plant-7/line${i % 4}/telemetry`,
          payload,
          ts: t0 + i * 100,
          contentType: 'application/json',
        })
      }
      await driver.append(batch)
    }
    console.log(JSON.stringify({ payloadBytes }))
  } else if (mode === 'sync') {
    const result = await syncOnce({ driver, config, cwd: work }, { maxBatches })
    console.log(JSON.stringify({ messages: result.messages }))
  } else if (mode === 'drain') {
    const started = process.hrtime.bigint()
    const cpu = process.cpuUsage()
    const result = await drain({ driver, config, cwd: work }, { timeout: 300_000 })
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    const { user, system } = process.cpuUsage(cpu)
    console.log(
      JSON.stringify({
        seconds,
        cpuSeconds: (user + system) / 1e6,
        messages: result.messages,
        bytesWire: result.bytesWire,
      }),
    )
  } else throw new Error(`unknown mode ${mode}`)
} finally {
  await driver.close()
}
