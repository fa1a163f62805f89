/**
 * /metrics with the fleet's rows and per-node lines kept between scrapes
 * (src/broker/fleet-rows.ts, src/broker/metrics.ts): a scrape right after a
 * node's new report (in the same ms, through HTTP, the store, or another
 * handle on the same store as a second broker process would) shows the new
 * values and leaves every other node's alone; health and ages follow the
 * clock alone; tokens made or revoked show at the next scrape; concurrent
 * scrapes agree. Parsed with a real Prometheus text parser.
 */
import { createRequire } from 'node:module'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import { createNodeToken, revokeToken } from '../../src/broker/tokens.js'
import { BrokerAppFixture, MIN, T0 } from '../helpers/broker-app.js'
import { makeBatch, message } from '../helpers/broker.js'
import { stats } from '../helpers/monitoring.js'

const require = createRequire(import.meta.url)
interface PromFamily {
  name: string
  metrics: Array<{ value?: string; labels?: Record<string, string> }>
}
const parsePrometheus = require('parse-prometheus-text-format') as (text: string) => PromFamily[]

const NODES = 40
/** Every per-node sample, `family{node,state} -> value`. */
type Samples = Map<string, string>

describe('/metrics follows every report with rows and lines kept between scrapes', () => {
  let f: BrokerAppFixture

  beforeEach(() => {
    f = new BrokerAppFixture()
  })
  afterEach(async () => {
    await f.app?.close()
    f.tmp.cleanup()
  })

  const scrape = async (): Promise<Samples> => {
    const res = await f.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Bearer ${f.adminToken}` },
    })
    expect(res.statusCode).toBe(200)
    expect(Number(res.headers['content-length'])).toBe(res.rawPayload.length)
    const out: Samples = new Map()
    for (const fam of parsePrometheus(res.body))
      for (const m of fam.metrics)
        if (m.labels?.node !== undefined && fam.name.startsWith('rmq_node_'))
          out.set(`${fam.name}{${m.labels.node},${m.labels.state ?? ''}}`, m.value!)
    return out
  }
  const of = (s: Samples, name: string, node: string, state = '') => s.get(`${name}{${node},${state}}`)
  /** The samples of every node but `but`. */
  const others = (s: Samples, but: string[]) => [...s].filter(([k]) => !but.some((n) => k.includes(`{${n},`)))
  const report = (node: string, seq: number, pending: number, dropped = 0) =>
    f.store.ingest(
      makeBatch(node, [message(seq, T0 - 1000)], {
        clock: f.clock,
        batch: `b-${node}-${seq}`,
        backlog: { pending, bytes: pending * 100, oldestTs: pending ? T0 - 30_000 : null },
        stats: stats({ attempts: 10 + seq, successes: 9 + seq, dropped }),
      }),
      { now: f.clock, maxLateness: 5 * MIN },
    )

  it('a fleet of no node has the per-node families, empty; its first node shows at the next scrape', async () => {
    await f.open({ monitoring: { alertTimer: false, sinks: [], defaultMetrics: false } })
    await f.app.ready()
    await revokeToken(f.store, 'gw-1')
    for (let i = 0; i < 2; i++) {
      const res = await f.app.inject({
        method: 'GET',
        url: '/metrics',
        headers: { authorization: `Bearer ${f.adminToken}` },
      })
      expect(res.statusCode).toBe(200)
      const families = new Map(parsePrometheus(res.body).map((x) => [x.name, x]))
      expect(families.get('rmq_broker_nodes')).toBeDefined()
      expect(res.body).toContain('# TYPE rmq_node_health gauge\n')
      expect(res.body).toContain('# TYPE rmq_node_messages_received_total counter\n')
      expect(res.body).not.toContain('node="')
    }
    await report('gw-0', 1, 2)
    const s = await scrape()
    expect(of(s, 'rmq_node_backlog_messages', 'gw-0')).toBe('2')
    expect(of(s, 'rmq_node_health', 'gw-0', 'ok')).toBe('1')
  })

  it('a new report shows at the next scrape, in the same ms, and only for its node', async () => {
    await f.open({ monitoring: { alertTimer: false, sinks: [], defaultMetrics: true } })
    await f.app.ready()
    for (let i = 0; i < NODES; i++) await report(`gw-${i}`, 1, i % 3)
    const a = await scrape()
    expect(of(a, 'rmq_node_backlog_messages', 'gw-7')).toBe('1')
    expect(of(a, 'rmq_node_messages_received_total', 'gw-7')).toBe('1')
    // Same ms, no clock change: gw-7's new report (a new seq, backlog and counters) is in the next scrape.
    await report('gw-7', 2, 5, 1)
    const b = await scrape()
    expect(of(b, 'rmq_node_backlog_messages', 'gw-7')).toBe('5')
    expect(of(b, 'rmq_node_backlog_bytes', 'gw-7')).toBe('500')
    expect(of(b, 'rmq_node_messages_received_total', 'gw-7')).toBe('2')
    expect(of(b, 'rmq_node_batches_total', 'gw-7')).toBe('2')
    expect(of(b, 'rmq_node_dropped_messages_total', 'gw-7')).toBe('1')
    expect(of(b, 'rmq_node_sync_success_ratio', 'gw-7')).toBe(String(11 / 12))
    expect(others(b, ['gw-7'])).toEqual(others(a, ['gw-7']))

    // Through HTTP, as a node sends it: gw-1 (the fixture's token) appears and is counted.
    const res = await f.post(makeBatch('gw-1', [message(3, T0 - 500)], { clock: f.clock, batch: 'http-1' }))
    expect(res.statusCode).toBe(200)
    const c = await scrape()
    expect(of(c, 'rmq_node_messages_received_total', 'gw-1')).toBe('2')
    expect(of(c, 'rmq_node_backlog_messages', 'gw-1')).toBe('0')

    // Another handle on the same store (a second broker process): its write is in the next scrape too.
    const other = await openSqliteBrokerStore({ dataDir: f.tmp.dir })
    try {
      await other.ingest(makeBatch('gw-9', [message(2, T0 - 400)], { clock: f.clock, batch: 'other-2' }), {
        now: f.clock,
        maxLateness: 5 * MIN,
      })
      await other.ingest(makeBatch('gw-new', [message(1, T0 - 400)], { clock: f.clock }), {
        now: f.clock,
        maxLateness: 5 * MIN,
      })
    } finally {
      await other.close()
    }
    const d = await scrape()
    expect(of(d, 'rmq_node_messages_received_total', 'gw-9')).toBe('2')
    expect(of(d, 'rmq_node_messages_received_total', 'gw-new')).toBe('1')
    expect(others(d, ['gw-9', 'gw-new'])).toEqual(others(c, ['gw-9', 'gw-new']))
  })

  it('health and ages follow the clock alone; tokens made and revoked show at the next scrape', async () => {
    await f.open({ monitoring: { alertTimer: false, sinks: [], defaultMetrics: false } })
    await f.app.ready()
    for (let i = 0; i < NODES; i++) await report(`gw-${i}`, 1, 0)
    const a = await scrape()
    expect(of(a, 'rmq_node_health', 'gw-3', 'ok')).toBe('1')
    expect(of(a, 'rmq_node_last_sync_age_seconds', 'gw-3')).toBe('0')
    f.clock = T0 + 16 * MIN
    const b = await scrape()
    for (let i = 0; i < NODES; i++) {
      expect(of(b, 'rmq_node_health', `gw-${i}`, 'stale')).toBe('1')
      expect(of(b, 'rmq_node_health', `gw-${i}`, 'ok')).toBe('0')
      expect(of(b, 'rmq_node_last_sync_age_seconds', `gw-${i}`)).toBe(String(16 * 60))
      // What changes only with a report stays as it was.
      expect(of(b, 'rmq_node_messages_received_total', `gw-${i}`)).toBe('1')
      expect(of(b, 'rmq_node_last_sync_timestamp_seconds', `gw-${i}`)).toBe(String(T0 / 1000))
    }
    // A new node token is never-seen at the next scrape (same ms); a revoked one is gone at the next.
    await createNodeToken(f.store, 'gw-fresh')
    const c = await scrape()
    expect(of(c, 'rmq_node_health', 'gw-fresh', 'never-seen')).toBe('1')
    expect(of(c, 'rmq_node_messages_received_total', 'gw-fresh')).toBeUndefined()
    expect(await revokeToken(f.store, 'gw-fresh')).toEqual({ name: 'gw-fresh', revoked: true })
    const d = await scrape()
    expect(of(d, 'rmq_node_health', 'gw-fresh', 'never-seen')).toBeUndefined()
    expect(d).toEqual(b)
  })

  it('concurrent scrapes around a report agree with each other and with the store', async () => {
    await f.open({ monitoring: { alertTimer: false, sinks: [], defaultMetrics: false } })
    await f.app.ready()
    for (let i = 0; i < NODES; i++) await report(`gw-${i}`, 1, 0)
    const before = await scrape()
    await report('gw-20', 2, 4)
    const all = await Promise.all(Array.from({ length: 16 }, () => scrape()))
    for (const s of all) {
      expect(s).toEqual(all[0])
      expect(of(s, 'rmq_node_backlog_messages', 'gw-20')).toBe('4')
    }
    expect(others(all[0], ['gw-20'])).toEqual(others(before, ['gw-20']))
  })
})
