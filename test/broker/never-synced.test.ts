/**
 * The `never-synced` alert rule and health state: a node given a token that
 * never synced within broker.alerts.neverSyncedFor of the token's creation.
 * With an injectable clock (fires once, not for a node that synced in time,
 * resolves when the node syncs, off with 0), and end to end: a real broker
 * process with a short limit and evaluation interval delivers the alert to
 * a webhook receiver on 127.0.0.1, and a real `rmq sync` resolves it.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createBrokerApp, type CreateBrokerAppOptions } from '../../src/broker/app.js'
import type { AlertEvent } from '../../src/broker/alerts.js'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import type { BrokerStore } from '../../src/broker/store/types.js'
import { createNodeToken } from '../../src/broker/tokens.js'
import { makeBatch, message, startBrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'
import { MemorySink, MIN, T0, options, startReceiver, until } from '../helpers/monitoring.js'

describe('never-synced (injectable clock)', () => {
  let tmp: ReturnType<typeof makeTempDir>
  let app: FastifyInstance
  let store: BrokerStore
  let token: string
  let clock: number
  let sink: MemorySink

  const open = async (alerts: Partial<CreateBrokerAppOptions['alerts']> = {}) => {
    store = await openSqliteBrokerStore({ dataDir: tmp.dir })
    token = (await createNodeToken(store, 'gw-late', T0)).token
    await createNodeToken(store, 'gw-quick', T0)
    sink = new MemorySink()
    app = await createBrokerApp(
      options(tmp.dir, {
        storeInstance: store,
        now: () => clock,
        alerts: { ...options(tmp.dir).alerts, ...alerts },
        monitoring: { alertTimer: false, sinks: [sink], defaultMetrics: false },
      }),
    )
    await app.ready()
  }
  const sync = (node: string) =>
    store.ingest(makeBatch(node, [message(1, clock)], { clock }), { now: clock, maxLateness: 5 * MIN })
  const get = async (url: string) =>
    (await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}` } })).json()
  const neverSyncedEvents = () =>
    sink.events.filter((e) => e.alert.rule === 'never-synced').map((e) => [e.event, e.alert.node])

  beforeEach(() => {
    tmp = makeTempDir('rmq-never-synced-')
    clock = T0
  })
  afterEach(async () => {
    await app?.close()
    tmp.cleanup()
  })

  it('fires once for a token whose node never synced within neverSyncedFor, not for one that did; resolves when it syncs', async () => {
    await open()
    // gw-quick syncs 5 minutes after its token was made (neverSyncedFor is 60m).
    clock = T0 + 5 * MIN
    await sync('gw-quick')

    clock = T0 + 60 * MIN
    expect((await app.monitor.alerts.evaluate()).fired.filter((a) => a.rule === 'never-synced')).toEqual([])
    expect(await get('/v1/nodes/gw-late')).toMatchObject({ health: 'never-seen', tokenCreatedAt: T0 })

    clock = T0 + 60 * MIN + 1
    const fired = (await app.monitor.alerts.evaluate()).fired.filter((a) => a.rule === 'never-synced')
    expect(fired).toMatchObject([
      {
        key: 'never-synced:gw-late',
        node: 'gw-late',
        state: 'active',
        severity: 'warning',
        value: 60 * MIN + 1,
        threshold: 60 * MIN,
      },
    ])
    expect(fired[0].message).toMatch(/gw-late has had a token for 1h 0m and never synced \(limit 1h\)/)
    const late = await get('/v1/nodes/gw-late')
    expect(late).toMatchObject({ health: 'never-synced', lastContact: null, tokenCreatedAt: T0 })
    expect(late.reasons[0]).toMatch(/has had a token for 1h 0m but never synced \(limit 1h\)/)
    const fleet = await get('/v1/nodes')
    expect(fleet.summary).toMatchObject({ 'never-synced': 1, 'never-seen': 0, total: 2 })
    expect(fleet.nodes.find((n: { node: string }) => n.node === 'gw-quick')).toMatchObject({
      tokenCreatedAt: T0,
      lastSuccessAt: T0 + 5 * MIN,
    })

    // Later evaluations: still one alert, one event.
    for (let i = 1; i <= 5; i++) {
      clock = T0 + 60 * MIN + i * 10_000
      expect((await app.monitor.alerts.evaluate()).fired.filter((a) => a.rule === 'never-synced')).toEqual([])
    }
    expect(neverSyncedEvents()).toEqual([['fired', 'gw-late']])

    // The node comes up at last.
    clock = T0 + 70 * MIN
    await sync('gw-late')
    const after = await app.monitor.alerts.evaluate()
    expect(after.resolved.map((a) => [a.rule, a.node])).toEqual([['never-synced', 'gw-late']])
    expect((await get('/v1/nodes/gw-late')).health).toBe('ok')
    expect(neverSyncedEvents()).toEqual([
      ['fired', 'gw-late'],
      ['resolved', 'gw-late'],
    ])
    // gw-quick synced in time: never alerted on.
    expect(sink.events.some((e) => e.alert.node === 'gw-quick' && e.alert.rule === 'never-synced')).toBe(
      false,
    )
  })

  it('broker.alerts.neverSyncedFor=0 turns the rule off: the node stays never-seen', async () => {
    await open({ neverSyncedFor: 0 })
    clock = T0 + 30 * 24 * 60 * MIN
    expect((await app.monitor.alerts.evaluate()).fired).toEqual([])
    expect((await get('/v1/nodes/gw-late')).health).toBe('never-seen')
    expect((await get('/v1/nodes')).rules.neverSyncedAfter).toBe(0)
  })
})

describe('never-synced end to end (real broker process, webhook on 127.0.0.1, real rmq sync)', () => {
  it('a node never connected fires never-synced to the webhook; the node that syncs gets it resolved', async () => {
    const receiver = await startReceiver()
    const broker = await startBrokerProcess({
      auth: 'token',
      env: {
        RMQ_BROKER_ALERTS_NEVER_SYNCED_FOR: '1s',
        RMQ_BROKER_ALERTS_INTERVAL: '200ms',
        RMQ_BROKER_ALERTS_WEBHOOKS: receiver.url,
      },
    })
    const edge = makeTempDir('rmq-never-synced-edge-')
    try {
      await broker.createToken('gw-never')
      const late = await broker.createToken('gw-late')
      const event = (e: AlertEvent['event'], node: string) =>
        receiver.got.find((g) => g.body.event === e && g.body.alert.node === node)
      const firedNever = await until(() => event('fired', 'gw-never'), 'never-synced for gw-never', 20_000)
      expect(firedNever.headers['x-rmq-event']).toBe('fired')
      expect(firedNever.body).toMatchObject({
        version: 1,
        event: 'fired',
        alert: {
          key: 'never-synced:gw-never',
          rule: 'never-synced',
          state: 'active',
          severity: 'warning',
          threshold: 1000,
          resolvedAt: null,
        },
      })
      expect(firedNever.body.alert.value).toBeGreaterThan(1000)
      expect(firedNever.body.alert.message).toMatch(/gw-never has had a token for \d+s and never synced/)
      await until(() => event('fired', 'gw-late'), 'never-synced for gw-late', 20_000)

      // `rmq status --broker` shows both as never-synced, with the alerts.
      const env = { RMQ_BROKER_URL: broker.url, RMQ_TOKEN: late }
      fs.writeFileSync(path.join(edge.dir, '.rmqrc.json'), JSON.stringify({ nodeId: 'gw-late' }))
      const rmq = (args: string[]) => runCli(args, { cwd: edge.dir, env })
      const status = await rmq(['status', '--broker'])
      expect(status.code).toBe(0)
      expect(status.stdout).toMatch(
        /2 node\(s\): 0 ok, 0 behind, 0 holding-back, 0 stale, 0 never-seen, 2 never-synced;/,
      )
      expect(status.stdout).toMatch(/^gw-never\s+never-synced\s+never/m)
      expect(status.stdout).toMatch(/WARNING never-synced gw-never: gw-never has had a token/)

      // gw-late comes up: one real sync resolves its alert; gw-never's stays.
      expect((await rmq(['publish', 'plant/t', '{"i":1}'])).code).toBe(0)
      expect((await rmq(['sync'])).code).toBe(0)
      const resolved = await until(() => event('resolved', 'gw-late'), 'resolution for gw-late', 20_000)
      expect(resolved.body.alert).toMatchObject({ key: 'never-synced:gw-late', state: 'resolved' })
      expect(resolved.body.alert.resolvedAt).toBeGreaterThan(0)
      const fleet = parseJson((await rmq(['status', '--broker', '--json'])).stdout)
      expect(fleet.summary).toMatchObject({ ok: 1, 'never-synced': 1, total: 2 })
      expect(fleet.alerts.map((a: { key: string }) => a.key)).toEqual(['never-synced:gw-never'])
      expect(event('resolved', 'gw-never')).toBeUndefined()
      // Each event was delivered once.
      const keys = receiver.got.map((g) => `${g.body.event} ${g.body.alert.node}`)
      expect(keys.sort()).toEqual(['fired gw-late', 'fired gw-never', 'resolved gw-late'])
    } finally {
      await broker.cleanup()
      await receiver.close()
      edge.cleanup()
    }
  }, 60_000)
})
