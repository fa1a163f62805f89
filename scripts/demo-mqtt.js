// The demo's optional MQTT act (scripts/demo.js runs it when Debian's
// mosquitto is installed): devices publish to the gateway's Mosquitto while
// the central broker is down, `rmq mqtt ingest` commits their messages to the
// outbox, `rmq sync` fails and later drains, and `rmq mqtt forward`
// republishes the broker's stream to a second Mosquitto, where a historian
// subscriber gets every reading once, in the order it was generated.
// Gateway recipe in words: docs/mqtt.md.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** Where Debian's mosquitto is, or undefined (the act is then skipped, and said so). */
export function mosquittoPath() {
  return ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => fs.existsSync(p))
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * ctx: { rmq, must, show, step, startBroker, stopBroker, brokerEnv, brokerDir, edgeEnv, baseEnv, brokerUrl, first }
 * (the demo's own helpers; `first` is the number of the act's first step).
 */
export async function mqttAct(ctx) {
  const { rmq, must, show, step, brokerEnv, brokerDir, edgeEnv, baseEnv, brokerUrl } = ctx
  const { default: mqtt } = await import('mqtt')
  const { startMosquitto } = await import(path.join(root, 'dist/testing/mosquitto.js'))
  const gateway = await startMosquitto()
  const central = await startMosquitto()
  let n = ctx.first
  try {
    const env = {
      ...edgeEnv,
      RMQ_MQTT_URL: gateway.url,
      RMQ_MQTT_TOPICS: 'line4/#',
      RMQ_MQTT_TOPIC_PREFIX: 'plant/',
    }
    step(n++, `MQTT: the gateway's Mosquitto (${gateway.url}) takes the devices' messages; rmq ingests them.`)
    // A first short run opens rmq's persistent session: Mosquitto queues QoS 1 messages for it between runs.
    must(await rmq(['mqtt', 'ingest', '--until-idle', '300ms'], { env }), 'mqtt ingest (session)')
    await ctx.stopBroker()
    show('the central broker is down again (an outage)')
    const start = Date.now() - 30_000
    const devices = ['press', 'oven', 'belt']
    for (const [d, name] of devices.entries()) {
      const c = await mqtt.connectAsync(gateway.url, { protocolVersion: 5, clientId: `demo-${name}` })
      const sends = []
      for (let i = 0; i < 100; i++) {
        // Interleaved event times: each device reports its own clock in the MQTT 5 user property `ts`.
        const ts = start + i * 300 + d * 100
        sends.push(
          c.publishAsync(`line4/${name}/temp`, JSON.stringify({ c: 20 + (i % 10) / 10 }), {
            qos: 1,
            properties: { userProperties: { ts: String(ts) }, contentType: 'application/json' },
          }),
        )
      }
      await Promise.all(sends)
      await c.endAsync()
    }
    show('3 devices published 100 readings each with QoS 1 (mosquitto_pub or any MQTT client would do)')
    const ingest = must(await rmq(['mqtt', 'ingest', '--until-idle', '1s'], { env }), 'mqtt ingest')
    show(`$ rmq mqtt ingest --until-idle 1s   ->  ${ingest.stdout.trim().split('\n').pop()}`)
    const failed = await rmq(['sync'], { env })
    show(`$ rmq sync   ->  exit ${failed.code} (the broker is down; nothing lost)`)

    step(n++, 'The broker is back: drain, then forward its event-ordered stream to the central Mosquitto.')
    await ctx.startBroker()
    must(await rmq(['drain', '--timeout', '1m'], { env }), 'drain')
    show('$ rmq drain   ->  done')
    const token = must(
      await rmq(
        [
          'broker',
          'token',
          'create',
          'historian-bridge',
          '--role',
          'consumer',
          '--topics',
          'plant/line4/#',
          '--groups',
          'mqtt-forward',
        ],
        { env: brokerEnv, cwd: brokerDir },
      ),
      'token create historian-bridge',
    ).stdout.trim()
    const sub = await mqtt.connectAsync(central.url, { protocolVersion: 5, clientId: 'demo-historian' })
    const got = []
    sub.on('message', (topic, payload, packet) =>
      got.push({ topic, payload: payload.toString(), ts: Number(packet.properties?.userProperties?.ts) }),
    )
    await sub.subscribeAsync('historian/#', { qos: 1 })
    const fwd = must(
      await rmq(
        ['mqtt', 'forward', '--url', central.url, '--topic-prefix', 'historian/', '--until-idle', '1s'],
        {
          env: {
            ...baseEnv,
            RMQ_BROKER_URL: brokerUrl,
            RMQ_TOKEN: token,
            RMQ_MQTT_FORWARD_FILTER: 'plant/line4/#',
          },
        },
      ),
      'mqtt forward',
    )
    show(
      `$ rmq mqtt forward --url ${central.url} --topic-prefix historian/ --until-idle 1s   ->  ${fwd.stdout.trim().split('\n').pop()}`,
    )
    for (let t = 0; t < 100 && got.length < 300; t++) await sleep(50)
    await sub.endAsync()
    for (const m of got.slice(0, 4))
      show(`${new Date(m.ts).toISOString()}  ${m.topic.padEnd(34)} ${m.payload}`)
    show(`... ${got.length} messages at the historian`)
    const inOrder = got.every((m, i) => i === 0 || got[i - 1].ts <= m.ts)
    const unique = new Set(got.map((m) => `${m.topic}|${m.ts}`)).size === got.length
    show(
      `MQTT in event-time order: ${inOrder ? 'yes' : 'NO'}; duplicates: ${unique ? 'none' : 'FOUND'}; expected 300`,
    )
    if (got.length !== 300 || !inOrder || !unique)
      throw new Error('the historian did not get every reading once, in order')
  } finally {
    await gateway.stop()
    await central.stop()
  }
  return n
}
