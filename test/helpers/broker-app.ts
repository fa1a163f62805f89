/**
 * The broker-app fixture: a broker app built by createBrokerApp on a real
 * SQLite store in a temp dir, driven with fastify's inject (no port bound),
 * with a node token and an admin token, a settable clock and helpers to post batches and read
 * pages. End-to-end tests use real processes instead (./broker.ts).
 */
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { createBrokerApp, type CreateBrokerAppOptions } from '../../src/broker/app.js'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import type { BrokerStore } from '../../src/broker/store/types.js'
import { createNodeToken, createToken } from '../../src/broker/tokens.js'
import { encodeBody, type Encoding } from './broker.js'
import { makeTempDir } from './cli.js'

export const MIN = 60_000
export const T0 = 1_764_000_000_000

/** Options of a test broker: SQLite, token auth, silent, no retention, alerts evaluated by hand. */
export function brokerAppOptions(
  dataDir: string,
  extra: Partial<CreateBrokerAppOptions> = {},
): CreateBrokerAppOptions {
  return {
    host: '127.0.0.1',
    port: 0,
    dataDir,
    store: 'sqlite',
    auth: 'token',
    limits: { bodyBytes: 8 << 20, decompressedBytes: 64 << 20, ratePerNode: 0 },
    maxLateness: 5 * MIN,
    // The fixture's clock is T0 while makeBatch stamps `clock` with Date.now(): event time is bounded
    // only where a test asks for it (test/broker/event-time.test.ts).
    futureSkew: { maxMs: 100 * 365 * 24 * 60 * MIN, policy: 'reject' },
    retention: 0,
    alerts: { noSyncFor: 0, backlogAge: 0, dataLoss: true, interval: 10_000, webhooks: [] },
    logFormat: 'silent',
    ...extra,
  }
}

export interface PostOptions {
  enc?: Encoding
  /** Bearer token; null sends none; default the fixture's node token. */
  tok?: string | null
  headers?: Record<string, string>
}

export class BrokerAppFixture {
  readonly tmp = makeTempDir('rmq-broker-app-')
  app!: FastifyInstance
  store!: BrokerStore
  /** Token of node `gw-1` (role node: publishes gw-1's batches). */
  token!: string
  /** Token of credential `admin` (role admin: reads messages, groups, the fleet). */
  adminToken!: string
  clock = T0

  /** Open the store and build the app (call once per test). */
  async open(extra: Partial<CreateBrokerAppOptions> = {}): Promise<this> {
    this.store = await openSqliteBrokerStore({ dataDir: this.tmp.dir })
    this.token = (await createNodeToken(this.store, 'gw-1')).token
    this.adminToken = (await createToken(this.store, { name: 'admin', role: 'admin' })).token
    this.app = await createBrokerApp(
      brokerAppOptions(this.tmp.dir, { storeInstance: this.store, now: () => this.clock, ...extra }),
    )
    return this
  }

  options(extra: Partial<CreateBrokerAppOptions> = {}): CreateBrokerAppOptions {
    return brokerAppOptions(this.tmp.dir, extra)
  }

  /** POST /v1/batches with a JSON (or raw) body. */
  post(body: unknown, opts: PostOptions = {}): Promise<LightMyRequestResponse> {
    return this.app.inject({
      method: 'POST',
      url: '/v1/batches',
      headers: {
        'content-type': 'application/json',
        'content-encoding': opts.enc ?? 'identity',
        ...(opts.tok === null ? {} : { authorization: `Bearer ${opts.tok ?? this.token}` }),
        ...opts.headers,
      },
      payload: Buffer.isBuffer(body) ? body : encodeBody(body, opts.enc ?? 'identity'),
    })
  }

  /** GET /v1/messages?query; fails the test unless 200. */
  async read(query: string): Promise<any> {
    const res = await this.app.inject({
      method: 'GET',
      url: `/v1/messages?${query}`,
      headers: { authorization: `Bearer ${this.adminToken}` },
    })
    if (res.statusCode !== 200) throw new Error(`GET /v1/messages?${query}: ${res.statusCode} ${res.body}`)
    return res.json()
  }

  async close(): Promise<void> {
    await this.app?.close()
    this.tmp.cleanup()
  }
}
