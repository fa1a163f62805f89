/**
 * ReleasePasses (postgres-release.ts) without a database: which pass answers
 * which waiter, passes shared by waiters, a stalled horizon, a failed pass.
 */
import { describe, expect, it } from 'vitest'
import { ReleasePasses, type RunPass } from '../../src/broker/store/postgres-release.js'
import { StoreUnavailableError } from '../../src/broker/store/types.js'

const ctx = (now: number) => ({ now, maxLateness: 1000 })

/** A fake rmq_pass: each call returns the next frontier from `frontiers` after `ms`. */
function fakePasses(frontiers: bigint[], ms = 20) {
  const calls: Array<[number, number, string | null]> = []
  let i = 0
  const run: RunPass = async (params) => {
    calls.push(params)
    await new Promise((r) => setTimeout(r, ms))
    const f = frontiers[Math.min(i++, frontiers.length - 1)]
    return { p_frontier: String(f), p_watermark: 100 + i, p_sequenced: 0, p_released: i }
  }
  return { run, calls }
}

describe('release passes', () => {
  it('a waiter is answered only by a pass that started after it and covers its transaction', async () => {
    const { run, calls } = fakePasses([10n, 20n, 30n])
    const passes = new ReleasePasses(run)
    const first = passes.wait(5n, ctx(1))
    // Added while pass 1 runs: pass 1 (frontier 10) may not answer it, even though 5 < 10.
    await new Promise((r) => setTimeout(r, 5))
    const second = passes.wait(5n, ctx(2))
    const third = passes.wait(15n, ctx(3))
    expect((await first).frontier).toBe(10n)
    const [b, c] = await Promise.all([second, third])
    // Both share pass 2 (frontier 20 covers 15), run with the newest broker time.
    expect(b.frontier).toBe(20n)
    expect(c.frontier).toBe(20n)
    expect(calls).toHaveLength(2)
    expect(calls[1][0]).toBe(3 - 1000)
    // The newest transaction waited for: a pass another broker committed meanwhile may cover it.
    expect(calls.map((c) => c[2])).toEqual(['5', '15'])
    // A release call (tx 0) always runs its own pass.
    await passes.wait(0n, ctx(4))
    expect(calls[2][2]).toBeNull()
  })

  it('keeps passing while an older transaction holds the horizon, and answers 503 after the bound', async () => {
    const { run, calls } = fakePasses([10n], 2)
    const warnings: number[] = []
    const passes = new ReleasePasses(run, (ms) => warnings.push(ms), 150)
    const started = Date.now()
    const err = await passes.wait(50n, ctx(1)).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(StoreUnavailableError)
    expect((err as Error).message).toMatch(/older transaction is still open/)
    expect(Date.now() - started).toBeGreaterThanOrEqual(150)
    expect(Date.now() - started).toBeLessThan(2000)
    expect(warnings).toHaveLength(1)
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
})
