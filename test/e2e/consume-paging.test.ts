/**
 * `rmq consume FILTER` on a real broker: a filtered one-shot read finds the
 * few matching messages after 200,000 that do not match (event and arrival
 * order, with and without a group), and an event-order read that ends with
 * messages held behind the watermark says how many and for which node.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeBatch, message, postBatch, startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { runCli } from '../helpers/cli.js'

const NON_MATCHING = 200_000
const BATCH = 20_000

describe('rmq consume: filtered reads past 200,000 non-matching messages', () => {
  let broker: BrokerProcess
  let env: Record<string, string>
  const base = Date.now() - 10 * 60_000

  beforeAll(async () => {
    broker = await startBrokerProcess({ auth: 'token' })
    const token = await broker.createToken('gw-a')
    env = { RMQ_BROKER_URL: broker.url, RMQ_TOKEN: await broker.adminToken() }
    for (let i = 0; i < NON_MATCHING; i += BATCH) {
      const msgs = Array.from({ length: BATCH }, (_, k) => message(i + k + 1, base + i + k, 'a/x', 'n'))
      const res = await postBatch(broker.url, makeBatch('gw-a', msgs, { batch: `b${i}` }), {
        token,
        encoding: 'zstd',
      })
      expect(res.status, JSON.stringify(res.body)).toBe(200)
    }
    // Three matching ones, sent last, with ts out of arrival order (below the watermark by now: late).
    const last = [300, 100, 200].map((d, k) =>
      message(NON_MATCHING + k + 1, base + d, `id/y${k + 1}`, `m${k + 1}`),
    )
    const res = await postBatch(broker.url, makeBatch('gw-a', last, { batch: 'last' }), { token })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
  }, 60_000)

  afterAll(async () => {
    await broker?.cleanup()
  })

  const consume = async (args: string[]) => {
    const r = await runCli(['consume', 'id/#', ...args], { env, timeoutMs: 30_000 })
    expect(r.code, r.stderr).toBe(0)
    return r
  }
  const seqsOf = (stdout: string) =>
    stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => Number(/^\d+ gw-a:(\d+) /.exec(l)?.[1]))

  it('one-shot, event order: exactly the 3, by ts, with node, seq, ts, topic and [late] on each line', async () => {
    const r = await consume([])
    const lines = r.stdout.trim().split('\n')
    expect(lines).toHaveLength(3)
    expect(lines[0]).toMatch(
      new RegExp(`^\\d+ gw-a:${NON_MATCHING + 2} ${new Date(base + 100).toISOString()} id/y2 \\[late\\] m2$`),
    )
    expect(seqsOf(r.stdout)).toEqual([NON_MATCHING + 2, NON_MATCHING + 3, NON_MATCHING + 1])
    expect(r.stderr).not.toMatch(/no messages|held/)
  })

  it('one-shot, arrival order: exactly the 3, in arrival order', async () => {
    const r = await consume(['--order', 'arrival'])
    expect(seqsOf(r.stdout)).toEqual([NON_MATCHING + 1, NON_MATCHING + 2, NON_MATCHING + 3])
    const json = await consume(['--order', 'arrival', '--json'])
    const docs = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(docs.map((d) => [d.seq, d.position, d.topic])).toEqual([
      [NON_MATCHING + 1, NON_MATCHING + 1, 'id/y1'],
      [NON_MATCHING + 2, NON_MATCHING + 2, 'id/y2'],
      [NON_MATCHING + 3, NON_MATCHING + 3, 'id/y3'],
    ])
  })

  it.each(['event', 'arrival'])(
    'with --group (%s order): the 3, then nothing; --limit commits only what it printed',
    async (order) => {
      const want =
        order === 'event'
          ? [NON_MATCHING + 2, NON_MATCHING + 3, NON_MATCHING + 1]
          : [NON_MATCHING + 1, NON_MATCHING + 2, NON_MATCHING + 3]
      const first = await consume(['--order', order, '--group', `all-${order}`])
      expect(seqsOf(first.stdout)).toEqual(want)
      const again = await consume(['--order', order, '--group', `all-${order}`])
      expect(again.stdout).toBe('')
      expect(again.stderr).toMatch(/no messages/)
      // --limit 2 stops mid-page: the group continues at the third, not past it.
      const two = await consume(['--order', order, '--group', `lim-${order}`, '--limit', '2'])
      expect(seqsOf(two.stdout)).toEqual(want.slice(0, 2))
      const rest = await consume(['--order', order, '--group', `lim-${order}`])
      expect(seqsOf(rest.stdout)).toEqual(want.slice(2))
    },
  )
})

describe('rmq consume: messages held behind the watermark are explained', () => {
  let broker: BrokerProcess
  let env: Record<string, string>

  beforeAll(async () => {
    broker = await startBrokerProcess({ auth: 'token' })
    const tokenA = await broker.createToken('edge-a')
    const tokenY = await broker.createToken('edge-y')
    env = { RMQ_BROKER_URL: broker.url, RMQ_TOKEN: await broker.adminToken() }
    const now = Date.now()
    // edge-y is live (it just sent a heartbeat) but its low mark is two minutes old: it holds W back.
    const hb = await postBatch(broker.url, makeBatch('edge-y', [], { clock: now - 120_000 }), {
      token: tokenY,
    })
    expect(hb.status, JSON.stringify(hb.body)).toBe(200)
    const msgs = [1, 2, 3].map((seq) => message(seq, now - 1000 + seq, 'id/z'))
    const res = await postBatch(
      broker.url,
      makeBatch('edge-a', [...msgs, message(4, now - 500, 'other/t')]),
      {
        token: tokenA,
      },
    )
    expect(res.status, JSON.stringify(res.body)).toBe(200)
  }, 30_000)

  afterAll(async () => {
    await broker?.cleanup()
  })

  it('human: nothing printed, one stderr line naming edge-y and the held count, exit 0', async () => {
    const r = await runCli(['consume', 'id/#'], { env })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toBe('')
    expect(r.stderr.trim()).toMatch(
      /^rmq consume: 3 messages held until edge-y reports \(last seen \d+s ago\); use --order arrival to read them now$/,
    )
    // The arrival order has them now.
    const arrival = await runCli(['consume', 'id/#', '--order', 'arrival'], { env })
    expect(arrival.stdout.trim().split('\n')).toHaveLength(3)
  })

  it('--json: a last line of type held with the same fields', async () => {
    const r = await runCli(['consume', '#', '--json'], { env })
    expect(r.code, r.stderr).toBe(0)
    const docs = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(docs).toHaveLength(1)
    expect(docs[0]).toMatchObject({
      type: 'held',
      held: 4,
      capped: false,
      nodes: [{ node: 'edge-y', lowMark: expect.any(Number), lastContact: expect.any(Number) }],
    })
    expect(docs[0].watermark).toBe(docs[0].nodes[0].lowMark)
    expect(docs[0].message).toMatch(/^4 messages held until edge-y reports/)
    expect(r.stderr).toMatch(/4 messages held until edge-y reports/)
  })
})
