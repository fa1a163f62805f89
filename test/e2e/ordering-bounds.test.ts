/**
 * The ordering bounds against `rmq broker start` (docs/ordering.md): one node
 * cannot stall the event order for longer than broker.ordering.maxHoldBack,
 * a clock far in the future is refused (or clamped) so it cannot poison the
 * watermark, and `rmq broker watermark` names the holder and repairs a
 * poisoned watermark.
 */
import { afterEach, describe, expect, it } from 'vitest'
import {
  getMessages,
  makeBatch,
  message,
  postBatch,
  startBrokerProcess,
  type BrokerProcess,
} from '../helpers/broker.js'
import { runCli } from '../helpers/cli.js'

const YEAR_9999 = 253_402_300_799_999
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('ordering bounds end to end (real broker process)', () => {
  const cleanups: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  const start = async (env: Record<string, string>) => {
    const broker = await startBrokerProcess({ env })
    cleanups.push(() => broker.cleanup())
    // The reading credential made now, so that no token command runs inside a timed wait.
    await broker.adminToken()
    return broker
  }
  /** B heartbeats every 300 ms until stopped, each time claiming `oldestTs` is still pending. */
  const heartbeat = (broker: BrokerProcess, token: string, oldestTs: number) => {
    let stop = false
    let n = 0
    const loop = (async () => {
      for (let i = 0; i < 200 && !stop; i++) {
        const res = await postBatch(
          broker.url,
          makeBatch('gw-b', [], {
            batch: `hb-${n++}`,
            clock: Date.now(),
            backlog: { pending: 1, bytes: 10, oldestTs },
          }),
          { token },
        )
        expect(res.status, JSON.stringify(res.body)).toBe(200)
        await sleep(300)
      }
    })()
    cleanups.push(async () => {
      stop = true
      await loop
    })
    return () => {
      stop = true
      return loop
    }
  }
  /** Poll the event stream until node A's message is there; the time it took. */
  const waitReleased = async (broker: BrokerProcess, token: string, from: number, limitMs: number) => {
    for (;;) {
      void token
      const res = await getMessages(broker.url, { order: 'event', topic: '#' }, await broker.adminToken())
      const msgs = (res.body as { messages: Array<{ node: string; late: boolean }> }).messages
      const a = msgs.find((m) => m.node === 'gw-a')
      if (a) return { elapsed: Date.now() - from, late: a.late }
      if (Date.now() - from > limitMs) throw new Error(`gw-a's message not released within ${limitMs} ms`)
      await sleep(50)
    }
  }
  const watermark = async (broker: BrokerProcess, env: Record<string, string>, extra: string[] = []) => {
    const r = await runCli(['broker', 'watermark', '--data-dir', broker.dataDir, '--json', ...extra], { env })
    expect(r.code, r.stderr).toBe(0)
    return JSON.parse(r.stdout)
  }

  it('maxHoldBack=3s: node B claiming a stuck oldestTs holds node A back at most 3 s plus a release tick; rmq broker watermark names B', async () => {
    const env = { RMQ_BROKER_ORDERING_MAX_HOLD_BACK: '3s', RMQ_BROKER_ORDERING_MAX_LATENESS: '30s' }
    const broker = await start(env)
    const tokA = await broker.createToken('gw-a')
    const tokB = await broker.createToken('gw-b')

    // B's low mark stays at t0 for as long as it heartbeats: honest-looking, but stuck.
    const t0 = Date.now()
    const stopB = heartbeat(broker, tokB, t0)
    await sleep(100)
    const sent = await postBatch(
      broker.url,
      makeBatch('gw-a', [message(1, t0 + 10)], { clock: Date.now() }),
      {
        token: tokA,
      },
    )
    expect(sent.status).toBe(200)
    const report = await watermark(broker, env)
    // Asked within maxHoldBack of t0, B is what the watermark waits for.
    expect(report.now - t0).toBeLessThan(3000)
    expect(report.holders[0]).toMatchObject({ node: 'gw-b', lowMark: t0, holding: true })
    expect(report.held).toBe(1)

    const released = await waitReleased(broker, tokA, t0, 20_000)
    expect(released.late).toBe(false)
    // Held while B's low mark was within 3 s; released once it was not, within one release tick (1 s).
    expect(released.elapsed).toBeGreaterThanOrEqual(2900)
    expect(released.elapsed).toBeLessThan(3000 + 1000 + 3000) // + margin for a loaded machine
    await stopB()

    const after = await watermark(broker, env)
    const b = after.holders.find((h: { node: string }) => h.node === 'gw-b')
    expect(b).toMatchObject({ holding: false })
    expect(b.reason).toMatch(
      /behind broker time, more than broker\.ordering\.maxHoldBack \(3s\): not holding/,
    )
    const status = await runCli(['status', '--broker', '--json'], {
      env: { RMQ_BROKER_URL: broker.url, ...env, RMQ_TOKEN: await broker.adminToken() },
    })
    const nodeB = JSON.parse(status.stdout).nodes.find((n: { node: string }) => n.node === 'gw-b')
    expect(nodeB).toMatchObject({ health: 'holding-back' })
  })

  it('maxHoldBack=3s: node B heartbeating oldestTs 1 (the stall attack) does not hold node A at all', async () => {
    const env = { RMQ_BROKER_ORDERING_MAX_HOLD_BACK: '3s', RMQ_BROKER_ORDERING_MAX_LATENESS: '30s' }
    const broker = await start(env)
    const tokA = await broker.createToken('gw-a')
    const tokB = await broker.createToken('gw-b')
    heartbeat(broker, tokB, 1)
    await sleep(400)
    const t = Date.now()
    expect(
      (await postBatch(broker.url, makeBatch('gw-a', [message(1, t - 10)], { clock: t }), { token: tokA }))
        .status,
    ).toBe(200)
    const released = await waitReleased(broker, tokA, t, 3000 + 1000 + 3000)
    expect(released.late).toBe(false)
    // A's low mark is its clock at its last contact: refresh it, and read the report with a wider
    // bound, so a slow CLI start on a loaded machine cannot age A past 3 s (B is decades behind).
    const fresh = Date.now()
    const hb = makeBatch('gw-a', [], {
      batch: 'a-hb',
      clock: fresh,
      backlog: { pending: 0, bytes: 0, oldestTs: null },
    })
    expect((await postBatch(broker.url, hb, { token: tokA })).status).toBe(200)
    const report = await watermark(broker, { ...env, RMQ_BROKER_ORDERING_MAX_HOLD_BACK: '60s' })
    expect(report.holders.map((h: { node: string; holding: boolean }) => [h.node, h.holding])).toEqual([
      ['gw-b', false],
      ['gw-a', true],
    ])
  })

  it('a year-9999 message is refused, and a normal message after a quiet spell is not late; with clamp it is stored clamped', async () => {
    for (const policy of ['reject', 'clamp'] as const) {
      const broker = await start({
        RMQ_BROKER_ORDERING_MAX_LATENESS: '2s',
        RMQ_BROKER_ORDERING_FUTURE_POLICY: policy,
      })
      const tok = await broker.createToken('gw-a')
      const now = Date.now()
      const bad = await postBatch(
        broker.url,
        makeBatch('gw-a', [message(1, now), message(2, YEAR_9999)], { clock: now }),
        { token: tok },
      )
      if (policy === 'reject') {
        expect(bad.status).toBe(400)
        expect(bad.body).toMatchObject({ code: 'TS_IN_FUTURE' })
      } else {
        expect(bad.status, JSON.stringify(bad.body)).toBe(200)
        expect(bad.body).toMatchObject({ accepted: 2 })
      }
      // Longer than maxLateness with no live node: before the bound, this moved W to the year 10000.
      await sleep(3000)
      const later = Date.now()
      const ok = await postBatch(broker.url, makeBatch('gw-a', [message(3, later)], { clock: later }), {
        token: tok,
      })
      expect(ok.status).toBe(200)
      expect(ok.body, policy).toMatchObject({ accepted: 1, late: 0 })
    }
  })

  it('rmq broker watermark --reset-to repairs a poisoned watermark (no bound: maxFutureSkew 3000000d), and the broker logs it', async () => {
    const env = { RMQ_BROKER_ORDERING_MAX_LATENESS: '2s', RMQ_BROKER_ORDERING_MAX_FUTURE_SKEW: '3000000d' }
    const broker = await start(env)
    const tok = await broker.createToken('gw-a')
    const now = Date.now()
    expect(
      (
        await postBatch(broker.url, makeBatch('gw-a', [message(1, YEAR_9999)], { clock: now }), {
          token: tok,
        })
      ).status,
    ).toBe(200)
    await sleep(3000)
    // Poisoned: W is past the year 9999 and a message on time arrives late.
    expect((await watermark(broker, env)).watermark).toBe(YEAR_9999 + 1)
    const t1 = Date.now()
    const poisoned = await postBatch(broker.url, makeBatch('gw-a', [message(2, t1)], { clock: t1 }), {
      token: tok,
    })
    expect(poisoned.body).toMatchObject({ accepted: 1, late: 1 })

    const to = new Date(Date.now() - 60_000).toISOString()
    const reset = await watermark(broker, env, ['--reset-to', to])
    expect(reset.reset).toEqual({ before: YEAR_9999 + 1, after: Date.parse(to) })
    // Forwards is refused: it moves forward by itself.
    const forward = await runCli(
      ['broker', 'watermark', '--data-dir', broker.dataDir, '--reset-to', new Date().toISOString()],
      { env },
    )
    expect(forward.code).toBe(2)
    expect(forward.stderr).toMatch(/only moves it back|not before the watermark/)

    const t2 = Date.now()
    const repaired = await postBatch(broker.url, makeBatch('gw-a', [message(3, t2)], { clock: t2 }), {
      token: tok,
    })
    expect(repaired.body).toMatchObject({ accepted: 1, late: 0 })
    for (let i = 0; i < 50 && !/the watermark was moved back/.test(broker.logs()); i++) await sleep(100)
    expect(broker.logs()).toMatch(/the watermark was moved back \(rmq broker watermark --reset-to\)/)
  })
})
