/**
 * MQTT at both ends, the whole way (docs/mqtt.md), with real processes on
 * 127.0.0.1: devices publish QoS 1 to the gateway's Mosquitto while the
 * central broker is down; `rmq mqtt ingest` commits them to the outbox;
 * `rmq sync` fails (the outage) and later drains; `rmq mqtt forward`
 * republishes the broker's event-ordered stream to a second Mosquitto, where
 * a subscriber must see every message exactly once, in event-time order.
 */
import { afterEach, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { startBrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'
import { startMosquitto } from '../helpers/mosquitto.js'

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

const N = 10_000
const DEVICES = 4

describe('rmq mqtt ingest -> rmq sync -> rmq mqtt forward', () => {
  it('delivers 10,000 QoS 1 messages published during an outage to a second Mosquitto once, in event order', async () => {
    const edgeMqtt = await startMosquitto()
    cleanups.push(() => edgeMqtt.stop())
    const centralMqtt = await startMosquitto()
    cleanups.push(() => centralMqtt.stop())
    const edgeDir = makeTempDir('rmq-mqtt-pipe-')
    cleanups.push(edgeDir.cleanup)
    // The central broker is down: the edge points at a port where it will listen later.
    const broker0 = await startBrokerProcess({ auth: 'token' })
    cleanups.push(() => broker0.cleanup())
    const brokerPort = broker0.port
    const nodeToken = await broker0.createToken('gw-mqtt')
    const reader = await broker0.createToken('mqtt-out', {
      role: 'consumer',
      topics: 'site/#',
      groups: 'mqtt-forward',
    })
    await broker0.stop()
    const edgeEnv = {
      RMQ_NODE_ID: 'gw-mqtt',
      RMQ_BROKER_URL: broker0.url,
      RMQ_TOKEN: nodeToken,
      RMQ_SYNC_TIMEOUT: '2s',
      RMQ_MQTT_URL: edgeMqtt.url,
      RMQ_MQTT_TOPICS: 'dev/#',
      RMQ_MQTT_TOPIC_PREFIX: 'site/',
    }
    const edge = (args: string[], timeoutMs = 120_000) =>
      runCli(args, { cwd: edgeDir.dir, env: edgeEnv, timeoutMs })

    // A first short run makes the persistent session, so Mosquitto queues for it from now on.
    const first = await edge(['mqtt', 'ingest', '--until-idle', '500ms', '--json'])
    expect(first.code, first.stderr).toBe(0)

    // Devices publish with event times interleaved across devices, each device's burst at a time.
    // Within broker.ordering.maxHoldBack (15m): an older low mark would stop holding the watermark (docs/ordering.md).
    const base = Date.now() - 300_000
    const perDevice = N / DEVICES
    for (let d = 0; d < DEVICES; d++) {
      const c = await mqtt.connectAsync(edgeMqtt.url, { protocolVersion: 5, clientId: `dev-${d}` })
      for (let i = 0; i < perDevice; i += 500) {
        const sends = []
        for (let j = i; j < i + 500; j++) {
          const ts = base + j * DEVICES * 10 + d * 10
          sends.push(
            c.publishAsync(`dev/${d}/temp`, JSON.stringify({ d, j, ts }), {
              qos: 1,
              properties: { userProperties: { ts: String(ts) }, contentType: 'application/json' },
            }),
          )
        }
        await Promise.all(sends)
      }
      await c.endAsync()
    }

    const ingested = await edge(['mqtt', 'ingest', '--until-idle', '1s', '--json'])
    expect(ingested.code, ingested.stderr).toBe(0)
    const summary = parseJson(ingested.stdout)
    expect(summary.stored).toBe(N)
    expect(summary.duplicates ?? 0).toBe(0)

    const offline = await edge(['sync'])
    expect(offline.code, 'the broker is down: sync exits 75').toBe(75)

    const broker = await startBrokerProcess({ auth: 'token', dataDir: broker0.dataDir, port: brokerPort })
    cleanups.push(() => broker.cleanup())
    const drained = await edge(['drain', '--timeout', '1m'])
    expect(drained.code, drained.stderr).toBe(0)

    // The subscriber on the central Mosquitto, then the forwarder.
    const sub = await mqtt.connectAsync(centralMqtt.url, { protocolVersion: 5, clientId: 'historian' })
    cleanups.push(() => sub.endAsync())
    const got: Array<{ d: number; j: number; ts: number; props: Record<string, unknown> }> = []
    sub.on('message', (topic, payload, packet) => {
      const m = JSON.parse(payload.toString()) as { d: number; j: number; ts: number }
      expect(topic).toBe(`out/site/dev/${m.d}/temp`)
      got.push({ ...m, props: (packet.properties?.userProperties ?? {}) as Record<string, unknown> })
    })
    await sub.subscribeAsync('out/#', { qos: 1 })
    const forwarded = await runCli(
      ['mqtt', 'forward', '--url', centralMqtt.url, '--topic-prefix', 'out/', '--until-idle', '2s', '--json'],
      {
        cwd: edgeDir.dir,
        env: { RMQ_BROKER_URL: broker.url, RMQ_TOKEN: reader, RMQ_MQTT_FORWARD_FILTER: 'site/#' },
        timeoutMs: 120_000,
      },
    )
    expect(forwarded.code, forwarded.stderr).toBe(0)
    const deadline = Date.now() + 20_000
    while (got.length < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))

    expect(got.length).toBe(N)
    const keys = new Set(got.map((m) => `${m.d}:${m.j}`))
    expect(keys.size, 'no duplicates').toBe(N)
    for (let i = 1; i < got.length; i++)
      expect(got[i].ts, `event order at ${i}`).toBeGreaterThanOrEqual(got[i - 1].ts)
    // The user properties let a receiver dedup and order on its own.
    expect(got[0].props).toMatchObject({ node: 'gw-mqtt', ts: String(got[0].ts) })
    expect(Number(got[0].props.seq)).toBeGreaterThan(0)
  }, 240_000)
})
