/**
 * The `never-synced` alert rule and health state: a node given a token that
 * never synced within broker.alerts.neverSyncedFor of the token's creation.
 * With an injectable clock (fires once, not for a node that synced in time,
 * resolves when the node syncs, off with 0). End to end (a real broker
 * process, a webhook on 127.0.0.1, a real `rmq sync`): test/e2e/never-synced.test.ts.
 */
import type { FastifyInstance } from 'fastify'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createBrokerApp, type CreateBrokerAppOptions } from '../../src/broker/app.js'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import type { BrokerStore } from '../../src/broker/store/types.js'
import { createNodeToken, createToken } from '../../src/broker/tokens.js'
import { makeBatch, message } from '../helpers/broker.js'
import { makeTempDir } from '../helpers/cli.js'
import { MemorySink, MIN, T0, options } from '../helpers/monitoring.js'

describe('never-synced (injectable clock)', () => {
  let tmp: ReturnType<typeof makeTempDir>
  let app: FastifyInstance
  let store: BrokerStore
  let token: string
  let clock: number
  let sink: MemorySink

  const open = async (alerts: Partial<CreateBrokerAppOptions['alerts']> = {}) => {
    store = await openSqliteBrokerStore({ dataDir: tmp.dir })
    await createNodeToken(store, 'gw-late', T0)
    // A monitor reads the fleet; as a credential that is no node, it is never listed as one.
    token = (await createToken(store, { name: 'ops', role: 'monitor' }, T0)).token
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
