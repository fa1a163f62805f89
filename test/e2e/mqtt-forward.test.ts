/**
 * `rmq mqtt forward` end to end: a real `rmq broker start`, edge nodes that
 * publish with the real `rmq publish --lines` and `rmq sync`, a real Mosquitto,
 * the real rmq binary forwarding, and an MQTT.js QoS 1 subscriber on that
 * Mosquitto checking what arrives (docs/mqtt.md).
 */
import type { ChildProcess } from 'node:child_process'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli, spawnCli } from '../helpers/cli.js'
import { mosquittoAvailability, startMosquitto, type Mosquitto } from '../helpers/mosquitto.js'
import { freePort } from '../helpers/producer.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Received {
  topic: string
  payload: string
  node: string
  epoch: string
  seq: number
  ts: number
  position: number
  late: string
  contentType?: string
  /** DUP flag: the MQTT broker had sent this PUBLISH to the subscriber before. */
  dup: boolean
  /** Packet identifier: a re-delivery of one stored message keeps it (MQTT 5, 4.4); a second copy gets another. */
  messageId?: number
}

/** A QoS 1 MQTT.js subscriber on `url` recording every message with its user properties. */
async function subscribe(
  url: string,
  filter: string,
  /** A persistent session that reconnects by itself (the MQTT broker queues for it while it is away). */
  persistent?: { clientId: string },
): Promise<{ got: Received[]; client: MqttClient }> {
  const { connectAsync } = await import('mqtt')
  const client = await connectAsync(
    url,
    persistent
      ? {
          protocolVersion: 5,
          clean: false,
          clientId: persistent.clientId,
          reconnectPeriod: 100,
          properties: { sessionExpiryInterval: 3600 },
        }
      : { protocolVersion: 5, clean: true, reconnectPeriod: 0 },
  )
  client.on('error', () => {}) // refused reconnects while the broker restarts
  const got: Received[] = []
  client.on('message', (topic, payload, packet) => {
    const u = (packet.properties?.userProperties ?? {}) as Record<string, string>
    got.push({
      topic,
      payload: payload.toString('utf8'),
      node: u.node,
      epoch: u.epoch,
      seq: Number(u.seq),
      ts: Number(u.ts),
      position: Number(u.position),
      late: u.late,
      contentType: packet.properties?.contentType,
      dup: packet.dup === true,
      messageId: packet.messageId,
    })
  })
  await client.subscribeAsync(filter, { qos: 1 })
  return { got, client }
}

