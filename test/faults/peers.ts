/**
 * The fault suite's two scenarios with a counterpart that misbehaves on
 * purpose (issue 22): a lying broker in front of the real one, and a
 * hostile node next to honest ones. Both drive the cluster in bounded
 * rounds; faults.test.ts settles and checks the total queue afterwards.
 */
import { expect } from 'vitest'
import { MAX_TS } from '../../src/protocol/batch.js'
import { makeBatch, message, postBatch, request, type HttpResult } from '../helpers/broker.js'
import { LIE_KINDS, LIES, type Lie } from '../helpers/lying-proxy.js'
import { parseJson } from '../helpers/cli.js'
import { rng, type Cluster, type EdgeNode } from './harness.js'

/**
 * `rounds` rounds; in each, one kind of lie (every kind in turn, told after
 * the real broker stored the batch and without forwarding it on alternate
 * passes) answers about half the requests, and every node publishes and
 * syncs once. A sync lied to about a batch of messages must exit 75 naming
 * what was wrong (and `rmq status` must show it); one that was not must
 * succeed (a lie about the empty closing report of a run may end it either
 * way: everything was delivered).
 */
export async function lyingBroker(c: Cluster, seed: number, rounds: number): Promise<void> {
  const liar = c.liar!
  const r = rng(seed)
  let lie: Lie | undefined
  // The first batch with messages in each round is always lied to (so every kind is told), the rest by coin.
  let toldThisRound = false
  liar.decide = (_node, messages) => {
    if (!lie) return undefined
    if (messages > 0 && !toldThisRound) {
      toldThisRound = true
      return lie
    }
    return r() < 0.5 ? lie : undefined
  }
  const shown = new Set<string>()
  for (let round = 0; round < rounds; round++) {
    const kind = LIES[round % LIES.length]
    lie = { kind, forwarded: (round + Math.floor(round / LIES.length)) % 2 === 1 }
    toldThisRound = false
    await Promise.all(
      c.nodes.map(async (n) => {
        expect((await n.publishLines(10 + Math.floor(r() * 30))).code).toBe(0)
        const before = liar.toldTo.get(n.id) ?? 0
        const emptyBefore = liar.toldEmpty.get(n.id) ?? 0
        const s = await n.sync({ args: ['--force'] })
        const lied = (liar.toldTo.get(n.id) ?? 0) - before
        if (lied === 0) {
          // A lie about the empty report that closes a pipelined run costs nothing: all was delivered.
          const emptyOnly = (liar.toldEmpty.get(n.id) ?? 0) > emptyBefore
          return void expect(s.code, `${kind}, not lied to about a batch: ${s.stderr}`).toBe(
            emptyOnly && s.code !== 0 ? 75 : 0,
          )
        }
        expect(s.code, `${kind}: ${s.stderr}`).toBe(75)
        expect(s.stderr, kind).toMatch(LIE_KINDS[kind])
        if (shown.has(`${n.id} ${kind}`)) return
        shown.add(`${n.id} ${kind}`)
        await expectStatusShows(n, LIE_KINDS[kind])
      }),
    )
  }
  liar.honest()
  for (const [name, count] of liar.told) c.faults.add(`lie: ${name}`, count)
  // Every kind was told at least once: each round lies about its first batch.
  expect(liar.told.size).toBeGreaterThanOrEqual(Math.min(rounds, LIES.length))
}

async function expectStatusShows(n: EdgeNode, why: RegExp): Promise<void> {
  const st = await n.run(['status', '--json'])
  expect(st.code, st.stderr).toBe(0)
  const lastError = parseJson<{ sync: { lastError: string | null } }>(st.stdout).sync.lastError
  expect(lastError).toMatch(why)
}

/** What a hostile node sends, and what the broker must answer. */
interface Attack {
  name: string
  send: () => Promise<HttpResult>
  /** Expected statuses. */
  want: number[]
}

const HOSTILE = 'evil'

