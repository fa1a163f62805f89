/**
 * ReleasePasses (postgres-release.ts) without a database: which pass answers
 * which waiter, pipelined passes, passes shared by waiters, a stalled horizon, a failed pass,
 * a pass lost with its connection.
 */
import { describe, expect, it } from 'vitest'
import { PASS_RETRIES, ReleasePasses, type RunPass } from '../../src/broker/store/postgres-release.js'
import { isLostMidQuery } from '../../src/broker/store/postgres.js'
import { StoreUnavailableError } from '../../src/broker/store/types.js'

const ctx = (now: number) => ({ now, maxLateness: 1000 })

/** A fake rmq_pass: each call returns the next frontier from `frontiers` after `ms`. */
function fakePasses(frontiers: bigint[], ms = 20) {
  const calls: Array<[number, number, string | null]> = []
  const spans: Array<{ start: number; end: number }> = []
  let i = 0
  const run: RunPass = async (params) => {
    calls.push(params)
    const span = { start: performance.now(), end: Infinity }
    spans.push(span)
    await new Promise((r) => setTimeout(r, ms))
    span.end = performance.now()
    const f = frontiers[Math.min(i++, frontiers.length - 1)]
    return { p_frontier: String(f), p_watermark: 100 + i, p_sequenced: 0, p_released: i }
  }
  return { run, calls, spans }
}

