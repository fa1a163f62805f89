/**
 * `rmq mqtt ingest` end to end: a real Mosquitto on 127.0.0.1, MQTT.js
 * publishers (QoS 1) in this process, the real `rmq` binary, real outbox
 * files read back with the driver. SIGKILL at random points, timer mode,
 * bad input and a full outbox.
 */
import type { ChildProcess } from 'node:child_process'
import { afterEach, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { loadConfig } from '../../src/core/config/load.js'
import { openOutbox } from '../../src/core/outbox.js'
import type { BrowsedMessage } from '../../src/core/storage/driver.js'
import { startBrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli, spawnCli } from '../helpers/cli.js'
import { mosquittoAvailability, startMosquitto, type Mosquitto } from '../helpers/mosquitto.js'
import { freePort } from '../helpers/producer.js'

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function mosquitto(opts: Parameters<typeof startMosquitto>[0] = {}): Promise<Mosquitto> {
  const a = mosquittoAvailability()
  expect(a.ok, a.reason).toBe(true)
  const m = await startMosquitto(opts)
  cleanups.push(() => m.stop())
  return m
}

/** An edge node with its own outbox directory, ingesting from `url`. */
function edge(url: string, env: Record<string, string> = {}) {
  const tmp = makeTempDir('rmq-mqtt-ingest-')
  cleanups.push(tmp.cleanup)
  const base = { RMQ_NODE_ID: 'gw-mqtt', RMQ_MQTT_URL: url, RMQ_MQTT_CONNECT_TIMEOUT: '3s', ...env }
  return {
    dir: tmp.dir,
    env: base,
    run: (args: string[], extra: Record<string, string> = {}) =>
      runCli(args, { cwd: tmp.dir, env: { ...base, ...extra }, timeoutMs: 60_000 }),
    /** `rmq mqtt ingest` resident (or with args), resolved once it is subscribed. */
    start(args: string[] = [], extra: Record<string, string> = {}) {
      const child = spawnCli(['mqtt', 'ingest', ...args], { cwd: tmp.dir, env: { ...base, ...extra } })
      return ingestProcess(child)
    },
    /** Every message stored, by seq. */
    async messages(): Promise<BrowsedMessage[]> {
      const { config } = await loadConfig({ cwd: tmp.dir, env: base, dotenv: false })
      const store = await openOutbox(config, tmp.dir, { readOnly: true })
      try {
        const out: BrowsedMessage[] = []
        for (let i = 0; i < 1000; i++) {
          const page = await store.browse({
            status: 'all',
            order: 'asc',
            limit: 5000,
            afterSeq: out.length ? out[out.length - 1].seq : undefined,
            now: Date.now(),
          })
          if (page.length === 0) break
          out.push(...page)
        }
        return out
      } finally {
        await store.close()
      }
    },
  }
}

function ingestProcess(child: ChildProcess) {
  let stderr = ''
  let stdout = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  const connected = new Promise<void>((resolve, reject) => {
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d
      if (/connected to /.test(stderr)) resolve()
    })
    child.once('close', () => reject(new Error(`ingest exited before it connected: ${stderr}`)))
  })
  connected.catch(() => {})
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  )
  const kill = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    return exited
  }
  cleanups.push(() => kill('SIGKILL'))
  return { child, connected, exited, kill, stderr: () => stderr, stdout: () => stdout }
}

/** Payload ids of `messages`, with how often each is stored. */
function idCounts(messages: BrowsedMessage[]): Map<string, number> {
  const counts = new Map<string, number>()
  for (const m of messages) {
    const id = (JSON.parse(m.payload.toString('utf8')) as { id: string }).id
    counts.set(id, (counts.get(id) ?? 0) + 1)
  }
  return counts
}

/** A QoS 1 MQTT.js publisher: publishes `{id}` payloads; returns the ids the broker acknowledged. */
async function publish(
  url: string,
  name: string,
  opts: { count: number; topic?: string; burst?: number; pauseMs?: number; until?: () => boolean },
): Promise<string[]> {
  const c = await mqtt.connectAsync(url, { clientId: `pub-${name}`, protocolVersion: 5, reconnectPeriod: 0 })
  const acked: string[] = []
  const burst = opts.burst ?? 50
  try {
    for (let i = 0; i < opts.count && !(opts.until?.() ?? false); i += burst) {
      const ids = Array.from({ length: Math.min(burst, opts.count - i) }, (_, k) => `${name}-${i + k}`)
      await Promise.all(
        ids.map((id) =>
          c
            .publishAsync(opts.topic ?? `dev/${name}/t`, JSON.stringify({ id }), { qos: 1 })
            .then(() => acked.push(id)),
        ),
      )
      if (opts.pauseMs) await sleep(opts.pauseMs)
    }
  } finally {
    await c.endAsync()
  }
  return acked
}

