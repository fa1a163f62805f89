/**
 * Roles and the one authorization hook (src/broker/authorization.ts,
 * plugins/authorization.ts), in process with fastify inject:
 * - per role (and without a credential), every registered route (collected
 *   by rmq-authorization's onRoute hook, so a new route without a case here
 *   fails this test) answers its success code or 403 naming the missing
 *   permission (401 without a credential);
 * - a route that declares no permission stops the broker from starting;
 * - a consumer cannot read outside its topic grants, widen them with # or +,
 *   or use a group it was not granted; a node reads only its own status;
 * - expired and rotated-out tokens are 401 with the reason; /metrics is
 *   public only with broker.metrics.public;
 * - the dashboard's sign-in: a monitor or admin token gives an HttpOnly,
 *   SameSite=Strict session cookie that is not the token, good for reads only,
 *   ended by sign-out or by revoking the token.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { LightMyRequestResponse } from 'fastify'
import type { Permission } from '../../src/broker/authorization.js'
import type { TokenRole } from '../../src/broker/store/types.js'
import { createToken, revokeToken, rotateToken } from '../../src/broker/tokens.js'
import { BrokerAppFixture, MIN, T0 } from '../helpers/broker-app.js'
import { makeBatch, message } from '../helpers/broker.js'
import { makePki } from '../helpers/tls.js'

type Who = TokenRole | 'anonymous'
const WHO: Who[] = ['anonymous', 'node', 'consumer', 'monitor', 'admin']

interface RouteCase {
  permission: Permission
  /** The request made for this route (method from the route). */
  url: string
  payload?: (tokens: Record<TokenRole, string>, who: Who) => unknown
  /** Expected status per credential; the success code for those allowed. */
  expect: Record<Who, number>
}

const ok = (success = 200, nodeToo = false): Record<Who, number> => ({
  anonymous: 401,
  node: nodeToo ? success : 403,
  consumer: 403,
  monitor: success,
  admin: success,
})
const everyone = (code = 200): Record<Who, number> => ({
  anonymous: code,
  node: code,
  consumer: code,
  monitor: code,
  admin: code,
})

/** One case per route, keyed "METHOD url" as fastify registered it. GET cases also stand for HEAD. */
const CASES: Record<string, RouteCase> = {
  'GET /healthz': { permission: 'public', url: '/healthz', expect: everyone() },
  'GET /metrics': { permission: 'metrics:read', url: '/metrics', expect: ok() },
  'GET /': { permission: 'public', url: '/', expect: everyone() },
  'GET /dashboard/app.js': { permission: 'public', url: '/dashboard/app.js', expect: everyone() },
  'GET /dashboard/style.css': { permission: 'public', url: '/dashboard/style.css', expect: everyone() },
  'GET /dashboard/uplot.js': { permission: 'public', url: '/dashboard/uplot.js', expect: everyone() },
  'GET /dashboard/uplot.css': { permission: 'public', url: '/dashboard/uplot.css', expect: everyone() },
  'POST /dashboard/session': {
    permission: 'public',
    url: '/dashboard/session',
    payload: (t, who) => ({ token: who === 'anonymous' ? 'rmq_not-a-token' : t[who] }),
    // The sign-in checks the token itself: unknown 401, a role that may not see the dashboard 403.
    expect: { anonymous: 401, node: 403, consumer: 403, monitor: 200, admin: 200 },
  },
  'DELETE /dashboard/session': { permission: 'public', url: '/dashboard/session', expect: everyone() },
  'POST /v1/batches': {
    permission: 'batches:write',
    url: '/v1/batches',
    payload: () => makeBatch('gw-1', [message(1, T0 - 1000, 'plant/7/temp')], { batch: 'b-walk' }),
    expect: { anonymous: 401, node: 200, consumer: 403, monitor: 403, admin: 200 },
  },
  'GET /v1/messages': {
    permission: 'messages:read',
    url: '/v1/messages?topic=plant/7/%23&group=billing',
    expect: { anonymous: 401, node: 403, consumer: 200, monitor: 403, admin: 200 },
  },
  'GET /v1/heads': {
    permission: 'heads:read',
    url: '/v1/heads',
    expect: { anonymous: 401, node: 403, consumer: 200, monitor: 200, admin: 200 },
  },
  'GET /v1/groups': {
    permission: 'groups:read',
    url: '/v1/groups',
    expect: { anonymous: 401, node: 403, consumer: 200, monitor: 200, admin: 200 },
  },
  'POST /v1/groups/:name/commit': {
    permission: 'groups:commit',
    url: '/v1/groups/billing/commit',
    payload: () => ({ order: 'event', position: 0 }),
    expect: { anonymous: 401, node: 403, consumer: 200, monitor: 403, admin: 200 },
  },
  'GET /v1/nodes': { permission: 'fleet:read', url: '/v1/nodes', expect: ok() },
  'GET /v1/nodes/:id': { permission: 'nodes:read', url: '/v1/nodes/gw-1', expect: ok(200, true) },
  'GET /v1/alerts': { permission: 'alerts:read', url: '/v1/alerts', expect: ok() },
  'GET /v1/history': { permission: 'history:read', url: '/v1/history', expect: ok() },
}

