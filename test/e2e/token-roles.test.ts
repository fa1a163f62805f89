/**
 * Credentials on real broker processes with the real `rmq broker token`
 * commands: a revoked or expired token is 401 (saying which); rotation keeps
 * the old token working within its grace and not after (a 2 s grace, bounded
 * waits); `token list` shows roles, scopes and expiry; mistakes are exit 65
 * with a fix; a schema-3 broker.db made before roles is migrated in place and
 * its node tokens keep working as role node. In-process, per route and role:
 * test/broker/authorization.test.ts.
 */
import path from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, describe, expect, it } from 'vitest'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import { hashToken } from '../../src/broker/tokens.js'
import {
  makeBatch,
  message,
  postBatch,
  request,
  startBrokerProcess,
  type BrokerProcess,
} from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } })

/** Poll `fn` every 100 ms until it is true; fails after `limitMs`. Returns the time it took. */
async function within(limitMs: number, what: string, fn: () => Promise<boolean>): Promise<number> {
  const t0 = Date.now()
  while (!(await fn())) {
    if (Date.now() - t0 > limitMs) throw new Error(`${what}: not within ${limitMs} ms`)
    await sleep(100)
  }
  return Date.now() - t0
}

describe('broker credentials on real processes', () => {
  let broker: BrokerProcess | undefined
  afterEach(async () => {
    await broker?.cleanup()
    broker = undefined
  })

  it('a revoked token is 401; an expired one is 401 saying it expired', async () => {
    broker = await startBrokerProcess({ auth: 'token' })
    const node = await broker.createToken('gw-r')
    const batch = (seq: number) => makeBatch('gw-r', [message(seq, Date.now())], { batch: `b-${seq}` })
    expect((await postBatch(broker.url, batch(1), { token: node })).status).toBe(200)
    const revoke = await runCli(['broker', 'token', 'revoke', 'gw-r', '--data-dir', broker.dataDir, '--json'])
    expect(revoke.code, revoke.stderr).toBe(0)
    expect(parseJson(revoke.stdout)).toEqual({ name: 'gw-r', revoked: true })
    const refused = await postBatch(broker.url, batch(2), { token: node })
    expect(refused.status).toBe(401)
    expect(refused.body).toMatchObject({ code: 'UNAUTHORIZED' })

    const brief = await broker.createToken('brief', { role: 'monitor', expires: '2s' })
    const made = Date.now()
    expect((await request('GET', `${broker.url}/v1/nodes`, bearer(brief))).status).toBe(200)
    let last: Awaited<ReturnType<typeof request>> | undefined
    const took = await within(15_000, 'the 2 s token to expire', async () => {
      last = await request('GET', `${broker!.url}/v1/nodes`, bearer(brief))
      return last.status !== 200
    })
    expect(last!.status).toBe(401)
    expect(last!.body).toMatchObject({ code: 'TOKEN_EXPIRED' })
    expect(last!.body.error).toMatch(/"brief" expired at \d{4}-\d\d-\d\dT/)
    // Not before its time (the token was made just before `made`).
    expect(Date.now() - made + 200).toBeGreaterThanOrEqual(2000)
    expect(took).toBeGreaterThan(0)
  }, 60_000)

  it('rotation: the old token works within the grace and not after; the new one works', async () => {
    broker = await startBrokerProcess({ auth: 'token' })
    const old = await broker.createToken('gw-1')
    const send = (token: string, seq: number) =>
      postBatch(broker!.url, makeBatch('gw-1', [message(seq, Date.now())], { batch: `b-${seq}` }), { token })
    expect((await send(old, 1)).status).toBe(200)
    const rotated = await runCli([
      'broker',
      'token',
      'rotate',
      'gw-1',
      '--grace',
      '2s',
      '--data-dir',
      broker.dataDir,
      '--json',
    ])
    const at = Date.now()
    expect(rotated.code, rotated.stderr).toBe(0)
    const r = parseJson(rotated.stdout)
    expect(r).toMatchObject({ name: 'gw-1', role: 'node' })
    expect(r.token).toMatch(/^rmq_/)
    expect(r.token).not.toBe(old)
    expect(r.previousValidUntil).toBeGreaterThan(at - 5000)
    // Within the grace both work.
    expect((await send(old, 2)).status).toBe(200)
    expect((await send(r.token, 3)).status).toBe(200)
    let refused: Awaited<ReturnType<typeof send>> | undefined
    await within(15_000, 'the old token to stop after its 2 s grace', async () => {
      refused = await send(old, 4)
      return refused.status !== 200
    })
    expect(Date.now() - at).toBeGreaterThanOrEqual(1500)
    expect(refused!.status).toBe(401)
    expect(refused!.body).toMatchObject({ code: 'TOKEN_ROTATED' })
    expect((await send(r.token, 5)).status).toBe(200)
    // The human output prints the token once and says until when the old one works.
    const human = await runCli([
      'broker',
      'token',
      'rotate',
      'gw-1',
      '--grace',
      '0',
      '--data-dir',
      broker.dataDir,
    ])
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout.trim()).toMatch(/^rmq_\S+$/)
    expect(human.stderr).toMatch(/rotated the node token of gw-1; the old token works until \d{4}-/)
    expect((await send(r.token, 6)).status).toBe(401)
  }, 60_000)

  it('token create and list show roles, scopes and expiry; mistakes are exit 65 with a fix', async () => {
    broker = await startBrokerProcess({ auth: 'token' })
    const dir = ['--data-dir', broker.dataDir]
    const created = await runCli([
      'broker',
      'token',
      'create',
      'etl',
      '--role',
      'consumer',
      '--topics',
      'plant/7/#, alarms/#',
      '--groups',
      'billing,etl',
      '--expires',
      '90d',
      '--json',
      ...dir,
    ])
    expect(created.code, created.stderr).toBe(0)
    const c = parseJson(created.stdout)
    expect(c).toMatchObject({
      name: 'etl',
      role: 'consumer',
      topics: ['plant/7/#', 'alarms/#'],
      groups: ['billing', 'etl'],
      replaced: false,
    })
    expect(c.expiresAt - c.createdAt).toBe(90 * 86_400_000)
    await broker.createToken('gw-1')
    await broker.createToken('grafana', { role: 'monitor' })
    const list = await runCli(['broker', 'token', 'list', '--json', ...dir])
    expect(list.code, list.stderr).toBe(0)
    const tokens = parseJson(list.stdout).tokens
    expect(tokens.map((t: { name: string; role: string }) => `${t.name}:${t.role}`)).toEqual([
      'etl:consumer',
      'grafana:monitor',
      'gw-1:node',
    ])
    expect(list.stdout).not.toContain(c.token)
    const human = await runCli(['broker', 'token', 'list', ...dir])
    expect(human.stdout).toMatch(/^name\s+role\s+scopes\s+created\s+last used\s+expires/m)
    expect(human.stdout).toMatch(/^etl\s+consumer\s+topics plant\/7\/#,alarms\/#; groups billing,etl\s/m)
    expect(human.stdout).toMatch(/^gw-1\s+node\s+own node\s/m)

    // The consumer reads inside its grants only, on the real process.
    const inside = await request('GET', `${broker.url}/v1/messages?topic=plant/7/%23`, bearer(c.token))
    expect(inside.status).toBe(200)
    const wider = await request('GET', `${broker.url}/v1/messages?topic=plant/%23`, bearer(c.token))
    expect(wider.status).toBe(403)
    expect(wider.body.error).toContain('lacks permission messages:read on topic filter "plant/#"')
    // The commands say so with the fix: exit 78, never a stack trace.
    const env = { RMQ_BROKER_URL: broker.url, RMQ_TOKEN: c.token }
    const consumeWide = await runCli(['consume', '#'], { env })
    expect(consumeWide.code, consumeWide.stderr).toBe(78)
    expect(consumeWide.stderr).toMatch(/lacks permission messages:read on topic filter "#"/)
    expect(consumeWide.stderr).toMatch(/fix: .*--role consumer --topics/)
    const consumeOk = await runCli(['consume', 'plant/7/#', '--json'], { env })
    expect(consumeOk.code, consumeOk.stderr).toBe(0)
    const fleetAsConsumer = await runCli(['status', '--broker'], { env })
    expect(fleetAsConsumer.code).toBe(78)
    expect(fleetAsConsumer.stderr).toMatch(/lacks permission fleet:read/)
    expect(fleetAsConsumer.stderr).toMatch(/--role monitor/)

    for (const [args, problem, fix] of [
      [['x', '--topics', 'a/#'], /--topics and --groups are for role consumer, not node/, /leave them out/],
      [['x', '--role', 'consumer'], /a consumer token needs the topics it may read/, /--topics/],
      [['x', '--role', 'consumer', '--topics', 'a/#/b'], /"a\/#\/b" is not a topic filter/, /filters/],
      [['x', '--expires', 'soon'], /--expires: "soon" is not a duration/, /90d/],
      [['bad name'], /invalid node id "bad name"/, /characters/],
    ] as const) {
      const r = await runCli(['broker', 'token', 'create', ...args, ...dir])
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(65)
      expect(r.stderr).toMatch(problem)
      expect(r.stderr).toMatch(/fix: /)
      expect(r.stderr).toMatch(fix)
      expect(r.stderr).not.toMatch(/\s+at \S+ \(/)
    }
    const unknown = await runCli(['broker', 'token', 'rotate', 'nobody', ...dir])
    expect(unknown.code).toBe(65)
    expect(unknown.stderr).toMatch(/there is no token named "nobody"/)
    const badGrace = await runCli(['broker', 'token', 'rotate', 'etl', '--grace', 'x', ...dir])
    expect(badGrace.code).toBe(65)
    expect(badGrace.stderr).toMatch(/--grace: "x" is not a duration/)
  }, 90_000)

  it('a schema-3 broker.db made before roles is migrated in place; its node tokens keep working as node', async () => {
    const tmp = makeTempDir('rmq-schema3-')
    try {
      // A store as rmq wrote it before roles: the current schema with schema 3's tokens table and version.
      const store = await openSqliteBrokerStore({ dataDir: tmp.dir })
      await store.close()
      const file = path.join(tmp.dir, 'broker.db')
      const legacy = 'rmq_legacy-token-of-gw-old-0123456789abcdefghijklmnop'
      const db = new Database(file)
      db.exec(`DROP INDEX tokens_previous; DROP TABLE tokens;
        CREATE TABLE tokens (node TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
          last_used_at INTEGER);
        UPDATE broker_meta SET schema_version = 3 WHERE id = 1;`)
      db.prepare('INSERT INTO tokens (node, hash, created_at, last_used_at) VALUES (?, ?, ?, NULL)').run(
        'gw-old',
        hashToken(legacy),
        Date.now() - 60_000,
      )
      db.close()

      broker = await startBrokerProcess({ auth: 'token', dataDir: tmp.dir })
      const ok = await postBatch(broker.url, makeBatch('gw-old', [message(1, Date.now())]), { token: legacy })
      expect(ok.status, JSON.stringify(ok.body)).toBe(200)
      const other = await postBatch(broker.url, makeBatch('gw-else', [message(1, Date.now())]), {
        token: legacy,
      })
      expect(other.status).toBe(403)
      expect((await request('GET', `${broker.url}/v1/nodes/gw-old`, bearer(legacy))).status).toBe(200)
      expect((await request('GET', `${broker.url}/v1/nodes`, bearer(legacy))).status).toBe(403)
      const list = await runCli(['broker', 'token', 'list', '--json', '--data-dir', tmp.dir])
      expect(parseJson(list.stdout).tokens).toMatchObject([
        { name: 'gw-old', node: 'gw-old', role: 'node', topics: [], groups: [], expiresAt: null },
      ])
      await broker.stop()
      const after = new Database(file, { readonly: true })
      expect(after.prepare('SELECT schema_version FROM broker_meta').pluck().get()).toBe(4)
      after.close()
    } finally {
      await broker?.cleanup()
      broker = undefined
      tmp.cleanup()
    }
  }, 60_000)
})