function attacks(c: Cluster, token: string): Attack[] {
  const url = c.broker.url
  const now = () => Date.now()
  let seq = 1
  const epoch = 'evil-epoch'
  const batch = (msgs: ReturnType<typeof message>[], extra: Record<string, unknown> = {}) => ({
    ...makeBatch(HOSTILE, msgs, { epoch, batch: `b-evil-${seq++}`, clock: now() }),
    ...extra,
  })
  const msg = (extra: Record<string, unknown> = {}) => ({
    ...message(seq++, now(), `faults/${HOSTILE}`),
    ...extra,
  })
  const post = (body: unknown, opts: Parameters<typeof postBatch>[2] = {}) =>
    postBatch(url, Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body)), {
      token,
      raw: true,
      ...opts,
    })
  const heartbeat = (extra: Record<string, unknown>) => post(batch([], extra))
  const big = (n: number) =>
    Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, 'x'.repeat(n)]))
  const deep = (d: number): unknown => (d === 0 ? 1 : { a: deep(d - 1) })
  const invalidUtf8 = Buffer.concat([
    Buffer.from(JSON.stringify(batch([msg({ payload: 'PLACEHOLDER' })])).split('PLACEHOLDER')[0]),
    Buffer.from([0xff, 0xfe, 0xc3]),
    Buffer.from(`"}]}`),
  ])
  return [
    { name: 'garbage bytes', send: () => post(Buffer.from('\u0000\u0001{{{not json')), want: [400] },
    {
      name: 'garbage zstd',
      send: () => post(Buffer.from('definitely not zstd'), { encoding: 'zstd' }),
      want: [400],
    },
    { name: 'truncated JSON', send: () => post(JSON.stringify(batch([msg()])).slice(0, 40)), want: [400] },
    {
      name: 'oversized message',
      send: () => post(batch([msg({ payload: 'x'.repeat((1 << 20) + 1) })])),
      want: [413],
    },
    {
      name: 'duplicate seq in one batch',
      send: () => {
        const m = msg()
        return post(batch([m, { ...m }]))
      },
      want: [400],
    },
    { name: 'ts in year 9999', send: () => post(batch([msg({ ts: MAX_TS })])), want: [400] },
    { name: 'ts an hour ahead', send: () => post(batch([msg({ ts: now() + 3_600_000 })])), want: [400] },
    {
      name: 'clock an hour ahead',
      send: () => post(batch([msg()], { clock: now() + 3_600_000 })),
      want: [400],
    },
    { name: 'fractional ts', send: () => post(batch([msg({ ts: now() + 0.5 })])), want: [400] },
    { name: 'invalid UTF-8 in JSON', send: () => post(invalidUtf8), want: [400] },
    {
      name: 'oversized stats',
      send: () => heartbeat({ stats: { sync: big(500), storage: big(500) } }),
      want: [413],
    },
    { name: 'deeply nested stats', send: () => heartbeat({ stats: { sync: deep(2000) } }), want: [400] },
    { name: 'another node’s id', send: () => post({ ...batch([msg()]), node: 'n1' }), want: [401, 403] },
    {
      // Accepted (a heartbeat), but no seq is missing: no data-loss alert may come of it.
      name: 'made-up loss counters',
      send: () =>
        heartbeat({ stats: { storage: { droppedTotal: 1e9, expiredTotal: 5e8, expiredPending: 7 } } }),
      want: [200],
    },
    {
      name: 'loss counters going down',
      send: () => heartbeat({ stats: { storage: { droppedTotal: 3, expiredTotal: 1 } } }),
      want: [200],
    },
    {
      // Accepted: holds the watermark back for broker.ordering.maxHoldBack at most.
      name: 'oldest pending ts 1 (hold-back)',
      send: () => heartbeat({ backlog: { pending: 1, bytes: 10, oldestTs: 1 } }),
      want: [200],
    },
  ]
}

/**
 * Honest nodes publish and sync `rounds` times while a hostile node with
 * its own token goes through every attack in turn, as fast as the broker
 * answers. Every attack gets its refusal (or is harmless), no honest
 * publish or sync fails, nothing of the hostile node's reaches the stream,
 * the watermark stays within broker time, and its made-up counters raise
 * no data-loss alert.
 */
export async function hostileNode(c: Cluster, seed: number, rounds: number): Promise<void> {
  const token = await c.createToken(HOSTILE)
  const list = attacks(c, token)
  const r = rng(seed)
  let done = false
  const answers: string[] = []
  // Every honest node is known (live) before the first message: late flags then come from the attacks, if any.
  for (const n of c.nodes) expect((await n.sync()).code).toBe(0)
  const honest = (async () => {
    try {
      for (let round = 0; round < rounds; round++)
        await Promise.all(
          c.nodes.map(async (n) => {
            const p = await n.publishLines(10 + Math.floor(r() * 30))
            expect(p.code, p.stderr).toBe(0)
            const s = await n.sync()
            expect(s.code, `honest ${n.id} sync: ${s.stderr}`).toBe(0)
          }),
        )
    } finally {
      done = true
    }
  })()
  const hostile = (async () => {
    for (let i = 0; !done && i < 50 * list.length; i++) {
      const a = list[i % list.length]
      const res = await a.send()
      c.faults.add(`hostile: ${a.name}`)
      if (!a.want.includes(res.status)) answers.push(`${a.name}: ${res.status} ${JSON.stringify(res.body)}`)
    }
  })()
  await Promise.all([honest, hostile])
  expect(answers).toEqual([])
  const heads = (await request('GET', `${c.broker.url}/healthz`)).body as { watermark: number | null }
  if (heads.watermark !== null) expect(heads.watermark).toBeLessThanOrEqual(Date.now() + 5 * 60_000)
  // Let the alert timer look at the hostile node's last report.
  await new Promise((res) => setTimeout(res, 1500))
  // Alerts are a monitor's (or admin's) to read, not a node's.
  const alerts = await request('GET', `${c.broker.url}/v1/alerts`, {
    headers: { authorization: `Bearer ${await c.broker.adminToken()}` },
  })
  expect(alerts.status).toBe(200)
  const fired = [...alerts.body.active, ...alerts.body.resolved] as Array<{ rule: string; node: string }>
  expect(fired.filter((a) => a.rule === 'data-loss')).toEqual([])
  const evil = await request('GET', `${c.broker.url}/v1/nodes/${HOSTILE}`, {
    headers: { authorization: `Bearer ${token}` },
  })
  // Nothing of the hostile node was stored; its stats are the fixed fields, not what it sent.
  expect(evil.status).toBe(200)
  expect(evil.body.received, JSON.stringify(evil.body)).toBe(0)
}
