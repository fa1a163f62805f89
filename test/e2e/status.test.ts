/**
 * `rmq status` and `rmq status --broker` through the real binary, against a
 * real broker process: outbox and sync state before and after syncs, the
 * backoff after a failure, the fleet table, exit 69 when the broker is down.
 */
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'

const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (
  text: string,
) => Array<{
  name: string
  type: string
  metrics: Array<{ value?: string; labels?: Record<string, string> }>
}>

describe('rmq status (edge) and rmq status --broker', () => {
  let broker: BrokerProcess
  let tmp: ReturnType<typeof makeTempDir>
  let env: Record<string, string>
  const monitor: Record<string, string> = {}

  beforeAll(async () => {
    broker = await startBrokerProcess({ auth: 'token' })
    tmp = makeTempDir('rmq-status-')
    fs.writeFileSync(path.join(tmp.dir, '.rmqrc.json'), JSON.stringify({ nodeId: 'gw-status' }))
    env = { RMQ_BROKER_URL: broker.url, RMQ_TOKEN: await broker.createToken('gw-status') }
    // The fleet view (status --broker, /metrics) needs a monitor credential; the node token syncs.
    monitor.RMQ_TOKEN = await broker.createToken('ops', { role: 'monitor' })
  })
  afterAll(async () => {
    await broker?.cleanup()
    tmp?.cleanup()
  })
  const rmq = (args: string[], extra: Record<string, string> = {}) =>
    runCli(args, { cwd: tmp.dir, env: { ...env, ...extra } })

  it('shows identity, config file and an empty outbox before anything is published (without creating it)', async () => {
    const r = await rmq(['status', '--json'])
    expect(r.code).toBe(0)
    const s = parseJson(r.stdout)
    expect(s).toMatchObject({
      node: 'gw-status',
      brokerUrl: broker.url,
      configFile: path.join(fs.realpathSync(tmp.dir), '.rmqrc.json'),
      outbox: { driver: 'sqlite', exists: false },
      pending: { messages: 0, bytes: 0, oldestAge: null },
      sync: { lastAttemptAt: null, successRate: null, backoff: null, nextAttemptAt: null },
    })
    expect(fs.existsSync(path.join(tmp.dir, '.rmq'))).toBe(false)
  })

  it('counts pending messages, then sent ones and the sync statistics after a sync', async () => {
    for (const i of [1, 2, 3]) expect((await rmq(['publish', 'plant/t', `{"i":${i}}`])).code).toBe(0)
    let s = parseJson((await rmq(['status', '--json'])).stdout)
    expect(s.outbox.exists).toBe(true)
    expect(s.pending.messages).toBe(3)
    expect(s.pending.bytes).toBeGreaterThan(0)
    expect(s.pending.oldestAge).toBeGreaterThanOrEqual(0)
    expect(s.store.bytes).toBeGreaterThan(0)
    expect(s.store.maxBytes).toBeGreaterThan(s.store.bytes)

    expect((await rmq(['sync'])).code).toBe(0)
    s = parseJson((await rmq(['status', '--json'])).stdout)
    expect(s.pending.messages).toBe(0)
    expect(s.totals).toMatchObject({ appended: 3, sent: 3, expired: 0, dropped: 0 })
    expect(s.sync).toMatchObject({
      attempts: 1,
      successes: 1,
      successRate: 1,
      backoff: null,
      nextAttemptAt: null,
    })
    expect(s.sync.lastSuccessAt).toBeGreaterThan(0)

    const human = await rmq(['status'])
    expect(human.code).toBe(0)
    expect(human.stdout).toMatch(/^node\s+gw-status$/m)
    expect(human.stdout).toMatch(/^config file\s+.*\.rmqrc\.json$/m)
    expect(human.stdout).toMatch(/^pending\s+0 message\(s\)/m)
    expect(human.stdout).toMatch(/^sent\s+3$/m)
    expect(human.stdout).toMatch(/^success rate\s+100% \(1 of 1 attempts\)$/m)
    expect(human.stdout).toMatch(/^last attempt\s+\d+s ago .*, ok$/m)
    expect(human.stdout).toMatch(/^store size\s+\S+ of 512MB/m)
  })

  it('right after that first sync the broker shows attempts 1, success 100% and the last success', async () => {
    // The report carried by the sync's only request counts that request (not one run behind).
    const res = await fetch(`${broker.url}/v1/nodes/gw-status`, {
      headers: { authorization: `Bearer ${env.RMQ_TOKEN}` },
    })
    expect(res.status).toBe(200)
    const node = parseJson(await res.text())
    expect(node).toMatchObject({
      health: 'ok',
      attempts: 1,
      successes: 1,
      successRate: 1,
      epochBatches: 1,
      sync: { attempts: 1, successes: 1, failures: 0, batches: 1, messagesSent: 3 },
    })
    expect(node.lastSuccessAt).toBe(node.lastContact)
    expect(node.lastSuccessAt).toBeGreaterThan(Date.now() - 120_000)
    expect(node.sync.lastSuccessAt).toBeGreaterThan(0)

    const j = await rmq(['status', '--broker', '--json'], monitor)
    expect(j.code).toBe(0)
    const listed = parseJson(j.stdout).nodes.find((n: { node: string }) => n.node === 'gw-status')
    expect(listed).toMatchObject({ attempts: 1, successes: 1, successRate: 1 })
    expect(listed.lastSuccessAt).toBe(node.lastSuccessAt)
    const human = await rmq(['status', '--broker'], monitor)
    expect(human.stdout).toMatch(/^gw-status\s+ok\s+\d+s ago\s+100%\s+0\s/m)
  })

  it('shows the backoff and the next attempt after a failed sync', async () => {
    expect((await rmq(['publish', 'plant/t', '{"i":4}'])).code).toBe(0)
    const down = { RMQ_BROKER_URL: 'http://127.0.0.1:9', RMQ_SYNC_BACKOFF_INITIAL: '10m' }
    expect((await rmq(['sync'], down)).code).toBe(75)
    const s = parseJson((await rmq(['status', '--json'], down)).stdout)
    expect(s.pending.messages).toBe(1)
    expect(s.sync).toMatchObject({ attempts: 2, successes: 1, failures: 1, successRate: 0.5 })
    expect(s.sync.backoff).toMatchObject({ failures: 1 })
    expect(s.sync.nextAttemptAt).toBeGreaterThan(Date.now() + 60_000)
    expect(s.sync.lastError).toMatch(/127\.0\.0\.1:9/)
    const human = (await rmq(['status'], down)).stdout
    expect(human).toMatch(/^backoff\s+1 failure\(s\) in a row/m)
    expect(human).toMatch(/^next attempt\s+in \d+m/m)
    expect(human).toMatch(/^last attempt\s+.*, failed$/m)
    // The node recovers.
    expect((await rmq(['sync', '--force'])).code).toBe(0)
  })

  it('--broker renders the fleet with health, and --json gives nodes, summary and alerts', async () => {
    await broker.createToken('gw-spare')
    const human = await rmq(['status', '--broker'], monitor)
    expect(human.code).toBe(0)
    expect(human.stdout).toMatch(
      /2 node\(s\): 1 ok, 0 behind, 0 holding-back, 0 stale, 1 never-seen, 0 never-synced; 0 active alert\(s\)/,
    )
    expect(human.stdout).toMatch(/^node\s+health\s+last sync\s+success\s+pending/m)
    expect(human.stdout).toMatch(/^gw-spare\s+never-seen\s+never/m)
    expect(human.stdout).toMatch(/^gw-status\s+ok\s+\d+s ago\s+\d+(\.\d)?%\s+0\s+-\s+4\s+0\s+0/m)

    const j = await rmq(['status', '--broker', '--json'], monitor)
    expect(j.code).toBe(0)
    const fleet = parseJson(j.stdout)
    expect(fleet.summary).toMatchObject({ ok: 1, 'never-seen': 1, total: 2 })
    expect(fleet.nodes.find((n: { node: string }) => n.node === 'gw-status')).toMatchObject({
      health: 'ok',
      received: 4,
      backlog: { pending: 0 },
      // Two accepted syncs and the failed one in between, as the node counted them.
      attempts: 3,
      successes: 2,
    })
    expect(fleet.alerts).toEqual([])
  })

  it('the running broker process serves /metrics that a Prometheus parser accepts', async () => {
    expect((await fetch(`${broker.url}/metrics`)).status).toBe(401)
    const res = await fetch(`${broker.url}/metrics`, {
      headers: { authorization: `Bearer ${monitor.RMQ_TOKEN}` },
    })
    expect(res.status).toBe(200)
    const families = parsePrometheus(await res.text())
    const received = families.find((f) => f.name === 'rmq_node_messages_received_total')
    expect(received?.type).toBe('COUNTER')
    expect(received?.metrics.find((m) => m.labels?.node === 'gw-status')?.value).toBe('4')
    const health = families.find((f) => f.name === 'rmq_node_health')
    expect(
      health?.metrics.find((m) => m.labels?.node === 'gw-spare' && m.labels.state === 'never-seen')?.value,
    ).toBe('1')
  })

  it('counts a pending message past its TTL as expired before cleanup removes it (human and --json)', async () => {
    // Its own outbox (no broker needed: status reads the outbox only).
    const dir = makeTempDir('rmq-status-ttl-')
    try {
      fs.writeFileSync(path.join(dir.dir, '.rmqrc.json'), JSON.stringify({ nodeId: 'gw-ttl' }))
      const local = (args: string[]) =>
        runCli(args, { cwd: dir.dir, env: { RMQ_BROKER_URL: 'http://127.0.0.1:9' } })
      expect((await local(['publish', 'plant/t', '{"short":true}', '--ttl', '1s'])).code).toBe(0)
      expect((await local(['publish', 'plant/t', '{"kept":true}'])).code).toBe(0)
      await new Promise((r) => setTimeout(r, 1500))
      const s = parseJson((await local(['status', '--json'])).stdout)
      expect(s.pending.messages).toBe(1)
      expect(s.totals).toMatchObject({ appended: 2, sent: 0, expired: 1, expiredPending: 1, dropped: 0 })
      const human = await local(['status'])
      expect(human.code).toBe(0)
      expect(human.stdout).toMatch(/^expired\s+1 \(1 past the TTL, not yet removed by cleanup\)$/m)
      expect(human.stdout).toMatch(/^pending\s+1 message\(s\)/m)

      // Cleanup removes it: still counted once, now among those removed.
      expect((await local(['cleanup'])).code).toBe(0)
      const after = parseJson((await local(['status', '--json'])).stdout)
      expect(after.totals).toMatchObject({ expired: 1, expiredPending: 0 })
      expect((await local(['status'])).stdout).toMatch(/^expired\s+1$/m)
    } finally {
      dir.cleanup()
    }
  })

  it('--broker exits 69 when the broker is unreachable, 78 when it refuses the token', async () => {
    const r = await rmq(['status', '--broker'], { RMQ_BROKER_URL: 'http://127.0.0.1:9' })
    expect(r.code).toBe(69)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(/cannot reach the broker at http:\/\/127\.0\.0\.1:9/)
    const j = await rmq(['status', '--broker', '--json'], { RMQ_BROKER_URL: 'http://127.0.0.1:9' })
    expect(j.code).toBe(69)
    expect(parseJson(j.stdout).error.code).toBe('BROKER_UNAVAILABLE')
    const bad = await rmq(['status', '--broker'], { RMQ_TOKEN: 'not-a-token' })
    expect(bad.code).toBe(78)
    expect(bad.stderr).toMatch(/rejected the token/)
  })
})