async function waitUntil(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

const key = (r: { node: string; seq: number }) => `${r.node}:${r.seq}`

describe('rmq mqtt forward (real broker, real Mosquitto)', () => {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  beforeAll(() => {
    const a = mosquittoAvailability()
    if (!a.ok) throw new Error(a.reason)
  })

  /** A broker with token auth, a Mosquitto, a subscriber on fwd/#, and a consumer token for the forwarder. */
  async function setup(mosquittoOpts: Parameters<typeof startMosquitto>[0] = {}) {
    const broker = await startBrokerProcess({ auth: 'token' })
    cleanups.push(() => broker.cleanup())
    const mosq = await startMosquitto(mosquittoOpts)
    cleanups.push(() => mosq.stop())
    const token = await broker.createToken('forwarder', {
      role: 'consumer',
      topics: '#',
      groups: 'mqtt-forward',
    })
    const env = (extra: Record<string, string> = {}) => ({
      RMQ_BROKER_URL: broker.url,
      RMQ_TOKEN: token,
      RMQ_MQTT_URL: mosq.url,
      RMQ_MQTT_FORWARD_TOPIC_PREFIX: 'fwd/',
      ...extra,
    })
    return { broker, mosq, token, env }
  }

  /** An edge node with its own outbox dir: publish NDJSON lines at one event time, and sync. */
  async function edge(broker: BrokerProcess, name: string) {
    const dir = makeTempDir(`rmq-mqtt-fwd-${name}-`)
    cleanups.push(dir.cleanup)
    const env = { RMQ_NODE_ID: name, RMQ_BROKER_URL: broker.url, RMQ_TOKEN: await broker.createToken(name) }
    return {
      async publish(topic: string, payloads: string[], ts: number) {
        const r = await runCli(['publish', topic, '--lines', '-f', '-', '--timestamp', String(ts)], {
          cwd: dir.dir,
          env,
          input: payloads.join('\n') + '\n',
          timeoutMs: 60_000,
        })
        expect(r.code, r.stderr).toBe(0)
      },
      async sync(extra: string[] = [], extraEnv: Record<string, string> = {}) {
        const r = await runCli(['sync', '--json', ...extra], {
          cwd: dir.dir,
          env: { ...env, ...extraEnv },
          timeoutMs: 60_000,
        })
        expect(r.code, r.stderr).toBe(0)
        return parseJson(r.stdout)
      },
    }
  }

  it('forwards several thousand messages from two nodes exactly once, in event order, with user properties', async () => {
    const { broker, mosq, env } = await setup()
    const a = await edge(broker, 'gw-a')
    const b = await edge(broker, 'gw-b')
    const base = Date.now() - 60_000
    const PER = 400
    const CHUNKS = 5
    // Interleaved event times: gw-a at base + 0, 2, 4, ... s; gw-b at base + 1, 3, 5, ... s.
    for (let k = 0; k < CHUNKS; k++) {
      const lines = (n: string) => Array.from({ length: PER }, (_, i) => JSON.stringify({ n, k, i }))
      await a.publish(`plant/a/k${k}`, lines('a'), base + 2000 * k)
      await b.publish(`plant/b/k${k}`, lines('b'), base + 2000 * k + 1000)
    }
    // gw-a reports first with most of its backlog still pending (its low mark stays at its oldest
    // message), so gw-b's messages are held, not late; then both send everything.
    await a.sync(['--max-batches', '1'], { RMQ_SYNC_BATCH_SIZE: '1' })
    await b.sync()
    await a.sync()
    const total = 2 * PER * CHUNKS

    const sub = await subscribe(mosq.url, 'fwd/#')
    cleanups.push(() => sub.client.endAsync())
    const r = await runCli(['mqtt', 'forward', '--until-idle', '1s', '--json'], {
      env: env(),
      timeoutMs: 60_000,
    })
    expect(r.code, r.stderr).toBe(0)
    const summary = parseJson(r.stdout)
    expect(summary).toMatchObject({
      forwarded: total,
      group: 'mqtt-forward',
      order: 'event',
      stopped: 'idle',
    })
    await waitUntil(`${total} messages at the subscriber`, () => sub.got.length >= total)
    await sleep(300)

    // The oracle: what `rmq consume --order event` prints for the same stream.
    const consumed = await runCli(['consume', '#', '--order', 'event', '--json'], {
      env: env(),
      timeoutMs: 60_000,
    })
    expect(consumed.code, consumed.stderr).toBe(0)
    const expected = consumed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((m) => m.id)
    expect(expected.length).toBe(total)

    const got = sub.got
    expect(got.length).toBe(total)
    expect(new Set(got.map(key)).size).toBe(total)
    expect(got.map((m) => `${m.node}:${m.seq}`)).toEqual(expected.map((m) => `${m.node}:${m.seq}`))
    for (let i = 1; i < got.length; i++) expect(got[i].ts).toBeGreaterThanOrEqual(got[i - 1].ts)
    // Both nodes really interleave in the stream.
    expect(got.slice(0, PER).every((m) => m.node === 'gw-a')).toBe(true)
    expect(got.slice(PER, 2 * PER).every((m) => m.node === 'gw-b')).toBe(true)
    // Payload bytes, topic mapping and the user properties.
    for (let i = 0; i < got.length; i++) {
      const m = got[i]
      const e = expected[i]
      expect(m.topic).toBe(`fwd/${e.topic}`)
      expect(m.payload).toBe(e.payload)
      expect(m).toMatchObject({ epoch: e.epoch, ts: e.ts, position: e.position, late: 'false' })
    }
    expect(summary.committed).toBe(expected[expected.length - 1].position)

    // A second run finds nothing new: the position was committed.
    const again = await runCli(['mqtt', 'forward', '--until-idle', '300ms', '--json'], { env: env() })
    expect(again.code, again.stderr).toBe(0)
    expect(parseJson(again.stdout)).toMatchObject({ forwarded: 0 })
    await sleep(300)
    expect(sub.got.length).toBe(total)
  })

  it('SIGKILL at random points, restarted: every message arrives, duplicates only within the window per kill', async () => {
    const { broker, mosq, env } = await setup()
    const a = await edge(broker, 'gw-k')
    const N = 20_000
    const WINDOW = 200
    await a.publish(
      'plant/k/v',
      Array.from({ length: N }, (_, i) => String(i)),
      Date.now() - 60_000,
    )
    await a.sync()
    const sub = await subscribe(mosq.url, 'fwd/#')
    cleanups.push(() => sub.client.endAsync())
    const fwdEnv = env({ RMQ_MQTT_FORWARD_WINDOW: String(WINDOW) })

    const KILLS = 4
    let kills = 0
    for (let k = 0; k < KILLS; k++) {
      const before = sub.got.length
      const child: ChildProcess = spawnCli(['mqtt', 'forward'], { env: fwdEnv })
      let stderr = ''
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
      const exited = new Promise<void>((r) => child.once('exit', () => r()))
      // Kill once a random number (100..1500) of new messages arrived: mid-stream, PUBACKs in flight.
      const target = before + 100 + Math.floor(Math.random() * 1400)
      await waitUntil(`message ${target} (stderr: ${stderr})`, () => sub.got.length >= target, 30_000)
      child.kill('SIGKILL')
      await exited
      kills++
    }
    const r = await runCli(['mqtt', 'forward', '--until-idle', '1s', '--json'], {
      env: fwdEnv,
      timeoutMs: 60_000,
    })
    expect(r.code, r.stderr).toBe(0)
    await sleep(500)

    const seen = new Map<string, number>()
    for (const m of sub.got) seen.set(key(m), (seen.get(key(m)) ?? 0) + 1)
    // None lost.
    for (let seq = 1; seq <= N; seq++) expect(seen.has(`gw-k:${seq}`), `gw-k:${seq}`).toBe(true)
    expect(seen.size).toBe(N)
    // Duplicates: recognizable by node+seq, at most the window per kill (mqtt.forward.window bounds the
    // messages published past the committed position, acknowledged or not).
    const duplicates = sub.got.length - N
    expect(duplicates).toBeLessThanOrEqual(kills * WINDOW)
    // Every re-sent message is one the previous run had sent last: it repeats a tail, in order.
    const firstSeen = new Map<string, number>()
    sub.got.forEach((m, i) => {
      if (!firstSeen.has(key(m))) firstSeen.set(key(m), i)
    })
    const firsts = sub.got.filter((m, i) => firstSeen.get(key(m)) === i).map((m) => m.seq)
    expect(firsts).toEqual(Array.from({ length: N }, (_, i) => i + 1))
  }, 120_000)

  it('resident mode: messages synced later are forwarded without restart; SIGTERM exits 0 with the position committed', async () => {
    const { broker, mosq, env } = await setup()
    const a = await edge(broker, 'gw-r')
    const sub = await subscribe(mosq.url, 'fwd/#')
    cleanups.push(() => sub.client.endAsync())
    const child = spawnCli(['mqtt', 'forward', '--json'], { env: env() })
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
    cleanups.push(() => child.kill('SIGKILL'))
    await waitUntil('the forwarder to connect', () => stderr.includes('connected to'), 20_000)

    for (let round = 1; round <= 3; round++) {
      await a.publish(
        `plant/r/${round}`,
        Array.from({ length: 50 }, (_, i) => `${round}-${i}`),
        Date.now(),
      )
      await a.sync()
      await waitUntil(`round ${round} (stderr: ${stderr})`, () => sub.got.length >= 50 * round, 20_000)
    }
    await sleep(300)
    child.kill('SIGTERM')
    expect(await exited, stderr).toBe(0)
    const summary = parseJson(stdout)
    expect(summary).toMatchObject({ forwarded: 150, stopped: 'signal' })
    expect(sub.got.length).toBe(150)
    expect(sub.got.map((m) => m.payload)).toEqual(
      [1, 2, 3].flatMap((r) => Array.from({ length: 50 }, (_, i) => `${r}-${i}`)),
    )
    expect(summary.committed).toBe(sub.got[149].position)
    // Committed: a new run forwards nothing.
    const again = await runCli(['mqtt', 'forward', '--until-idle', '300ms', '--json'], { env: env() })
    expect(again.code, again.stderr).toBe(0)
    expect(parseJson(again.stdout)).toMatchObject({ forwarded: 0, committed: summary.committed })
  })

  it('a lost MQTT connection: --until-idle exits 69 naming the URL; resident reconnects and resumes from the committed position', async () => {
    const { broker, mosq, env } = await setup({ persistence: true })
    const a = await edge(broker, 'gw-l')
    const N = 20_000
    const WINDOW = 300
    await a.publish(
      'plant/l/v',
      Array.from({ length: N }, (_, i) => String(i)),
      Date.now() - 60_000,
    )
    await a.sync()
    const sub = await subscribe(mosq.url, 'fwd/#', { clientId: 'lost-sub' })
    cleanups.push(() => sub.client.endAsync(true))
    const fwdEnv = env({ RMQ_MQTT_FORWARD_WINDOW: String(WINDOW) })
    let current: Mosquitto = mosq
    cleanups.push(() => current.stop())

    // --until-idle: the MQTT broker goes away mid-stream.
    const once = spawnCli(['mqtt', 'forward', '--until-idle', '5s'], { env: fwdEnv })
    let onceErr = ''
    once.stderr!.setEncoding('utf8').on('data', (d: string) => (onceErr += d))
    const onceExit = new Promise<number | null>((r) => once.once('exit', (code) => r(code)))
    await waitUntil('2000 messages', () => sub.got.length >= 2000)
    await current.stop()
    expect(await onceExit, onceErr).toBe(69)
    expect(onceErr).toContain(`lost the connection to the MQTT broker at ${mosq.url}`)
    current = await current.restart()

    // Resident: the MQTT broker restarts mid-stream; the forwarder reconnects by itself.
    const child = spawnCli(['mqtt', 'forward', '--json'], { env: fwdEnv })
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
    cleanups.push(() => child.kill('SIGKILL'))
    const unique = () => new Set(sub.got.map(key)).size
    await waitUntil('8000 messages', () => unique() >= 8000)
    await current.stop()
    await sleep(500)
    current = await current.restart()
    await waitUntil(`all ${N} messages (stderr: ${stderr})`, () => unique() >= N, 60_000)
    await sleep(300)
    child.kill('SIGTERM')
    expect(await exited, stderr).toBe(0)
    const summary = parseJson(stdout)
    expect(summary.reconnects).toBeGreaterThanOrEqual(1)
    expect(stderr).toContain('reconnecting (committed position')
    expect(unique()).toBe(N)
    // Two interruptions: the forwarder re-sends at most the window for each. A re-sent message is a
    // second copy in Mosquitto, delivered under another packet identifier. Mosquitto's own re-deliveries
    // of what it had in flight to the subscriber's session (DUP, the same identifier; hundreds after a
    // restart from its persistence file) are not the forwarder's and are not bounded by its window.
    const copies = new Set(sub.got.map((m) => `${key(m)}#${m.messageId}`)).size
    const counts = JSON.stringify({
      received: sub.got.length,
      copies,
      redelivered: sub.got.filter((m) => m.dup).length,
    })
    expect(copies - N, counts).toBeLessThanOrEqual(2 * WINDOW)
    const firstSeen = new Set<string>()
    const firsts: number[] = []
    for (const m of sub.got) {
      if (firstSeen.has(key(m))) continue
      firstSeen.add(key(m))
      firsts.push(m.seq)
    }
    expect(firsts).toEqual(Array.from({ length: N }, (_, i) => i + 1))
  }, 120_000)

  it('bad input: unreachable MQTT broker 69 (URL named), bad MQTT credentials 78, bad rmq token 78, rmq broker unreachable 69', async () => {
    const { env } = await setup()
    const port = await freePort()
    const down = await runCli(['mqtt', 'forward', '--until-idle', '1s'], {
      env: env({ RMQ_MQTT_URL: `mqtt://127.0.0.1:${port}`, RMQ_MQTT_CONNECT_TIMEOUT: '2s' }),
    })
    expect(down.code, down.stderr).toBe(69)
    expect(down.stderr).toContain(`mqtt://127.0.0.1:${port}`)

    const locked: Mosquitto = await startMosquitto({ users: { fwd: 'right' } })
    cleanups.push(() => locked.stop())
    const creds = await runCli(['mqtt', 'forward', '--until-idle', '1s'], {
      env: env({ RMQ_MQTT_URL: locked.url, RMQ_MQTT_USERNAME: 'fwd', RMQ_MQTT_PASSWORD: 'wrong' }),
    })
    expect(creds.code, creds.stderr).toBe(78)
    expect(creds.stderr).toMatch(/bad user name or password|not authorized/)
    expect(creds.stderr).toContain(locked.url)

    const token = await runCli(['mqtt', 'forward', '--until-idle', '1s'], {
      env: env({ RMQ_TOKEN: 'rmq_bogus' }),
    })
    expect(token.code, token.stderr).toBe(78)
    expect(token.stderr).toContain('rejected the token')

    const rmqDown = await runCli(['mqtt', 'forward', '--until-idle', '1s'], {
      env: env({ RMQ_BROKER_URL: `http://127.0.0.1:${port}` }),
    })
    expect(rmqDown.code, rmqDown.stderr).toBe(69)
    expect(rmqDown.stderr).toContain(`http://127.0.0.1:${port}`)
  })

  it("the receiving broker's limits: Mosquitto's default Receive Maximum of 20, a packet over its Maximum Packet Size (65, nothing past it committed), a refused topic (PUBACK 0x87: 78)", async () => {
    // max_inflight_messages 20 is Mosquitto's default; it announces it as its Receive Maximum.
    const { broker, mosq, env } = await setup({ extra: ['max_inflight_messages 20', 'max_packet_size 4096'] })
    const a = await edge(broker, 'gw-l')
    const base = Date.now() - 60_000
    const SMALL = 2000
    await a.publish(
      'plant/l/small',
      Array.from({ length: SMALL }, (_, i) => JSON.stringify({ i })),
      base,
    )
    await a.publish('plant/l/big', [JSON.stringify({ big: 'x'.repeat(6000) })], base + 1000)
    await a.publish(
      'plant/l/after',
      Array.from({ length: 10 }, (_, i) => JSON.stringify({ after: i })),
      base + 2000,
    )
    await a.sync()
    const sub = await subscribe(mosq.url, 'fwd/#')
    cleanups.push(() => sub.client.endAsync())
    const limited = await runCli(['mqtt', 'forward', '--until-idle', '1s'], { env: env(), timeoutMs: 60_000 })
    expect(limited.code, limited.stderr).toBe(65)
    expect(limited.stderr).toContain('(window 10000, 20 in flight)')
    expect(limited.stderr).toMatch(
      /gw-l:2001 on fwd\/plant\/l\/big is a \d+-byte MQTT packet; the broker .* accepts at most 4096/,
    )
    // The forwarder let the PUBACKs in flight arrive before it stopped: all of them were delivered.
    await waitUntil('the small messages', () => sub.got.length >= SMALL, 10_000)
    await sleep(300)
    expect(sub.got.map((m) => m.seq)).toEqual(Array.from({ length: SMALL }, (_, i) => i + 1))

    // A receiver without the limit, same group: it resumes at the big message, none skipped.
    const open = await startMosquitto()
    cleanups.push(() => open.stop())
    const sub2 = await subscribe(open.url, 'fwd/#')
    cleanups.push(() => sub2.client.endAsync())
    const resumed = await runCli(['mqtt', 'forward', '--until-idle', '1s', '--json'], {
      env: env({ RMQ_MQTT_URL: open.url }),
      timeoutMs: 60_000,
    })
    expect(resumed.code, resumed.stderr).toBe(0)
    await waitUntil('the big message and the rest', () => sub2.got.some((m) => m.seq === SMALL + 11))
    const firsts = [...new Set(sub2.got.map((m) => m.seq))]
    // A re-sent tail of small ones first (the window past the committed position), then 2001..2011 in order.
    expect(firsts.slice(firsts.indexOf(SMALL + 1))).toEqual(
      Array.from({ length: 11 }, (_, i) => SMALL + 1 + i),
    )
    expect(firsts.indexOf(SMALL + 1)).toBeLessThanOrEqual(10_000)
    expect(sub2.got.find((m) => m.seq === SMALL + 1)!.payload.length).toBeGreaterThan(6000)

    // An ACL that lets this user publish under fwd/plant/ok/ only: the first other topic gets PUBACK 0x87.
    const acl = makeTempDir('rmq-mqtt-acl-')
    cleanups.push(acl.cleanup)
    const aclFile = `${acl.dir}/acl`
    const { writeFileSync } = await import('node:fs')
    writeFileSync(aclFile, 'user fwd\ntopic write fwd/plant/ok/#\n')
    const guarded = await startMosquitto({ users: { fwd: 'pw' }, extra: [`acl_file ${aclFile}`] })
    cleanups.push(() => guarded.stop())
    const denied = await runCli(['mqtt', 'forward', '--until-idle', '1s', '--group', 'acl'], {
      env: env({
        RMQ_TOKEN: await broker.createToken('acl-forwarder', {
          role: 'consumer',
          topics: '#',
          groups: 'acl',
        }),
        RMQ_MQTT_URL: guarded.url,
        RMQ_MQTT_USERNAME: 'fwd',
        RMQ_MQTT_PASSWORD: 'pw',
      }),
      timeoutMs: 60_000,
    })
    expect(denied.code, denied.stderr).toBe(78)
    expect(denied.stderr).toMatch(
      /refused gw-l:1 on fwd\/plant\/l\/small \(PUBACK reason 0x87\): not authorized/,
    )
  }, 120_000)
})