describe('release passes', () => {
  it('a waiter that comes while a pass runs gets the next pass sent at once; later ones share a third', async () => {
    const { run, calls, spans } = fakePasses([10n, 20n, 30n])
    const passes = new ReleasePasses(run)
    const first = passes.wait(5n, ctx(1))
    await new Promise((r) => setTimeout(r, 5))
    // Pass 1 runs: pass 2 is sent for this one now, not after pass 1 returns.
    const second = passes.wait(15n, ctx(2))
    expect(calls).toHaveLength(2)
    // Two passes in flight: these two wait, then share pass 3, run with the newest broker time.
    const third = passes.wait(25n, ctx(3))
    const fourth = passes.wait(22n, ctx(4))
    expect(calls).toHaveLength(2)
    expect((await first).frontier).toBe(10n)
    expect((await second).frontier).toBe(20n)
    const [c, d] = await Promise.all([third, fourth])
    expect(c.frontier).toBe(30n)
    expect(d.frontier).toBe(30n)
    expect(calls).toHaveLength(3)
    expect(calls[2][0]).toBe(4 - 1000)
    // Pass 2 was sent before pass 1 ended (pipelined); pass 3 once pass 1 had ended.
    expect(spans[1].start).toBeLessThan(spans[0].end)
    expect(spans[2].start).toBeGreaterThanOrEqual(spans[0].end)
    // The newest transaction each pass is for: a pass committed meanwhile may cover it.
    expect(calls.map((c) => c[2])).toEqual(['5', '15', '25'])
    // A release call (tx 0) always runs its own pass, and only a pass sent after it answers it.
    await passes.wait(0n, ctx(5))
    expect(calls).toHaveLength(4)
    expect(calls[3][2]).toBeNull()
  })

  it('a pass sent before a waiter came answers it when its frontier covers the transaction', async () => {
    const { run, calls } = fakePasses([10n, 20n])
    const passes = new ReleasePasses(run)
    const first = passes.wait(5n, ctx(1))
    await new Promise((r) => setTimeout(r, 5))
    const second = passes.wait(7n, ctx(2)) // gets pass 2
    const third = passes.wait(8n, ctx(3)) // waits: two passes in flight
    // Pass 1's horizon (10) was taken after all three committed (they are below it): it answers all.
    const all = await Promise.all([first, second, third])
    expect(all.map((r) => r.frontier)).toEqual([10n, 10n, 10n])
    expect(calls).toHaveLength(2)
  })

  it('keeps passing while an older transaction holds the horizon, and answers 503 after the bound', async () => {
    const { run, calls } = fakePasses([10n], 2)
    const warnings: number[] = []
    const passes = new ReleasePasses(run, (ms) => warnings.push(ms), 150)
    const started = Date.now()
    expect(passes.waits()).toEqual({ waiting: 0, oldestWaitMs: 0, stalled: 0 })
    const waiting = passes.wait(50n, ctx(1)).then(
      () => undefined,
      (e: unknown) => e,
    )
    await new Promise((r) => setTimeout(r, 60))
    // What /metrics shows meanwhile: one waiter, waiting since it came.
    const during = passes.waits()
    expect(during.waiting).toBe(1)
    expect(during.oldestWaitMs).toBeGreaterThanOrEqual(50)
    expect(during.stalled).toBe(0)
    const err = await waiting
    expect(err).toBeInstanceOf(StoreUnavailableError)
    expect((err as Error).message).toMatch(/older transaction is still open/)
    expect(Date.now() - started).toBeGreaterThanOrEqual(150)
    expect(Date.now() - started).toBeLessThan(2000)
    expect(warnings).toHaveLength(1)
    expect(passes.waits()).toEqual({ waiting: 0, oldestWaitMs: 0, stalled: 1 })
    // Paced passes meanwhile (a pause after each pass that answered nobody), not a busy loop.
    expect(calls.length).toBeGreaterThan(3)
    expect(calls.length).toBeLessThan(150 / 2)
  })

  it('a waiter that comes in the same tick as the last answer still gets a pass', async () => {
    const { run, calls } = fakePasses([10n, 20n], 1)
    const passes = new ReleasePasses(run)
    // The caller of the first wait asks again as soon as it is answered, before any other task runs.
    const second = passes.wait(5n, ctx(1)).then(() => passes.wait(6n, ctx(2)))
    expect((await second).frontier).toBe(20n)
    expect(calls).toHaveLength(2)
  })

  it('a failed pass fails its waiters; the next waiter gets a new pass', async () => {
    let fail = true
    const run: RunPass = async () => {
      if (fail) {
        fail = false
        throw new Error('terminating connection due to administrator command')
      }
      return { p_frontier: '9', p_watermark: null, p_sequenced: 1, p_released: 0 }
    }
    const passes = new ReleasePasses(run)
    await expect(passes.wait(1n, ctx(1))).rejects.toThrow(/administrator command/)
    expect(await passes.wait(1n, ctx(2))).toEqual({
      frontier: 9n,
      watermark: null,
      sequenced: 1,
      released: 0,
    })
  })

  it('a pass lost with its connection is sent again for its waiters, PASS_RETRIES times, then they fail', async () => {
    const lost = Object.assign(new Error('terminating connection due to administrator command'), {
      code: '57P01',
    })
    let failures = 1
    let calls = 0
    const run: RunPass = async () => {
      calls++
      await new Promise((r) => setTimeout(r, 5))
      if (failures-- > 0) throw lost
      return { p_frontier: '9', p_watermark: null, p_sequenced: 1, p_released: 0 }
    }
    const passes = new ReleasePasses(run, undefined, undefined, isLostMidQuery)
    // One lost pass: its only waiter is answered by the pass sent again, not with a 503.
    const a = await passes.wait(1n, ctx(1))
    expect(a.frontier).toBe(9n)
    expect(calls).toBe(2)
    // Lost every time: after the first pass and PASS_RETRIES more, the waiter fails.
    failures = Infinity
    calls = 0
    await expect(passes.wait(10n, ctx(2))).rejects.toBe(lost)
    expect(calls).toBe(1 + PASS_RETRIES)
    expect(passes.waits().waiting).toBe(0)
    // Any other failure is not sent again.
    let other = 0
    const broken = new ReleasePasses(
      async () => {
        other++
        throw Object.assign(new Error('syntax error'), { code: '42601' })
      },
      undefined,
      undefined,
      isLostMidQuery,
    )
    await expect(broken.wait(1n, ctx(1))).rejects.toThrow(/syntax error/)
    expect(other).toBe(1)
  })

  it('a waiter past the stall bound whose pass is then lost counts as stalled, and is not sent again', async () => {
    const lost = Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' })
    let calls = 0
    const t0 = Date.now()
    // The horizon is held (frontier 10, below the waiter's 50); the first pass sent after 80 ms runs
    // for 40 ms, past the 100 ms bound, and is lost with its connection.
    const run: RunPass = async () => {
      calls++
      if (Date.now() - t0 > 80) {
        await new Promise((r) => setTimeout(r, 40))
        throw lost
      }
      await new Promise((r) => setTimeout(r, 2))
      return { p_frontier: '10', p_watermark: null, p_sequenced: 0, p_released: 0 }
    }
    const warnings: number[] = []
    const passes = new ReleasePasses(run, (ms) => warnings.push(ms), 100, isLostMidQuery)
    const err = await passes.wait(50n, ctx(1)).then(
      () => undefined,
      (e: unknown) => e,
    )
    // The lost pass ended its wait (no retry past the bound), and it is counted as a stall.
    expect(err).toBe(lost)
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toBeGreaterThan(100)
    expect(passes.waits()).toEqual({ waiting: 0, oldestWaitMs: 0, stalled: 1 })
    const before = calls
    await new Promise((r) => setTimeout(r, 20))
    expect(calls).toBe(before)
  })
})