describe('authorization: roles and the one hook', () => {
  let fx: BrokerAppFixture
  let tokens: Record<TokenRole, string>

  const open = async (extra: Parameters<BrokerAppFixture['open']>[0] = {}) => {
    fx = await new BrokerAppFixture().open(extra)
    tokens = {
      node: fx.token,
      consumer: (
        await createToken(fx.store, {
          name: 'etl',
          role: 'consumer',
          topics: ['plant/7/#', 'alarms/#'],
          groups: ['billing'],
        })
      ).token,
      monitor: (await createToken(fx.store, { name: 'ops', role: 'monitor' })).token,
      admin: fx.adminToken,
    }
    const res = await fx.post(
      makeBatch('gw-1', [message(1, T0 - 2000, 'plant/7/temp'), message(2, T0 - 1500, 'plant/8/temp')]),
    )
    expect(res.statusCode, res.body).toBe(200)
  }
  const as = (who: Who | string, method: string, url: string, payload?: unknown) => {
    const token = who === 'anonymous' ? undefined : ((tokens as Record<string, string>)[who] ?? who)
    return fx.app.inject({
      method: method as 'GET',
      url,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }),
    })
  }
  const forbidden = (res: LightMyRequestResponse, permission: string) => {
    expect(res.statusCode, res.body).toBe(403)
    expect(res.json()).toMatchObject({ code: 'FORBIDDEN' })
    expect(res.json().error).toContain(`permission ${permission}`)
  }

  beforeEach(() => {
    fx = undefined as unknown as BrokerAppFixture
  })
  afterEach(async () => {
    await fx?.close()
  })

  it('per role, every registered route answers its success code or 403 naming the permission', async () => {
    await open()
    await fx.app.ready()
    const rules = fx.app.routeRules
    expect(rules.length).toBeGreaterThanOrEqual(Object.keys(CASES).length)
    const seen = new Set<string>()
    let checked = 0
    for (const rule of rules) {
      const key = `${rule.method === 'HEAD' ? 'GET' : rule.method} ${rule.url}`
      const c = CASES[key]
      if (!c) throw new Error(`route ${rule.method} ${rule.url} has no case in this test: add one to CASES`)
      expect(rule.permission, key).toBe(c.permission)
      seen.add(key)
      for (const who of WHO) {
        const res = await as(who, rule.method, c.url, c.payload?.(tokens, who))
        const want = c.expect[who]
        expect(res.statusCode, `${rule.method} ${c.url} as ${who}: ${res.body}`).toBe(want)
        if (want === 403 && rule.method !== 'HEAD' && c.permission !== 'public')
          expect(res.json().error, `${rule.method} ${c.url} as ${who}`).toContain(
            `permission ${c.permission}`,
          )
        if (want === 401 && rule.method !== 'HEAD') expect(res.json().code).toBe('UNAUTHORIZED')
        checked++
      }
    }
    expect([...seen].sort()).toEqual(Object.keys(CASES).sort())
    expect(checked).toBe(rules.length * WHO.length)
  })

  it('a route that declares no permission stops the broker from starting', async () => {
    fx = new BrokerAppFixture()
    await expect(
      fx.open({
        plugins: [
          async (app) => {
            app.get('/v1/secret', async () => ({ secret: true }))
          },
        ],
      }),
    ).rejects.toThrow(/route GET \/v1\/secret declares no permission/)
  })

  it('a route of a plugin that declares its permission is authorized like the built-in ones', async () => {
    await open({
      plugins: [
        async (app) => {
          app.get('/v1/extra', { config: { permission: 'fleet:read' } }, async () => ({ ok: true }))
        },
      ],
    })
    expect((await as('monitor', 'GET', '/v1/extra')).statusCode).toBe(200)
    forbidden(await as('node', 'GET', '/v1/extra'), 'fleet:read')
    expect((await as('anonymous', 'GET', '/v1/extra')).statusCode).toBe(401)
  })

  it('a consumer reads only inside its topic grants: a wider filter is 403, not narrowed', async () => {
    await open()
    const page = await as('consumer', 'GET', '/v1/messages?topic=plant/7/%23')
    expect(page.statusCode, page.body).toBe(200)
    expect(page.json().messages.map((m: { topic: string }) => m.topic)).toEqual(['plant/7/temp'])
    expect((await as('consumer', 'GET', '/v1/messages?topic=plant/7/temp')).statusCode).toBe(200)
    expect((await as('consumer', 'GET', '/v1/messages?topic=alarms/%2B/fire')).statusCode).toBe(200)
    for (const topic of ['plant/8/temp', 'plant/%23', '%23', 'plant/%2B/temp', '%2B/7/temp', 'alarm/x']) {
      const res = await as('consumer', 'GET', `/v1/messages?topic=${topic}`)
      forbidden(res, 'messages:read')
      expect(res.json().error).toContain('"plant/7/#", "alarms/#"')
    }
    // No topic is every topic: wider than the grants.
    forbidden(await as('consumer', 'GET', '/v1/messages'), 'messages:read')
    // An invalid filter is still the route's 400.
    expect((await as('consumer', 'GET', '/v1/messages?topic=a/%23/b')).statusCode).toBe(400)
  })

  it('a consumer uses only its granted groups: reading with or committing another is 403', async () => {
    await open()
    expect((await as('consumer', 'GET', '/v1/messages?topic=plant/7/%23&group=billing')).statusCode).toBe(200)
    const read = await as('consumer', 'GET', '/v1/messages?topic=plant/7/%23&group=etl')
    forbidden(read, 'messages:read')
    expect(read.json().error).toContain('consumer group "etl"')
    // A repeated parameter does not slip past the check.
    forbidden(
      await as('consumer', 'GET', '/v1/messages?topic=plant/7/%23&group=billing&group=etl'),
      'messages:read',
    )
    expect((await as('consumer', 'GET', '/v1/messages?topic=plant/7/%23&topic=%23')).statusCode).toBe(400)
    const commit = await as('consumer', 'POST', '/v1/groups/etl/commit', { position: 1 })
    forbidden(commit, 'groups:commit')
    expect(commit.json().error).toContain('it is granted "billing"')
    // Nothing was committed for etl; billing commits.
    expect(await fx.store.groupPosition('etl', 'event')).toBeUndefined()
    expect((await as('consumer', 'POST', '/v1/groups/billing/commit', { position: 1 })).statusCode).toBe(200)
    // The admin commits etl; the consumer's list shows only billing.
    expect((await as('admin', 'POST', '/v1/groups/etl/commit', { position: 1 })).statusCode).toBe(200)
    const mine = (await as('consumer', 'GET', '/v1/groups'))
      .json()
      .groups.map((g: { name: string }) => g.name)
    expect([...new Set(mine)]).toEqual(['billing'])
    const all = (await as('admin', 'GET', '/v1/groups')).json().groups.map((g: { name: string }) => g.name)
    expect([...new Set(all)].sort()).toEqual(['billing', 'etl'])
  })

  it('a node posts only its own batches and reads only its own status', async () => {
    await open()
    const other = await fx.post(makeBatch('gw-2', [message(1, T0 - 1000)]))
    expect(other.statusCode).toBe(403)
    expect(other.json().code).toBe('WRONG_NODE')
    expect((await as('node', 'GET', '/v1/nodes/gw-1')).statusCode).toBe(200)
    const res = await as('node', 'GET', '/v1/nodes/gw-2')
    forbidden(res, 'nodes:read')
    expect(res.json().error).toContain('a node reads only its own status')
    forbidden(await as('node', 'GET', '/v1/nodes'), 'fleet:read')
    // The admin may post for any node.
    expect(
      (await fx.post(makeBatch('gw-2', [message(1, T0 - 1000)]), { tok: tokens.admin })).statusCode,
    ).toBe(200)
  })

  it('an expired token is 401 saying so; a rotated-out token works for its grace and not after', async () => {
    await open()
    const short = (await createToken(fx.store, { name: 'brief', role: 'monitor', expires: '1m' }, fx.clock))
      .token
    expect((await as(short, 'GET', '/v1/nodes')).statusCode).toBe(200)
    fx.clock += MIN
    const expired = await as(short, 'GET', '/v1/nodes')
    expect(expired.statusCode).toBe(401)
    expect(expired.json()).toMatchObject({ code: 'TOKEN_EXPIRED' })
    expect(expired.json().error).toMatch(/"brief" expired at \d{4}-/)

    const old = tokens.monitor
    const rotated = await rotateToken(fx.store, 'ops', '2s', fx.clock)
    expect((await as(old, 'GET', '/v1/nodes')).statusCode).toBe(200)
    expect((await as(rotated.token, 'GET', '/v1/nodes')).statusCode).toBe(200)
    fx.clock += 2000
    const after = await as(old, 'GET', '/v1/nodes')
    expect(after.statusCode).toBe(401)
    expect(after.json()).toMatchObject({ code: 'TOKEN_ROTATED' })
    expect((await as(rotated.token, 'GET', '/v1/nodes')).statusCode).toBe(200)
    // Revoked: both gone.
    await revokeToken(fx.store, 'ops')
    expect((await as(rotated.token, 'GET', '/v1/nodes')).statusCode).toBe(401)
  })

  it('/metrics needs monitor or admin unless broker.metrics.public', async () => {
    await open()
    expect((await as('anonymous', 'GET', '/metrics')).statusCode).toBe(401)
    forbidden(await as('node', 'GET', '/metrics'), 'metrics:read')
    expect((await as('monitor', 'GET', '/metrics')).body).toContain('rmq_')
    await fx.close()
    await open({ metricsPublic: true })
    const res = await as('anonymous', 'GET', '/metrics')
    expect(res.statusCode).toBe(200)
    expect(res.body).toContain('rmq_')
  })

  it('dashboard sign-in: a session cookie (not the token) for reads, ended by sign-out or revocation', async () => {
    await open()
    const signIn = await as('anonymous', 'POST', '/dashboard/session', { token: tokens.monitor })
    expect(signIn.statusCode, signIn.body).toBe(200)
    expect(signIn.json()).toMatchObject({ name: 'ops', role: 'monitor' })
    const setCookie = String(signIn.headers['set-cookie'])
    expect(setCookie).toMatch(
      /^rmq_session=[A-Za-z0-9_-]{40,}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/,
    )
    // Plain HTTP here: not Secure (over HTTPS it is: the next case).
    expect(setCookie).not.toContain('Secure')
    expect(setCookie).not.toContain(tokens.monitor)
    const cookie = setCookie.split(';')[0]
    const withCookie = (method: string, url: string, payload?: unknown) =>
      fx.app.inject({
        method: method as 'GET',
        url,
        headers: { cookie, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }),
      })
    expect((await withCookie('GET', '/v1/nodes')).statusCode).toBe(200)
    expect((await withCookie('GET', '/v1/alerts')).statusCode).toBe(200)
    forbidden(await withCookie('GET', '/v1/messages?topic=plant/7/%23'), 'messages:read')
    // An admin's session still does not act: the cookie counts for GET only.
    const adminIn = await as('anonymous', 'POST', '/dashboard/session', { token: tokens.admin })
    const adminCookie = String(adminIn.headers['set-cookie']).split(';')[0]
    const post = await fx.app.inject({
      method: 'POST',
      url: '/v1/groups/billing/commit',
      headers: { cookie: adminCookie, 'content-type': 'application/json' },
      payload: JSON.stringify({ position: 1 }),
    })
    expect(post.statusCode).toBe(401)
    // Sign-out ends the session; revoking the token ends the others.
    const out = await withCookie('DELETE', '/dashboard/session')
    expect(String(out.headers['set-cookie'])).toContain('Max-Age=0')
    expect((await withCookie('GET', '/v1/nodes')).statusCode).toBe(401)
    const again = String(
      (await as('anonymous', 'POST', '/dashboard/session', { token: tokens.monitor })).headers['set-cookie'],
    ).split(';')[0]
    expect((await fx.app.inject({ url: '/v1/nodes', headers: { cookie: again } })).statusCode).toBe(200)
    await revokeToken(fx.store, 'ops')
    expect((await fx.app.inject({ url: '/v1/nodes', headers: { cookie: again } })).statusCode).toBe(401)
    // A made-up session id is 401 too.
    expect(
      (await fx.app.inject({ url: '/v1/nodes', headers: { cookie: 'rmq_session=abc' } })).json().code,
    ).toBe('UNAUTHORIZED')
  })

  it('over HTTPS the session cookie is Secure as well', async () => {
    const pki = makePki()
    try {
      await open({ tls: { cert: pki.serverCert.cert, key: pki.serverCert.key } })
      const signIn = await as('anonymous', 'POST', '/dashboard/session', { token: tokens.monitor })
      expect(signIn.statusCode, signIn.body).toBe(200)
      expect(String(signIn.headers['set-cookie'])).toMatch(
        /; HttpOnly; SameSite=Strict; Secure; Max-Age=\d+$/,
      )
    } finally {
      pki.cleanup()
    }
  })
})
