/**
 * Monitoring on the broker with an injectable clock: node status and health
 * (GET /v1/nodes), alert rules (fire once, resolve once, persisted), webhook
 * delivery to a real receiver on 127.0.0.1 (retries; a dead webhook never
 * slows ingest), /metrics through a real Prometheus text parser, and the
 * dashboard's static files.
 */
import http from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createBrokerApp, startBroker, type CreateBrokerAppOptions } from '../../src/broker/app.js'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import type { BrokerStore } from '../../src/broker/store/types.js'
import { createNodeToken, createToken } from '../../src/broker/tokens.js'
import type { BatchBody } from '../../src/protocol/batch.js'
import { makeBatch, message, postBatch } from '../helpers/broker.js'
import { makeTempDir } from '../helpers/cli.js'
import { MemorySink, MIN, SEC, T0, options, startReceiver, stats, until } from '../helpers/monitoring.js'

const require = createRequire(import.meta.url)
interface PromFamily {
  name: string
  help: string
  type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED'
  metrics: Array<{ value?: string; labels?: Record<string, string>; buckets?: Record<string, string> }>
}
const parsePrometheus = require('parse-prometheus-text-format') as (text: string) => PromFamily[]

describe('broker monitoring (injectable clock)', () => {
  let tmp: ReturnType<typeof makeTempDir>
  let app: FastifyInstance
  let store: BrokerStore
  /** A monitor credential: fleet status, alerts, history and /metrics. */
  let monitorTok: string
  /** Node gw-1's token: posts its batches. */
  let token: string
  let clock: number
  let sink: MemorySink

  const open = async (extra: Partial<CreateBrokerAppOptions> = {}) => {
    store = await openSqliteBrokerStore({ dataDir: tmp.dir })
    token = (await createNodeToken(store, 'gw-1')).token
    monitorTok = (await createToken(store, { name: 'ops', role: 'monitor' })).token
    sink = new MemorySink()
    app = await createBrokerApp(
      options(tmp.dir, {
        storeInstance: store,
        now: () => clock,
        monitoring: { alertTimer: false, sinks: [sink], defaultMetrics: false },
        ...extra,
      }),
    )
    await app.ready()
  }
  const ingest = (body: BatchBody) => store.ingest(body, { now: clock, maxLateness: 5 * MIN })
  const get = async (url: string) => {
    const res = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${monitorTok}` } })
    return { status: res.statusCode, body: res.json(), headers: res.headers }
  }

  beforeEach(() => {
    tmp = makeTempDir('rmq-monitoring-')
    clock = T0
  })
  afterEach(async () => {
    await app?.close()
    tmp.cleanup()
  })

  it('GET /v1/nodes derives ok / behind / stale / never-seen with reasons and a summary', async () => {
    await open()
    await createNodeToken(store, 'gw-new')
    // gw-stale: last heard 11 minutes ago (noSyncFor 10m).
    clock = T0 - 11 * MIN
    await ingest(makeBatch('gw-stale', [message(1, clock - 1000)], { clock }))
    // gw-behind: oldest pending message 6 minutes old on its own clock (maxLateness 5m); clock 2 s ahead.
    clock = T0
    await ingest(
      makeBatch('gw-behind', [], {
        clock: T0 + 2000,
        backlog: { pending: 40, bytes: 4000, oldestTs: T0 + 2000 - 6 * MIN },
        stats: stats({ attempts: 10, successes: 9 }),
      }),
    )
    await ingest(
      makeBatch('gw-1', [message(1, T0 - 500), message(2, T0 - 400)], { clock: T0, stats: stats() }),
    )
    await ingest(makeBatch('gw-1', [message(2, T0 - 400)], { clock: T0 }))
    clock = T0 + 30 * SEC

    const res = await get('/v1/nodes')
    expect(res.status).toBe(200)
    const by = Object.fromEntries(res.body.nodes.map((n: { node: string }) => [n.node, n]))
    expect(res.body.nodes.map((n: { node: string }) => n.node)).toEqual([
      'gw-1',
      'gw-behind',
      'gw-new',
      'gw-stale',
    ])
    expect(res.body.summary).toEqual({
      ok: 1,
      behind: 1,
      'holding-back': 0,
      stale: 1,
      'never-seen': 1,
      'never-synced': 0,
      total: 4,
    })
    expect(res.body.rules).toEqual({
      staleAfter: 10 * MIN,
      behindAfter: 5 * MIN,
      neverSyncedAfter: 60 * MIN,
      holdBackAfter: 15 * MIN,
    })
    expect(by['gw-1']).toMatchObject({
      health: 'ok',
      reasons: [],
      lastContact: T0,
      lastSync: T0,
      sinceContact: 30 * SEC,
      lastSuccessAt: T0,
      attempts: 4,
      successes: 3,
      successRate: 0.75,
      epochBatches: 2,
      received: 2,
      duplicates: 1,
      late: 0,
      batches: 2,
      clockSkew: 0,
      dropped: 0,
      expired: 0,
      storage: { totalBytes: 2048, maxBytes: 1 << 20 },
      live: true,
    })
    expect(by['gw-behind']).toMatchObject({
      health: 'behind',
      lastSync: null,
      successRate: 0.9,
      clockSkew: 2000,
      backlog: { pending: 40, bytes: 4000, oldestTs: T0 + 2000 - 6 * MIN },
      // 6 min old when reported + 30 s since the report.
      backlogAge: 6 * MIN + 30 * SEC,
    })
    expect(by['gw-behind'].reasons[0]).toMatch(/oldest pending message is 6m 30s old \(limit 5m\)/)
    expect(by['gw-stale']).toMatchObject({ health: 'stale', sinceContact: 11 * MIN + 30 * SEC, live: false })
    expect(by['gw-stale'].reasons[0]).toMatch(/no sync for 11m 30s \(limit 10m\)/)
    expect(by['gw-new']).toMatchObject({ health: 'never-seen', lastContact: null, received: 0 })

    expect((await get('/v1/nodes/gw-behind')).body).toEqual(by['gw-behind'])
    expect((await get('/v1/nodes/gw-new')).body.health).toBe('never-seen')
    const missing = await get('/v1/nodes/nope')
    expect(missing.status).toBe(404)
    expect(missing.body.code).toBe('NOT_FOUND')
    expect((await app.inject({ method: 'GET', url: '/v1/nodes' })).statusCode).toBe(401)
  })

  it('successes are never fewer than the requests the broker accepted from the epoch, attempts never fewer than successes', async () => {
    await open()
    // An edge that reports its counters as they were before the request (one run behind).
    await ingest(
      makeBatch('gw-1', [message(1, T0)], { clock: T0, stats: stats({ attempts: 0, successes: 0 }) }),
    )
    expect((await get('/v1/nodes/gw-1')).body).toMatchObject({
      attempts: 1,
      successes: 1,
      successRate: 1,
      lastSuccessAt: T0,
      epochBatches: 1,
    })
    // Its report is higher than what the broker saw: the report stands.
    clock = T0 + SEC
    await ingest(makeBatch('gw-1', [], { clock, stats: stats({ attempts: 10, successes: 8 }) }))
    expect((await get('/v1/nodes/gw-1')).body).toMatchObject({
      attempts: 10,
      successes: 8,
      successRate: 0.8,
      lastSuccessAt: T0 + SEC,
    })
    // A direct producer reports no sync counters: unknown, not 100%.
    await ingest(makeBatch('direct-1', [message(1, T0)], { clock, direct: true }))
    expect((await get('/v1/nodes/direct-1')).body).toMatchObject({
      attempts: null,
      successes: null,
      successRate: null,
      lastSuccessAt: clock,
    })
  })

  it('a node that stops syncing turns stale after noSyncFor, fires ONE alert, resolves when it syncs again', async () => {
    await open()
    await ingest(makeBatch('gw-1', [message(1, T0)], { clock: T0 }))
    const health = async () => (await get('/v1/nodes/gw-1')).body.health

    clock = T0 + 9 * MIN
    expect((await app.monitor.alerts.evaluate()).fired).toEqual([])
    expect(await health()).toBe('ok')

    clock = T0 + 10 * MIN + 1
    const first = await app.monitor.alerts.evaluate()
    expect(first.fired).toHaveLength(1)
    expect(first.fired[0]).toMatchObject({
      rule: 'no-sync',
      node: 'gw-1',
      severity: 'critical',
      state: 'active',
    })
    expect(await health()).toBe('stale')

    // Many more evaluations while it stays silent: still exactly one alert, one event.
    for (let i = 1; i <= 7; i++) {
      clock = T0 + 10 * MIN + i * 10 * SEC
      const e = await app.monitor.alerts.evaluate()
      expect(e.fired).toEqual([])
      expect(e.active).toBe(1)
    }
    let alerts = (await get('/v1/alerts')).body
    expect(alerts.active).toHaveLength(1)
    // The age in the record is refreshed once a minute (GET /v1/nodes has it live).
    expect(alerts.active[0]).toMatchObject({
      value: 11 * MIN + 10 * SEC,
      threshold: 10 * MIN,
      firedAt: T0 + 10 * MIN + 1,
      updatedAt: T0 + 11 * MIN + 10 * SEC,
    })
    expect(alerts.active[0].message).toMatch(/gw-1 has not synced for 11m 10s \(limit 10m\)/)
    expect(alerts.resolved).toEqual([])
    expect(sink.events.map((e) => [e.event, e.alert.rule])).toEqual([['fired', 'no-sync']])

    // It syncs again (a heartbeat is enough).
    clock = T0 + 12 * MIN
    await ingest(makeBatch('gw-1', [], { clock }))
    const after = await app.monitor.alerts.evaluate()
    expect(after.resolved).toHaveLength(1)
    expect(await health()).toBe('ok')
    await app.monitor.alerts.evaluate()
    alerts = (await get('/v1/alerts')).body
    expect(alerts.active).toEqual([])
    expect(alerts.resolved).toMatchObject([
      { rule: 'no-sync', node: 'gw-1', state: 'resolved', resolvedAt: clock },
    ])
    expect(sink.events.map((e) => e.event)).toEqual(['fired', 'resolved'])
    expect((await get('/v1/alerts?state=active')).body).toMatchObject({ active: [], resolved: [] })
    expect((await get('/v1/alerts?state=bogus')).status).toBe(400)
  })

  it('alert state is in the store: a second broker on the same store neither fires again nor misses the resolution', async () => {
    await open()
    await ingest(makeBatch('gw-1', [], { clock: T0 }))
    clock = T0 + 11 * MIN
    expect((await app.monitor.alerts.evaluate()).fired).toHaveLength(1)

    const sink2 = new MemorySink()
    const store2 = await openSqliteBrokerStore({ dataDir: tmp.dir })
    const app2 = await createBrokerApp(
      options(tmp.dir, {
        storeInstance: store2,
        now: () => clock,
        monitoring: { alertTimer: false, sinks: [sink2], defaultMetrics: false },
      }),
    )
    try {
      await app2.ready()
      expect((await app2.monitor.alerts.evaluate()).fired).toEqual([])
      await ingest(makeBatch('gw-1', [], { clock }))
      clock += SEC
      const [a, b] = await Promise.all([app.monitor.alerts.evaluate(), app2.monitor.alerts.evaluate()])
      expect(a.resolved.length + b.resolved.length).toBe(1)
      expect(sink.events.length + sink2.events.length).toBe(2)
    } finally {
      await app2.close()
    }
  })

  it('backlog-age fires when the oldest pending message is older than backlogAge, and resolves when drained', async () => {
    // A 20-minute-old backlog is also past maxHoldBack (15m): hold-back has its own test below.
    await open({ maxHoldBack: 0 })
    await ingest(
      makeBatch('gw-1', [], { clock: T0, backlog: { pending: 5, bytes: 500, oldestTs: T0 - 20 * MIN } }),
    )
    clock = T0 + 5 * MIN
    expect((await app.monitor.alerts.evaluate()).fired).toEqual([])
    clock = T0 + 9 * MIN
    await ingest(
      makeBatch('gw-1', [], { clock, backlog: { pending: 5, bytes: 500, oldestTs: T0 - 20 * MIN } }),
    )
    clock = T0 + 10 * MIN + 1
    const e = await app.monitor.alerts.evaluate()
    expect(e.fired.map((a) => [a.rule, a.severity])).toEqual([['backlog-age', 'warning']])
    expect(e.fired[0].message).toMatch(/holds 5 pending message\(s\), the oldest 30m 0s old \(limit 30m\)/)
    await ingest(makeBatch('gw-1', [], { clock }))
    expect((await app.monitor.alerts.evaluate()).resolved.map((a) => a.rule)).toEqual(['backlog-age'])
  })

  it('data-loss needs missing seqs: made-up loss counters on heartbeats raise no alert, and the node status says why', async () => {
    await open()
    await ingest(makeBatch('gw-1', [message(1, clock), message(2, clock)], { clock }))
    await ingest(
      makeBatch('gw-1', [], { clock, batch: 'hb', stats: stats({ dropped: 1_000_000, expired: 5 }) }),
    )
    expect((await app.monitor.alerts.evaluate()).fired).toEqual([])
    const node = (await get('/v1/nodes/gw-1')).body
    expect(node).toMatchObject({ dropped: 1_000_000, expired: 5, gaps: 0, unverifiedLosses: 1_000_005 })
    expect(node.reasons.join(' ')).toMatch(
      /reports 1000005 lost message\(s\) but only 0 seq\(s\) are missing/,
    )
    // A jump of 3 seqs backs 3 of the (same) claims: the alert counts those.
    await ingest(
      makeBatch('gw-1', [message(6, clock)], {
        clock,
        batch: 'b6',
        stats: stats({ dropped: 1_000_000, expired: 5 }),
      }),
    )
    const fired = (await app.monitor.alerts.evaluate()).fired
    expect(fired).toMatchObject([{ rule: 'data-loss', value: 3 }])
    expect((await get('/v1/nodes/gw-1')).body).toMatchObject({ gaps: 3, unverifiedLosses: 1_000_002 })
  })

  it('data-loss counts only totals that never go down within one epoch: a made-up dip and return raise nothing, a new epoch counts from 0', async () => {
    await open({ alerts: { ...options(tmp.dir).alerts, dataLossClearAfter: MIN } })
    let seq = 0
    // Each report carries one message whose seq skips `skip` seqs: that many losses are backed by gaps.
    const report = (dropped: number, skip = 0, epoch = 'e1') =>
      ingest(
        makeBatch('gw-1', [message((seq += 1 + skip), clock)], {
          epoch,
          batch: `b${seq}`,
          clock,
          stats: stats({ dropped }),
        }),
      )
    await report(0)
    await report(5, 5)
    expect((await app.monitor.alerts.evaluate()).fired).toMatchObject([{ rule: 'data-loss', value: 5 }])
    clock += 2 * MIN
    await report(5)
    expect((await app.monitor.alerts.evaluate()).resolved.map((a) => a.rule)).toEqual(['data-loss'])
    // The same outbox now claims 3, then 5 again (its gaps would back both): not counters, no alert.
    for (const dropped of [3, 5, 3, 5]) {
      clock += SEC
      await report(dropped)
      expect((await app.monitor.alerts.evaluate()).fired, `dropped ${dropped}`).toEqual([])
    }
    // A recreated outbox (new epoch) losing 2 backed by 2 missing seqs is a new loss.
    seq = 0
    await report(0, 0, 'e2')
    await app.monitor.alerts.evaluate()
    await report(2, 2, 'e2')
    expect((await app.monitor.alerts.evaluate()).fired).toMatchObject([{ rule: 'data-loss', value: 2 }])
  })

  it('stats are kept as their fixed fields: unknown, negative and fractional values left out; parsed once per report', async () => {
    await open()
    const sent = {
      sync: {
        attempts: 7,
        successes: -3,
        failures: 1.5,
        lastError: 'x'.repeat(500),
        madeUp: 'yes',
        backoff: null,
      },
      storage: { droppedTotal: 2, expiredTotal: -1, totalBytes: 100, maxBytes: 1000, extra: 42 },
    }
    const res = await app.inject({
      method: 'POST',
      url: '/v1/batches',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      payload: JSON.stringify(makeBatch('gw-1', [], { clock, stats: sent })),
    })
    expect(res.statusCode, res.body).toBe(200)
    const node = (await get('/v1/nodes/gw-1')).body
    expect(node.sync).toEqual({ attempts: 7, lastError: 'x'.repeat(500), backoff: null })
    expect(node).toMatchObject({ dropped: 2, expired: 0, storage: { totalBytes: 100, maxBytes: 1000 } })
    const [a] = await store.nodes()
    const [b] = await store.nodes()
    // One parse per (node, last contact), shared read-only by every status read and scrape.
    expect(b.stats).toBe(a.stats)
    expect(Object.isFrozen(a.stats) && Object.isFrozen(a.stats!.sync)).toBe(true)
    expect(a.stats).toEqual({
      sync: node.sync,
      storage: { droppedTotal: 2, totalBytes: 100, maxBytes: 1000 },
    })
    clock += SEC
    await ingest(makeBatch('gw-1', [], { clock, batch: 'hb2', stats: stats({ dropped: 4 }) }))
    expect((await store.nodes())[0].stats).not.toBe(a.stats)
    expect((await get('/v1/nodes/gw-1')).body.dropped).toBe(4)
  })

  it('hold-back fires for a live node whose low mark is older than maxHoldBack (health holding-back), and resolves when it catches up', async () => {
    await open({ maxHoldBack: 3 * SEC })
    // A heartbeat claiming a message from 1970 is pending: the stall attack.
    await ingest(makeBatch('gw-1', [], { clock, backlog: { pending: 1, bytes: 10, oldestTs: 1 } }))
    const e = await app.monitor.alerts.evaluate()
    // The claimed backlog is also older than backlogAge: both fire, each once.
    expect(e.fired.map((a) => [a.rule, a.severity]).sort()).toEqual([
      ['backlog-age', 'warning'],
      ['hold-back', 'warning'],
    ])
    const holdBack = e.fired.find((a) => a.rule === 'hold-back')!
    expect(holdBack.threshold).toBe(3 * SEC)
    expect(holdBack.message).toMatch(/gw-1's low mark is \d+d \d+h behind broker time \(limit 3s\)/)
    const node = (await get('/v1/nodes/gw-1')).body
    expect(node).toMatchObject({ health: 'holding-back', live: false, lowMark: 1 })
    expect(node.holdBack).toBe(clock - 1)
    expect(node.reasons[0]).toMatch(/no longer holds the watermark back/)
    // Caught up: an honest heartbeat resolves it.
    clock += SEC
    await ingest(makeBatch('gw-1', [], { clock }))
    expect((await app.monitor.alerts.evaluate()).resolved.map((a) => a.rule).sort()).toEqual([
      'backlog-age',
      'hold-back',
    ])
  })

  it('data-loss fires on reported dropped/expired messages, stays one alert while losses grow, clears after a quiet period', async () => {
    await open()
    // Each report carries one message whose seq skips the lost ones, as a real node's does.
    let sent = 0
    const report = (dropped: number, expired: number) =>
      ingest(
        makeBatch('gw-1', [message(++sent + dropped + expired, clock)], {
          batch: `b${sent}`,
          clock,
          stats: stats({ dropped, expired }),
        }),
      )
    await report(0, 0)
    expect((await app.monitor.alerts.evaluate()).fired).toEqual([])
    clock += MIN
    await report(3, 1)
    const fired = (await app.monitor.alerts.evaluate()).fired
    expect(fired).toMatchObject([{ rule: 'data-loss', value: 4, severity: 'critical' }])
    expect(fired[0].message).toMatch(/lost 4 message\(s\) since the last alert \(3 dropped .*, 1 expired/)
    clock += MIN
    await report(5, 1)
    expect((await app.monitor.alerts.evaluate()).fired).toEqual([])
    expect((await get('/v1/alerts')).body.active).toMatchObject([{ rule: 'data-loss', value: 6 }])
    // 14 minutes without new losses: still active (dataLossClearAfter 15m)...
    clock += 14 * MIN
    await report(5, 1)
    expect((await app.monitor.alerts.evaluate()).resolved).toEqual([])
    // ... 15 minutes: resolved.
    clock += MIN
    await report(5, 1)
    expect((await app.monitor.alerts.evaluate()).resolved.map((a) => a.rule)).toEqual(['data-loss'])
    await app.monitor.alerts.evaluate()
    // A new loss later is a new alert counting only what is new.
    clock += MIN
    await report(5, 3)
    const again = (await app.monitor.alerts.evaluate()).fired
    expect(again).toMatchObject([{ rule: 'data-loss', value: 8 }])
    expect(again[0].message).toMatch(/lost 2 message/)
    expect(sink.events.map((e) => e.event)).toEqual(['fired', 'resolved', 'fired'])
  })

  it('evaluates on the broker.alerts.interval timer', async () => {
    await open({
      alerts: { ...options(tmp.dir).alerts, interval: 50 },
      monitoring: { sinks: [], defaultMetrics: false },
    })
    await ingest(makeBatch('gw-1', [], { clock: T0 }))
    clock = T0 + 11 * MIN
    const active = await until(async () => {
      const a = (await get('/v1/alerts')).body.active
      return a.length ? a : undefined
    }, 'the timer to fire the alert')
    expect(active).toMatchObject([{ rule: 'no-sync', node: 'gw-1' }])
  })

  it('/metrics is valid Prometheus text with broker and per-node series (parsed, not string-matched)', async () => {
    await open({ monitoring: { alertTimer: false, sinks: [], defaultMetrics: true } })
    await createNodeToken(store, 'gw-"quoted"\\node')
    // Seqs 2..4 never arrive: the 3 losses reported are backed by missing seqs (gaps).
    await ingest(
      makeBatch('gw-1', [message(1, T0 - 1000), message(5, T0 - 900)], {
        clock: T0 + 1500,
        backlog: { pending: 7, bytes: 700, oldestTs: T0 - 60 * SEC },
        stats: stats({ dropped: 2, expired: 1 }),
      }),
    )
    await ingest(
      makeBatch('gw-1', [message(5, T0 - 900)], {
        clock: T0 + 1500,
        backlog: { pending: 7, bytes: 700, oldestTs: T0 - 60 * SEC },
      }),
    )
    clock = T0 + 11 * MIN
    await app.monitor.alerts.evaluate()
    await get('/v1/nodes')

    const res = await app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Bearer ${monitorTok}` },
    })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    const families = parsePrometheus(res.body)
    const fam = new Map(families.map((f) => [f.name, f]))
    // Every family is well-formed: legal name, HELP, a TYPE, numeric values; counters end in _total.
    for (const f of families) {
      expect(f.name).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*$/)
      expect(f.help.length, `${f.name} has HELP`).toBeGreaterThan(0)
      expect(f.type, `${f.name} has a TYPE`).not.toBe('UNTYPED')
      if (f.type === 'COUNTER') expect(f.name).toMatch(/_total$/)
      for (const m of f.metrics) {
        const values = m.buckets ? Object.values(m.buckets) : [m.value!]
        // Go's ParseFloat, which Prometheus uses: numbers, and NaN / Inf in any case.
        for (const v of values)
          expect(
            Number.isFinite(Number(v)) || /^[+-]?(inf|infinity|nan)$/i.test(v!),
            `${f.name} value ${v}`,
          ).toBe(true)
      }
    }
    const value = (name: string, labels: Record<string, string> = {}) => {
      const f = fam.get(name)
      expect(f, name).toBeDefined()
      const m = f!.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v))
      expect(m, `${name} ${JSON.stringify(labels)}`).toBeDefined()
      return Number(m!.value)
    }
    const type = (name: string) => fam.get(name)?.type
    expect(type('rmq_node_messages_received_total')).toBe('COUNTER')
    expect(value('rmq_node_messages_received_total', { node: 'gw-1' })).toBe(2)
    expect(value('rmq_node_duplicates_total', { node: 'gw-1' })).toBe(1)
    expect(value('rmq_node_late_messages_total', { node: 'gw-1' })).toBe(0)
    expect(value('rmq_node_dropped_messages_total', { node: 'gw-1' })).toBe(2)
    expect(value('rmq_node_expired_messages_total', { node: 'gw-1' })).toBe(1)
    expect(value('rmq_node_seq_gaps', { node: 'gw-1' })).toBe(3)
    expect(type('rmq_node_backlog_messages')).toBe('GAUGE')
    expect(value('rmq_node_backlog_messages', { node: 'gw-1' })).toBe(7)
    expect(value('rmq_node_backlog_bytes', { node: 'gw-1' })).toBe(700)
    expect(value('rmq_node_last_sync_age_seconds', { node: 'gw-1' })).toBe(660)
    expect(value('rmq_node_backlog_oldest_age_seconds', { node: 'gw-1' })).toBeCloseTo(61.5 + 660, 3)
    expect(value('rmq_node_clock_skew_seconds', { node: 'gw-1' })).toBe(1.5)
    expect(value('rmq_node_sync_success_ratio', { node: 'gw-1' })).toBe(0.75)
    expect(value('rmq_node_health', { node: 'gw-1', state: 'stale' })).toBe(1)
    expect(value('rmq_node_health', { node: 'gw-1', state: 'ok' })).toBe(0)
    // A label value with quotes and a backslash survives the exposition format.
    expect(value('rmq_node_health', { node: 'gw-"quoted"\\node', state: 'never-seen' })).toBe(1)
    expect(value('rmq_broker_messages_received_total')).toBe(2)
    expect(value('rmq_broker_nodes', { health: 'stale' })).toBe(1)
    expect(value('rmq_broker_nodes', { health: 'never-seen' })).toBe(1)
    expect(value('rmq_broker_messages_stored')).toBe(2)
    expect(value('rmq_alert_active', { rule: 'no-sync', node: 'gw-1' })).toBe(1)
    expect(value('rmq_alert_active', { rule: 'data-loss', node: 'gw-1' })).toBe(1)
    expect(value('rmq_broker_alerts_active', { rule: 'no-sync', severity: 'critical' })).toBe(1)
    expect(value('rmq_broker_info', { store: 'sqlite' })).toBe(1)
    expect(type('rmq_broker_http_request_duration_seconds')).toBe('HISTOGRAM')
    expect(value('rmq_broker_http_requests_total', { route: '/v1/nodes', status: '200' })).toBeGreaterThan(0)
    expect(fam.has('process_cpu_user_seconds_total')).toBe(true)
    // A scrape needs a monitor (or admin) credential: test/broker/authorization.test.ts has broker.metrics.public.
    expect((await app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(401)

    // Lines kept from one scrape to the next follow the node's next report, even in the same ms.
    const scrape = async () => {
      const text = (
        await app.inject({
          method: 'GET',
          url: '/metrics',
          headers: { authorization: `Bearer ${monitorTok}` },
        })
      ).body
      const f = new Map(parsePrometheus(text).map((x) => [x.name, x]))
      return (name: string, labels: Record<string, string>) =>
        Number(
          f.get(name)!.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v))!
            .value,
        )
    }
    for (const seq of [6, 7]) {
      await ingest(
        makeBatch('gw-1', [message(seq, T0)], {
          clock,
          batch: `b${seq}`,
          stats: stats({ dropped: 2, expired: 1 }),
        }),
      )
      const v = await scrape()
      expect(v('rmq_node_messages_received_total', { node: 'gw-1' })).toBe(seq - 3)
      expect(v('rmq_node_backlog_messages', { node: 'gw-1' })).toBe(0)
      expect(v('rmq_node_health', { node: 'gw-1', state: 'ok' })).toBe(1)
      expect(v('rmq_node_health', { node: 'gw-1', state: 'stale' })).toBe(0)
    }
    clock += 11 * MIN
    expect((await scrape())('rmq_node_last_sync_age_seconds', { node: 'gw-1' })).toBe(660)
  })

  it('serves the dashboard, uPlot and /v1/history with a strict CSP', async () => {
    await open({
      monitoring: { alertTimer: false, sinks: [], defaultMetrics: false, historyIntervalMs: 1000 },
    })
    const page = await app.inject({ method: 'GET', url: '/' })
    expect(page.statusCode).toBe(200)
    expect(page.headers['content-type']).toMatch(/text\/html/)
    expect(page.headers['content-security-policy']).toMatch(/script-src 'self'/)
    expect(page.body).toMatch(/<script src="\/dashboard\/app\.js"/)
    for (const f of ['app.js', 'style.css', 'uplot.js', 'uplot.css']) {
      const r = await app.inject({ method: 'GET', url: `/dashboard/${f}` })
      expect(r.statusCode, f).toBe(200)
      expect(r.body.length, f).toBeGreaterThan(1000)
    }
    // The dashboard script never writes HTML from data.
    const js = (await app.inject({ method: 'GET', url: '/dashboard/app.js' })).body
    expect(js).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/)

    await ingest(makeBatch('gw-1', [message(1, T0)], { clock: T0 }))
    clock = T0 + 2000
    await app.monitor.sample()
    const h = await get('/v1/history')
    expect(h.body.intervalMs).toBe(1000)
    const last = h.body.samples[h.body.samples.length - 1]
    expect(last).toMatchObject({ t: T0 + 2000, received: 1, backlog: 0, ok: 1 })
    expect(last.rate).toBeCloseTo(0.5, 5)
    expect((await get(`/v1/history?since=${T0 + 2000}`)).body.samples).toEqual([])
  })
})

