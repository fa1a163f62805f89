import type { FastifyInstance } from 'fastify'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createBrokerApp, type CreateBrokerAppOptions } from '../../src/broker/app.js'
import { openSqliteBrokerStore } from '../../src/broker/store/sqlite.js'
import { StoreUnavailableError, type BrokerStore } from '../../src/broker/store/types.js'
import { createNodeToken, createToken } from '../../src/broker/tokens.js'
import { encodeFrames, FRAMES_CONTENT_TYPE } from '../../src/protocol/batch.js'
import { brokerAppOptions, MIN, T0 } from '../helpers/broker-app.js'
import { makeTempDir } from '../helpers/cli.js'
import { encodeBody, makeBatch, message, type Encoding } from '../helpers/broker.js'

const options = brokerAppOptions

describe('broker app (inject)', () => {
  let tmp: ReturnType<typeof makeTempDir>
  let app: FastifyInstance
  let store: BrokerStore
  let token: string
  /** An admin credential: reads messages and commits groups (a node token may not). */
  let adminTok: string
  let clock: number

  const open = async (extra: Partial<CreateBrokerAppOptions> = {}) => {
    store = await openSqliteBrokerStore({ dataDir: tmp.dir })
    token = (await createNodeToken(store, 'gw-1')).token
    adminTok = (await createToken(store, { name: 'admin', role: 'admin' })).token
    app = await createBrokerApp(options(tmp.dir, { storeInstance: store, now: () => clock, ...extra }))
  }
  const post = (
    body: unknown,
    opts: { enc?: Encoding; tok?: string | null; headers?: Record<string, string> } = {},
  ) =>
    app.inject({
      method: 'POST',
      url: '/v1/batches',
      headers: {
        'content-type': 'application/json',
        'content-encoding': opts.enc ?? 'identity',
        ...(opts.tok === null ? {} : { authorization: `Bearer ${opts.tok ?? token}` }),
        ...opts.headers,
      },
      payload: Buffer.isBuffer(body) ? body : encodeBody(body, opts.enc ?? 'identity'),
    })
  const read = async (query: string) => {
    const res = await app.inject({
      method: 'GET',
      url: `/v1/messages?${query}`,
      headers: { authorization: `Bearer ${adminTok}` },
    })
    expect(res.statusCode, res.body).toBe(200)
    return res.json()
  }

  beforeEach(() => {
    tmp = makeTempDir('rmq-broker-app-')
    clock = T0
  })
  afterEach(async () => {
    await app?.close()
    tmp.cleanup()
  })

  it('stores a batch, answers after commit, dedups a resend', async () => {
    await open()
    const body = makeBatch('gw-1', [message(1, T0 - 2), message(2, T0 - 1)], { clock: T0 })
    const res = await post(body)
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json()).toEqual({
      accepted: 2,
      duplicates: 0,
      late: 0,
      watermark: T0,
      batch: body.batch,
      count: 2,
      features: ['pipeline', 'frames'],
    })
    const again = await post(body)
    expect(again.json()).toMatchObject({ accepted: 0, duplicates: 2 })
    const page = await read('topic=plant/%23')
    expect(page.messages.map((m: { seq: number }) => m.seq)).toEqual([1, 2])
    expect(page.messages[0]).toMatchObject({
      id: 'gw-1:epoch-gw-1:1',
      node: 'gw-1',
      position: 1,
      late: false,
    })
    expect(page.next).toBe(2)
  })

  it('decodes zstd and gzip bodies', async () => {
    await open()
    for (const [i, enc] of (['zstd', 'gzip'] as const).entries()) {
      const res = await post(makeBatch('gw-1', [message(i + 1, T0 - 10)], { clock: T0 }), { enc })
      expect(res.statusCode, res.body).toBe(200)
      expect(res.json().accepted).toBe(1)
    }
  })

  it('401 without or with a bad token, 403 for another node, nothing stored', async () => {
    await open()
    const body = makeBatch('gw-1', [message(1, T0)], { clock: T0 })
    expect((await post(body, { tok: null })).statusCode).toBe(401)
    expect((await post(body, { tok: 'rmq_wrong' })).statusCode).toBe(401)
    const other = await post(makeBatch('gw-2', [message(1, T0)], { clock: T0 }))
    expect(other.statusCode).toBe(403)
    expect(other.json().code).toBe('WRONG_NODE')
    const reads = await app.inject({ method: 'GET', url: '/v1/messages' })
    expect(reads.statusCode).toBe(401)
    expect((await store.heads()).total).toBe(0)
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200)
  })

  it('400 with a reason for invalid bodies; nothing stored', async () => {
    await open()
    const good = makeBatch('gw-1', [message(1, T0)], { clock: T0 })
    const bad: Array<[string, unknown]> = [
      ['malformed JSON', '{"node": "gw-1", '],
      ['non-integer seq', { ...good, messages: [{ ...message(1, T0), seq: 1.5 }] }],
      ['string seq', { ...good, messages: [{ ...message(1, T0), seq: '1' }] }],
      ['seq 0', { ...good, messages: [{ ...message(1, T0), seq: 0 }] }],
      ['NUL in topic', { ...good, messages: [{ ...message(1, T0), topic: 'a\u0000b' }] }],
      ['wildcard in topic', { ...good, messages: [{ ...message(1, T0), topic: 'a/+/b' }] }],
      ['long topic', { ...good, messages: [{ ...message(1, T0), topic: 'x'.repeat(1025) }] }],
      [
        'multibyte topic over 1024 bytes',
        { ...good, messages: [{ ...message(1, T0), topic: 'é'.repeat(600) }] },
      ],
      ['bad enc', { ...good, messages: [{ ...message(1, T0), enc: 'latin1' }] }],
      ['bad base64', { ...good, messages: [{ ...message(1, T0), enc: 'base64', payload: '@@@' }] }],
      ['priority 10', { ...good, messages: [{ ...message(1, T0), priority: 10 }] }],
      ['negative ts', { ...good, messages: [{ ...message(1, T0), ts: -1 }] }],
      ['ts far in the future', { ...good, messages: [{ ...message(1, T0), ts: 1e20 }] }],
      ['missing backlog', { ...good, backlog: undefined }],
      ['missing node', { ...good, node: undefined }],
      ['messages not an array', { ...good, messages: {} }],
      ['array body', [good]],
    ]
    for (const [what, body] of bad) {
      const res = await post(typeof body === 'string' ? Buffer.from(body) : body)
      expect(res.statusCode, `${what}: ${res.body}`).toBe(400)
      expect(typeof res.json().error, what).toBe('string')
    }
    // One bad message spoils the whole batch: the good one before it is not stored either.
    const mixed = { ...good, messages: [message(1, T0), { ...message(2, T0), seq: 2.5 }] }
    expect((await post(mixed)).statusCode).toBe(400)
    expect((await store.heads()).total).toBe(0)
    expect((await store.nodes()).length).toBe(0)
  })

  it('frames bodies: stored exactly as the same batch in JSON; acks list the features', async () => {
    await open()
    const messages = [
      message(1, T0 - 3, 'plant/a', '{"v":"€ ✓ 𝄞","q":"\\"quoted\\""}'),
      { ...message(2, T0 - 2, 'plant/b', '/wD+'), enc: 'base64' as const, headers: { h: 'v' } },
      { ...message(3, T0 - 1, 'plant/c', ''), contentType: null, priority: 9 },
    ]
    for (const enc of ['identity', 'zstd'] as const) {
      const node = enc === 'identity' ? 'gw-1' : 'gw-2'
      const tok = enc === 'identity' ? token : (await createNodeToken(store, 'gw-2')).token
      const body = makeBatch(node, messages, { clock: T0 })
      const res = await post(encodeBody(encodeFrames(body), enc), {
        enc,
        tok,
        headers: { 'content-type': FRAMES_CONTENT_TYPE },
      })
      expect(res.statusCode, res.body).toBe(200)
      expect(res.json()).toMatchObject({ accepted: 3, duplicates: 0, features: ['pipeline', 'frames'] })
    }
    const page = await read('topic=plant/%23&limit=10&order=arrival')
    const strip = (m: Record<string, unknown>) => {
      const { payload, enc, headers, priority, contentType, topic, seq } = m
      return { payload, enc, headers: headers ?? null, priority, contentType, topic, seq }
    }
    const stored = page.messages.map(strip)
    expect(stored.slice(0, 3)).toEqual(stored.slice(3))
    expect(stored.slice(0, 3)).toEqual(messages.map((m) => strip({ ...m })))
  })

  it('400 MALFORMED_FRAMES for a frames body that does not add up; nothing stored', async () => {
    await open()
    const good = encodeFrames(makeBatch('gw-1', [message(1, T0, 'plant/a', 'é')], { clock: T0 }))
    const nl = good.indexOf(10)
    const header = good.subarray(0, nl).toString()
    // Two payloads, 'é' (2 bytes) and 'a', framed as 1 and 2 bytes: the second starts inside 'é'.
    const two = encodeFrames(
      makeBatch('gw-1', [message(1, T0, 'plant/a', 'é'), message(2, T0, 'plant/a', 'a')], { clock: T0 }),
    ).toString()
    const lf = two.indexOf('\n')
    const cut = Buffer.from(
      two
        .slice(0, lf)
        .replace('"size":2}', '"size":1}')
        .replace(/"size":1\}\]\}$/, '"size":2}]}') + two.slice(lf),
    )
    const bad: Array<[string, Buffer]> = [
      ['no line feed', good.subarray(0, nl)],
      ['payloads longer than the sizes', Buffer.concat([good, Buffer.from('x')])],
      ['payloads shorter than the sizes', good.subarray(0, good.length - 1)],
      ['a size that cuts a character', cut],
      ['not UTF-8', Buffer.concat([Buffer.from(`${header}\n`), Buffer.from([0xc3, 0x28])])],
      ['bad header JSON', Buffer.from(`{"node":\n`)],
      ['no size', Buffer.from(`${header.replace('"size":2', '"sighs":2')}\né`)],
    ]
    for (const [what, body] of bad) {
      const res = await post(body, { headers: { 'content-type': FRAMES_CONTENT_TYPE } })
      expect(res.statusCode, `${what}: ${res.body}`).toBe(400)
      expect(res.json().code, what).toBe('MALFORMED_FRAMES')
    }
    // Well framed but invalid: the same validation as JSON.
    const wildcard = encodeFrames(makeBatch('gw-1', [message(1, T0, 'plant/+', 'x')], { clock: T0 }))
    const res = await post(wildcard, { headers: { 'content-type': FRAMES_CONTENT_TYPE } })
    expect(res.statusCode).toBe(400)
    expect(res.json().code).toBe('INVALID_BODY')
    expect((await store.heads()).total).toBe(0)
  })

  it('413 for an oversize body and for a decompression bomb; 415 for an unknown encoding', async () => {
    await open({ limits: { bodyBytes: 64 << 10, decompressedBytes: 1 << 20, ratePerNode: 0 } })
    const big = makeBatch('gw-1', [message(1, T0, 't', 'x'.repeat(100 << 10))], { clock: T0 })
    const tooBig = await post(big)
    expect(tooBig.statusCode).toBe(413)
    const bomb = encodeBody(Buffer.alloc(8 << 20, 0x20), 'zstd')
    expect(bomb.length).toBeLessThan(64 << 10)
    const res = await post(bomb, { headers: { 'content-encoding': 'zstd' } })
    expect(res.statusCode).toBe(413)
    expect(res.json().code).toBe('DECOMPRESSED_TOO_LARGE')
    const gz = await post(encodeBody(Buffer.alloc(8 << 20, 0x20), 'gzip'), {
      headers: { 'content-encoding': 'gzip' },
    })
    expect(gz.statusCode).toBe(413)
    const br = await post(Buffer.from('{}'), { headers: { 'content-encoding': 'br' } })
    expect(br.statusCode).toBe(415)
    expect((await store.heads()).total).toBe(0)
  })

  it('429 with Retry-After over the per-node rate', async () => {
    await open({ limits: { bodyBytes: 1 << 20, decompressedBytes: 1 << 20, ratePerNode: 2 } })
    const codes: number[] = []
    let retryAfter: string | undefined
    for (let i = 1; i <= 4; i++) {
      const res = await post(makeBatch('gw-1', [message(i, T0)], { clock: T0 }))
      codes.push(res.statusCode)
      if (res.statusCode === 429) retryAfter = res.headers['retry-after'] as string
    }
    expect(codes.slice(0, 2)).toEqual([200, 200])
    expect(codes).toContain(429)
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1)
  })

  it('503 with Retry-After while the store cannot commit', async () => {
    await open()
    const orig = store.ingest.bind(store)
    store.ingest = () => Promise.reject(new StoreUnavailableError('disk full'))
    const res = await post(makeBatch('gw-1', [message(1, T0)], { clock: T0 }))
    expect(res.statusCode).toBe(503)
    expect(res.headers['retry-after']).toBe('1')
    store.ingest = orig
    expect((await post(makeBatch('gw-1', [message(1, T0)], { clock: T0 }))).statusCode).toBe(200)
  })

  it('orders two nodes by event time, flags late messages, and serves the arrival stream', async () => {
    await open()
    const tokB = (await createNodeToken(store, 'gw-2')).token
    // gw-2 announces a backlog starting at T0-50; gw-1 sends everything it has.
    await post(makeBatch('gw-2', [], { clock: T0, backlog: { pending: 2, bytes: 10, oldestTs: T0 - 50 } }), {
      tok: tokB,
    })
    await post(
      makeBatch('gw-1', [message(1, T0 - 60), message(2, T0 - 40), message(3, T0 - 10)], { clock: T0 }),
    )
    let page = await read('order=event')
    expect(page.messages.map((m: { node: string; seq: number }) => `${m.node}/${m.seq}`)).toEqual(['gw-1/1'])
    await post(makeBatch('gw-2', [message(1, T0 - 50), message(2, T0 - 20)], { clock: T0 }), { tok: tokB })
    page = await read(`order=event&after=${page.next}`)
    expect(page.messages.map((m: { node: string; seq: number }) => `${m.node}/${m.seq}`)).toEqual([
      'gw-2/1',
      'gw-1/2',
      'gw-2/2',
      'gw-1/3',
    ])
    // A message from before the watermark arrives later: released at once, flagged late.
    clock += 1000
    const ack = await post(makeBatch('gw-1', [message(4, T0 - 30)], { clock: T0 + 1000 }))
    expect(ack.json()).toMatchObject({ accepted: 1, late: 1 })
    page = await read(`order=event&after=${page.next}`)
    expect(page.messages.map((m: { seq: number; late: boolean }) => [m.seq, m.late])).toEqual([[4, true]])
    const arrival = await read(`order=arrival&topic=${encodeURIComponent('plant/+/temp')}`)
    expect(arrival.messages.map((m: { position: number }) => m.position)).toEqual([1, 2, 3, 4, 5, 6])
  })

  it('consumer groups start from their committed position; commits never go backwards', async () => {
    await open()
    await post(
      makeBatch(
        'gw-1',
        [1, 2, 3].map((s) => message(s, T0 - 10 + s)),
        { clock: T0 },
      ),
    )
    let page = await read('group=g1&limit=2')
    expect(page.messages.map((m: { seq: number }) => m.seq)).toEqual([1, 2])
    const commit = (position: number) =>
      app.inject({
        method: 'POST',
        url: '/v1/groups/g1/commit',
        headers: { authorization: `Bearer ${adminTok}` },
        payload: { order: 'event', position },
      })
    expect((await commit(2)).json()).toEqual({ name: 'g1', order: 'event', position: 2 })
    expect((await commit(1)).json().position).toBe(2)
    expect((await commit(99)).statusCode).toBe(400)
    page = await read('group=g1')
    expect(page.messages.map((m: { seq: number }) => m.seq)).toEqual([3])
  })

  it('long-polls: a waiting reader is woken by an ingest', async () => {
    await open()
    const started = Date.now()
    const pending = read('wait=5000&topic=plant/%23')
    await new Promise((r) => setTimeout(r, 100))
    await post(makeBatch('gw-1', [message(1, T0 - 1)], { clock: T0 }))
    const page = await pending
    expect(page.messages.length).toBe(1)
    expect(Date.now() - started).toBeLessThan(3000)
    // An empty long-poll returns after its wait with nothing.
    const t = Date.now()
    const empty = await read(`wait=300&after=${page.next}`)
    expect(empty.messages).toEqual([])
    expect(Date.now() - t).toBeGreaterThanOrEqual(250)
  })

  it('rejects bad query parameters', async () => {
    await open()
    for (const q of ['order=sideways', 'topic=a/%23/b', 'limit=x', 'after=-1', 'wait=999999']) {
      const res = await app.inject({
        method: 'GET',
        url: `/v1/messages?${q}`,
        headers: { authorization: `Bearer ${adminTok}` },
      })
      expect(res.statusCode, q).toBe(400)
    }
  })

  it('the release timer ages out a silent node', async () => {
    await open({ releaseIntervalMs: 20 })
    await app.ready()
    const tokB = (await createNodeToken(store, 'gw-2')).token
    await post(makeBatch('gw-2', [], { clock: T0, backlog: { pending: 1, bytes: 1, oldestTs: T0 - 1000 } }), {
      tok: tokB,
    })
    await post(makeBatch('gw-1', [message(1, T0 - 10)], { clock: T0 }))
    expect((await store.heads()).held).toBe(1)
    clock = T0 + 6 * MIN
    await post(makeBatch('gw-1', [], { clock: T0 + 6 * MIN }))
    await new Promise((r) => setTimeout(r, 100))
    expect((await store.heads()).held).toBe(0)
  })

  it('retention removes old released messages', async () => {
    await open({ retention: MIN, retentionIntervalMs: 20 })
    await app.ready()
    await post(makeBatch('gw-1', [message(1, T0 - 10), message(2, T0 - 5)], { clock: T0 }))
    clock = T0 + 2 * MIN
    await post(makeBatch('gw-1', [message(3, T0 + 2 * MIN - 5)], { clock: T0 + 2 * MIN }))
    await new Promise((r) => setTimeout(r, 150))
    const heads = await store.heads()
    expect(heads.total).toBe(1)
    expect(heads.event).toBe(3)
  })

  it('refuses to serve without auth on a non-loopback address unless forced', async () => {
    await expect(createBrokerApp(options(tmp.dir, { auth: 'none', host: '0.0.0.0' }))).rejects.toThrow(
      /without authentication/,
    )
    app = await createBrokerApp(options(tmp.dir, { auth: 'none', host: '0.0.0.0', insecure: true }))
    const res = await app.inject({
      method: 'POST',
      url: '/v1/batches',
      headers: { 'content-type': 'application/json' },
      payload: makeBatch('anyone', [message(1, T0)], { clock: T0 }),
    })
    expect(res.statusCode).toBe(200)
  })
})