describe('rmq mqtt ingest', () => {
  it('SIGKILL at random points while publishers run: every acknowledged message stored exactly once', async () => {
    const m = await mosquitto()
    const node = edge(m.url, { RMQ_MQTT_TOPICS: 'dev/#' })
    let ing = node.start()
    await ing.connected
    let kills = 0
    const enough = () => kills >= 3
    // Bounded: at most 20,000 messages each, and they stop once the kills are done.
    const publishers = Promise.all(
      ['a', 'b'].map((name) =>
        publish(m.url, name, { count: 20_000, burst: 50, pauseMs: 10, until: enough }),
      ),
    )
    for (let round = 0; round < 3; round++) {
      await sleep(150 + Math.floor(Math.random() * 600))
      const r = await ing.kill('SIGKILL')
      expect(r.signal).toBe('SIGKILL')
      kills++
      ing = node.start()
      await ing.connected
    }
    const acked = (await publishers).flat()
    expect(acked.length).toBeGreaterThan(2_000)
    // The resident run stops on SIGTERM (exit 0); a timer-mode run drains what is left.
    await sleep(300)
    expect((await ing.kill('SIGTERM')).code, ing.stderr()).toBe(0)
    const last = await node.run(['mqtt', 'ingest', '--until-idle', '1s', '--json'])
    expect(last.code, last.stderr).toBe(0)

    const counts = idCounts(await node.messages())
    const missing = acked.filter((id) => !counts.has(id))
    const twice = [...counts].filter(([, n]) => n > 1).map(([id]) => id)
    expect(missing).toEqual([])
    expect(twice).toEqual([])
    expect(counts.size).toBe(acked.length)
  }, 120_000)

  it('a crash after the commit and before the PUBACKs: the redelivery (DUP) is recognised, not stored twice', async () => {
    const m = await mosquitto()
    const node = edge(m.url, { RMQ_MQTT_TOPICS: 'dev/#', RMQ_MQTT_BATCH_SIZE: '50' })
    expect((await node.run(['mqtt', 'ingest', '--until-idle', '500ms'])).code).toBe(0)
    const acked = await publish(m.url, 'd', { count: 500 })
    const crashed = await node.run(['mqtt', 'ingest', '--until-idle', '1s'], {
      RMQ_FAILPOINTS: 'mqtt.ingest.after-commit-before-puback=crash@3',
    })
    expect(crashed.signal).toBe('SIGKILL')
    const storedBefore = (await node.messages()).length
    expect(storedBefore).toBeGreaterThan(0)
    const r = await node.run(['mqtt', 'ingest', '--until-idle', '1s', '--json'])
    expect(r.code, r.stderr).toBe(0)
    const s = parseJson(r.stdout)
    // The third group was stored and never acknowledged: all of it comes back as duplicates.
    expect(s.duplicates).toBeGreaterThan(0)
    expect(s.stored + storedBefore).toBe(500)
    const counts = idCounts(await node.messages())
    expect([...counts.values()].every((n) => n === 1)).toBe(true)
    expect(acked.filter((id) => !counts.has(id))).toEqual([])
  }, 60_000)

  it('resident: reconnects when the MQTT broker restarts and loses nothing; --until-idle exits 69 instead', async () => {
    const m = await mosquitto({ persistence: true })
    const node = edge(m.url, { RMQ_MQTT_TOPICS: 'dev/#' })
    const ing = node.start()
    await ing.connected
    const acked = await publish(m.url, 'x', { count: 500 })
    await sleep(300)
    await m.stop()
    const m2 = await m.restart()
    cleanups.push(() => m2.stop())
    for (let i = 0; i < 100 && !/reconnected to/.test(ing.stderr()); i++) await sleep(100)
    expect(ing.stderr()).toMatch(/lost the connection to the MQTT broker .*reconnecting/)
    expect(ing.stderr()).toMatch(/reconnected to .*session resumed/)
    acked.push(...(await publish(m2.url, 'y', { count: 500 })))
    await sleep(500)
    expect((await ing.kill('SIGTERM')).code, ing.stderr()).toBe(0)
    expect(ing.stdout()).toMatch(/1000 received, 1000 stored .*1 reconnect/)
    const counts = idCounts(await node.messages())
    expect([...counts.keys()].sort()).toEqual([...acked].sort())
    expect([...counts.values()].every((n) => n === 1)).toBe(true)

    const timer = node.start(['--until-idle', '30s'])
    await timer.connected
    await m2.stop()
    const r = await timer.exited
    expect(r.code, timer.stderr()).toBe(69)
    expect(timer.stderr()).toMatch(
      /lost the connection to the MQTT broker mqtt:\/\/127\.0\.0\.1:\d+ \(--until-idle\)/,
    )
  }, 60_000)

  it('timer mode: three --until-idle runs with publishing in between lose nothing (persistent session)', async () => {
    const m = await mosquitto()
    const node = edge(m.url, { RMQ_MQTT_TOPICS: 'dev/#' })
    const first = await node.run(['mqtt', 'ingest', '--until-idle', '1s', '--json'])
    expect(first.code, first.stderr).toBe(0)
    expect(first.stderr).toMatch(/new session/)
    const runs = []
    const acked: string[] = []
    for (const name of ['r1', 'r2', 'r3']) {
      // Published while no rmq is connected: the broker queues them for the session.
      acked.push(...(await publish(m.url, name, { count: 700 })))
      const r = await node.run(['mqtt', 'ingest', '--until-idle', '1s', '--json'])
      expect(r.code, r.stderr).toBe(0)
      expect(r.stderr).toMatch(/session resumed/)
      runs.push(parseJson(r.stdout))
    }
    expect(runs.map((s) => [s.received, s.stored, s.duplicates, s.stoppedBy])).toEqual([
      [700, 700, 0, 'idle'],
      [700, 700, 0, 'idle'],
      [700, 700, 0, 'idle'],
    ])
    const stored = await node.messages()
    expect(stored.map((s) => (JSON.parse(s.payload.toString()) as { id: string }).id)).toEqual(acked)
    expect(stored[0].headers).toMatchObject({ 'mqtt-client': 'rmq-ingest-gw-mqtt' })
  }, 60_000)

  it('an unreachable MQTT broker exits 69 naming the URL; refused credentials exit 78', async () => {
    const port = await freePort()
    const down = edge(`mqtt://127.0.0.1:${port}`)
    const r = await down.run(['mqtt', 'ingest', '--until-idle', '1s'])
    expect(r.code, r.stderr).toBe(69)
    expect(r.stderr).toContain(`mqtt://127.0.0.1:${port}`)

    const m = await mosquitto({ users: { gw: 'right' } })
    const bad = edge(m.url, { RMQ_MQTT_USERNAME: 'gw', RMQ_MQTT_PASSWORD: 'wrong' })
    const refused = await bad.run(['mqtt', 'ingest', '--until-idle', '1s'])
    expect(refused.code, refused.stderr).toBe(78)
    expect(refused.stderr).toMatch(/refused the connection: (bad user name or password|not authorized)/)
    expect(refused.stderr).toContain(m.url)
    const ok = await bad.run(['mqtt', 'ingest', '--until-idle', '1s'], { RMQ_MQTT_PASSWORD: 'right' })
    expect(ok.code, ok.stderr).toBe(0)
  }, 60_000)

  it('--ts-field: a non-JSON payload is stored with its arrival time and counted, or refused under reject', async () => {
    const m = await mosquitto()
    for (const policy of ['arrival', 'reject'] as const) {
      const node = edge(m.url, { RMQ_MQTT_ON_BAD_TIMESTAMP: policy, RMQ_MQTT_CLIENT_ID: `ts-${policy}` })
      const args = [
        'mqtt',
        'ingest',
        '--topic',
        `ts/${policy}/#`,
        '--ts-field',
        'ts',
        '--until-idle',
        '1s',
        '--json',
      ]
      expect((await node.run(args)).code).toBe(0) // the session exists from now on
      const c = await mqtt.connectAsync(m.url, { protocolVersion: 5, reconnectPeriod: 0 })
      const before = Date.now()
      await c.publishAsync(`ts/${policy}/a`, '{"ts":1700000000000,"id":"good"}', { qos: 1 })
      await c.publishAsync(`ts/${policy}/a`, 'not json at all', { qos: 1 })
      await c.endAsync()
      const r = await node.run(args)
      expect(r.code, r.stderr).toBe(0)
      const s = parseJson(r.stdout)
      expect(s).toMatchObject({ received: 2, badTimestamp: 1, stored: policy === 'arrival' ? 2 : 1 })
      const stored = await node.messages()
      expect(stored[0]).toMatchObject({ ts: 1700000000000, topic: `ts/${policy}/a` })
      if (policy === 'arrival') {
        expect(stored[1].payload.toString()).toBe('not json at all')
        expect(stored[1].ts).toBeGreaterThanOrEqual(before)
      } else {
        expect(stored).toHaveLength(1)
        expect(r.stderr).toMatch(/not stored \(PUBACK reason code 153\).*not JSON/)
      }
    }
  }, 60_000)

  it('a topic the rules map to an invalid rmq topic is counted, reported and answered with reason code 144; retained skipped', async () => {
    const m = await mosquitto({ extra: ['log_type all'] })
    const c = await mqtt.connectAsync(m.url, { protocolVersion: 5, reconnectPeriod: 0 })
    await c.publishAsync('keep/state', 'old state', { qos: 1, retain: true })
    const node = edge(m.url, {
      RMQ_MQTT_TOPICS: 'bad/#,keep/#,ok/#',
      RMQ_MQTT_RULES: 'bad/+ topic=x/+/+1',
    })
    const args = ['mqtt', 'ingest', '--until-idle', '1s', '--json']
    const first = await node.run(args)
    expect(first.code, first.stderr).toBe(0)
    expect(parseJson(first.stdout)).toMatchObject({ received: 1, stored: 0, skipped: { retained: 1 } })
    await c.publishAsync('bad/7', 'x', { qos: 1 })
    await c.publishAsync('ok/1', JSON.stringify({ id: 'ok' }), { qos: 1 })
    await c.endAsync()
    const r = await node.run(args)
    expect(r.code, r.stderr).toBe(0)
    const s = parseJson(r.stdout)
    expect(s).toMatchObject({ stored: 1, invalidTopic: 1, invalidTopics: ['bad/7'] })
    expect(r.stderr).toContain('MQTT topic "bad/7" maps to the invalid rmq topic "x/+/7"')
    expect((await node.messages()).map((x) => x.topic)).toEqual(['ok/1'])
    // Mosquitto got an error PUBACK for it, never a success; it is not redelivered.
    expect(m.log()).toMatch(/Received PUBACK from rmq-ingest-gw-mqtt \(Mid: \d+, RC:144\)/)
    const again = await node.run(args)
    expect(parseJson(again.stdout)).toMatchObject({ invalidTopic: 0, stored: 0 })
  }, 60_000)

  it('a full outbox (overflow=reject): nothing acknowledged until rmq sync frees room, then nothing lost', async () => {
    const m = await mosquitto()
    const broker = await startBrokerProcess({ auth: 'none' })
    cleanups.push(() => broker.cleanup())
    const node = edge(m.url, {
      RMQ_MQTT_TOPICS: 'dev/#',
      RMQ_STORAGE_MAX_MESSAGES: '100',
      RMQ_STORAGE_OVERFLOW: 'reject',
      RMQ_BROKER_URL: broker.url,
    })
    const ing = node.start()
    await ing.connected
    const acked = await publish(m.url, 'full', { count: 300 })
    let stored = 0
    for (let i = 0; i < 100 && stored < 100; i++) {
      await sleep(100)
      stored = (await node.messages()).length
    }
    expect(ing.stderr()).toMatch(/the outbox is full/)
    // It stays at the limit: the other 200 stay unacknowledged at Mosquitto, not dropped.
    await sleep(500)
    expect(await node.messages()).toHaveLength(100)
    // rmq status shows the blocked ingest, in text and in --json.
    const blockedText = await node.run(['status'])
    expect(blockedText.code, blockedText.stderr).toBe(0)
    expect(blockedText.stdout).toMatch(
      /mqtt ingest\s+blocked since .* ago .*: the outbox is full; nothing is acknowledged/,
    )
    const blockedJson = await node.run(['status', '--json'])
    const blocked = parseJson<{ mqttIngest: { blocked: { since: number; reason: string } | null } }>(
      blockedJson.stdout,
    ).mqttIngest.blocked
    expect(blocked?.reason).toMatch(/outbox/)
    expect(blocked!.since).toBeLessThanOrEqual(Date.now())
    // Sent messages make room: each sync lets ingest store the next ones.
    const consumedIds = async () => {
      const r = await runCli(['consume', '#', '--json'], {
        env: { RMQ_BROKER_URL: broker.url },
        timeoutMs: 30_000,
      })
      expect(r.code, r.stderr).toBe(0)
      return r.stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(parseJson<{ payload: string }>(l).payload) as { id: string }).id)
    }
    let ids: string[] = []
    for (let i = 0; i < 30 && ids.length < acked.length; i++) {
      const s = await node.run(['sync'])
      expect(s.code, s.stderr).toBe(0)
      await sleep(300)
      await node.run(['sync'])
      ids = await consumedIds()
    }
    expect(ing.stderr()).toMatch(/room again/)
    const after = await node.run(['status', '--json'])
    expect(parseJson<{ mqttIngest: { blocked: unknown } }>(after.stdout).mqttIngest.blocked).toBeNull()
    expect((await node.run(['status'])).stdout).not.toMatch(/mqtt ingest/)
    expect((await ing.kill('SIGTERM')).code, ing.stderr()).toBe(0)
    expect(ing.stdout()).toMatch(/300 received, 300 stored .*outbox full \d+ time/)
    // Everything acknowledged by Mosquitto reached the central broker exactly once.
    expect(ids.sort()).toEqual([...acked].sort())
  }, 90_000)
})