describe('alert webhooks (real HTTP on 127.0.0.1)', () => {
  let tmp: ReturnType<typeof makeTempDir>
  beforeEach(() => {
    tmp = makeTempDir('rmq-webhook-')
  })
  afterEach(() => tmp.cleanup())

  it('a receiver gets the fired and the resolved event (documented body), after retries', async () => {
    const receiver = await startReceiver([503, 500])
    let clock = T0
    const store = await openSqliteBrokerStore({ dataDir: tmp.dir })
    const app = await createBrokerApp(
      options(tmp.dir, {
        storeInstance: store,
        now: () => clock,
        alerts: { ...options(tmp.dir).alerts, webhooks: [receiver.url] },
        monitoring: {
          alertTimer: false,
          defaultMetrics: false,
          webhook: { initialDelayMs: 20, maxDelayMs: 50 },
        },
      }),
    )
    try {
      await app.ready()
      await store.ingest(makeBatch('gw-9', [], { clock }), { now: clock, maxLateness: 5 * MIN })
      clock = T0 + 11 * MIN
      await app.monitor.alerts.evaluate()
      await store.ingest(makeBatch('gw-9', [], { clock }), { now: clock, maxLateness: 5 * MIN })
      clock += SEC
      await app.monitor.alerts.evaluate()
      await until(() => receiver.got.length >= 2, 'both webhook deliveries')
      expect(receiver.attempts()).toBe(4)
      const [fired, resolved] = receiver.got
      expect(fired.headers['content-type']).toBe('application/json')
      expect(fired.headers['x-rmq-event']).toBe('fired')
      expect(fired.headers['x-rmq-delivery']).toBe(`${fired.body.alert.id}-fired`)
      expect(fired.body).toMatchObject({
        version: 1,
        event: 'fired',
        sentAt: T0 + 11 * MIN,
        alert: {
          key: 'no-sync:gw-9',
          rule: 'no-sync',
          node: 'gw-9',
          state: 'active',
          severity: 'critical',
          value: 11 * MIN,
          threshold: 10 * MIN,
          firedAt: T0 + 11 * MIN,
          resolvedAt: null,
        },
      })
      expect(typeof fired.body.broker).toBe('string')
      expect(resolved.body).toMatchObject({
        event: 'resolved',
        alert: { id: fired.body.alert.id, state: 'resolved', resolvedAt: T0 + 11 * MIN + SEC },
      })
      expect(resolved.headers['x-rmq-event']).toBe('resolved')
    } finally {
      await app.close()
      await receiver.close()
    }
  })

  it('refuses to start with a webhook that is not an http(s) URL (ConfigError, exit 78)', async () => {
    const store = await openSqliteBrokerStore({ dataDir: tmp.dir })
    const err = await createBrokerApp(
      options(tmp.dir, {
        storeInstance: store,
        alerts: { ...options(tmp.dir).alerts, webhooks: ['ftp://alerts.example.com/x'] },
      }),
    ).catch((e: unknown) => e)
    await store.close()
    expect(err).toMatchObject({ exitCode: 78, message: expect.stringMatching(/broker\.alerts\.webhooks/) })
  })

  it('a webhook that is down (hanging, or refusing connections) does not slow ingest', async () => {
    // One receiver accepts the request and never answers; the other port is closed.
    const held: http.ServerResponse[] = []
    const hanging = http.createServer((_req, res) => held.push(res))
    await new Promise<void>((r) => hanging.listen(0, '127.0.0.1', r))
    const closed = http.createServer()
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r))
    const closedPort = (closed.address() as AddressInfo).port
    await new Promise<void>((r) => closed.close(() => r()))
    const hangingUrl = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}/`

    let clock = Date.now()
    const store = await openSqliteBrokerStore({ dataDir: tmp.dir })
    const token = (await createNodeToken(store, 'gw-fast')).token
    const broker = await startBroker(
      options(tmp.dir, {
        storeInstance: store,
        now: () => clock,
        alerts: { ...options(tmp.dir).alerts, webhooks: [hangingUrl, `http://127.0.0.1:${closedPort}/`] },
        monitoring: {
          alertTimer: false,
          defaultMetrics: false,
          webhook: { timeoutMs: 60_000, initialDelayMs: 10 },
        },
      }),
    )
    try {
      // Ten silent nodes fire ten alerts: twenty webhook events queue up behind dead receivers.
      for (let i = 0; i < 10; i++)
        await store.ingest(makeBatch(`gw-${i}`, [], { clock }), { now: clock, maxLateness: 5 * MIN })
      clock += 11 * MIN
      const evaluation = await broker.app.monitor.alerts.evaluate()
      expect(evaluation.fired).toHaveLength(10)
      await until(() => held.length > 0, 'the hanging webhook to receive a request')

      const started = Date.now()
      for (let i = 1; i <= 30; i++) {
        const res = await postBatch(broker.url, makeBatch('gw-fast', [message(i, clock)], { clock }), {
          token,
        })
        expect(res.status).toBe(200)
      }
      const elapsed = Date.now() - started
      // The webhook request is still open (its 60 s timeout has not passed) while all 30 batches were answered.
      expect(held.length).toBe(1)
      expect(held[0].writableEnded).toBe(false)
      expect(elapsed).toBeLessThan(10_000)
      // Alert evaluation is not held up either.
      clock += SEC
      await broker.app.monitor.alerts.evaluate()
      const nodes = await broker.app.inject({
        method: 'GET',
        url: '/v1/nodes/gw-fast',
        headers: { authorization: `Bearer ${token}` },
      })
      expect(nodes.json().received).toBe(30)
    } finally {
      for (const r of held) r.destroy()
      await broker.close()
      await new Promise<void>((r) => hanging.close(() => r()))
    }
  })
})
