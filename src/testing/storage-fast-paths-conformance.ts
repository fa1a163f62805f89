/**
 * The fast-path half of the storage conformance suite (storageConformance
 * calls it inside its describe block): pendingRuns, wireJson, wireFrames,
 * oldestPendingTs and commitSent, through the completed driver as sync uses
 * them, so every driver passes them with its own fast paths or the fallbacks.
 */
import { expect, it } from 'vitest'
import { decodeFrames, type WireMessage } from '../protocol/batch.js'
import { completeDriver, type FastPath } from '../core/storage/complete-driver.js'
import { toWireMessage } from '../core/wire-message.js'
import type { StorageDriver, StorageOptions, StoredMessage } from '../core/storage/driver.js'
import { CLOCK_START, expandRun, msg, runsOf } from './storage-helpers.js'

export interface FastPathFixture {
  make(o?: Partial<StorageOptions>): Promise<StorageDriver>
  own(k: FastPath): boolean
}

export function fastPathConformance({ make, own }: FastPathFixture): void {
  const clock = CLOCK_START
  it('pendingRuns, wireJson and wireFrames match nextBatch and its wire form', async () => {
    const d = completeDriver(await make())
    const payloads = [
      Buffer.from('{"v":1,"s":"é€𝄞"}'),
      Buffer.from('quote " backslash \\ newline \n tab \t nul \u0000 del \u007f ls \u2028'),
      Buffer.from([0x61, 0xed, 0xa0, 0x80]), // an encoded surrogate: not UTF-8
      Buffer.from([0xff, 0x00, 0xc3, 0x28]),
      Buffer.from('a real \uFFFD replacement character'),
      Buffer.alloc(0),
      Buffer.from([0xef, 0xbb, 0xbf, 0x61]), // BOM kept
    ]
    await d.append(
      payloads.map((payload, i) =>
        msg(i, {
          payload,
          priority: i % 3 === 0 ? 9 : 4,
          contentType: i % 2 ? 'application/json' : null,
          headers: i === 1 ? { k: 'v', 'x-ü': 'line\nbreak' } : null,
          expiresAt: i === 2 ? clock + 60_000 : null,
        }),
      ),
    )
    // The wire form the sync engine would build from nextBatch's messages.
    const expected = (m: StoredMessage) => toWireMessage(m)
    for (const order of ['oldest', 'newest'] as const) {
      for (const limit of [5, 7]) {
        const q = { limit, maxBytes: 1e9, order, now: clock }
        const stored = await d.nextBatch(q)
        const runs = await d.pendingRuns(q)
        expect(runs.flatMap(expandRun)).toEqual(stored.map((m) => m.seq))
        expect(runs).toEqual(runsOf(stored, order))
        const wire = await d.wireJson(runs.flatMap(expandRun))
        expect(wire.count).toBe(stored.length)
        const parsed = JSON.parse(`[${wire.json.toString('utf8')}]`) as Array<Record<string, unknown>>
        // Same messages, same order, same keys in the same order as toWireMessage.
        expect(parsed).toEqual(stored.map(expected))
        parsed.forEach((p, i) => expect(Object.keys(p)).toEqual(Object.keys(expected(stored[i]))))
        // Frames carry the same messages: decoded as the broker decodes them, equal but for `size`.
        const frames = await d.wireFrames(runs.flatMap(expandRun))
        expect(frames.count).toBe(stored.length)
        const body = decodeFrames(
          Buffer.concat([Buffer.from(`{"messages":[${frames.json.toString('utf8')}]}\n`), frames.payloads]),
        )
        expect(body.messages.map(({ size: _s, ...m }: WireMessage & { size?: number }) => m)).toEqual(
          stored.map(expected),
        )
      }
    }
    expect((await d.wireJson([])).count).toBe(0)
    expect(await d.wireFrames([])).toMatchObject({ count: 0, payloads: Buffer.alloc(0) })
    // Byte limits cut the same way.
    const first = await d.nextBatch({ limit: 10, maxBytes: 1, order: 'oldest', now: clock })
    expect(
      (await d.pendingRuns({ limit: 10, maxBytes: 1, order: 'oldest', now: clock })).flatMap(expandRun),
    ).toEqual(first.map((m) => m.seq))
  })

  it.skipIf(!own('wireJson') || !own('wireFrames'))(
    "the driver's own wireJson and wireFrames take any seqs in any order, leaving out unknown ones",
    async () => {
      const d = await make()
      await d.append(
        Array.from({ length: 7 }, (_, i) =>
          msg(i, { priority: i % 3 === 0 ? 9 : 4, payload: Buffer.from([0x61 + i, 0xff]) }),
        ),
      )
      const all = (await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: clock })).sort(
        (a, b) => a.seq - b.seq,
      )
      const s = all.map((m) => m.seq)
      const mixed = [s[3], s[2], s[1], 999_999, s[5], s[6], s[0], s[4]]
      const wire = await d.wireJson!(mixed)
      expect(wire.count).toBe(7)
      expect((JSON.parse(`[${wire.json}]`) as Array<{ seq: number }>).map((m) => m.seq)).toEqual(
        mixed.filter((x) => x !== 999_999),
      )
      const frames = await d.wireFrames!(mixed)
      expect(frames.count).toBe(7)
      const body = decodeFrames(
        Buffer.concat([Buffer.from(`{"messages":[${frames.json.toString('utf8')}]}\n`), frames.payloads]),
      )
      expect(body.messages.map((m) => m.seq)).toEqual(mixed.filter((x) => x !== 999_999))
    },
  )

  it('pendingRuns: runs across priorities, gaps, expiry, byte cuts and the range skipped', async () => {
    const d = completeDriver(await make())
    // Priority 4 in long runs broken by priority 9 messages, one expiring, sizes that vary.
    const { seqs } = await d.append(
      Array.from({ length: 60 }, (_, i) =>
        msg(i, {
          priority: i % 20 === 7 ? 9 : 4,
          ts: 5_000_000 - i * (i % 3), // not in seq order
          payload: Buffer.alloc(10 + (i % 7) * 5, 97),
          expiresAt: i === 33 ? clock + 10 : null,
        }),
      ),
    )
    for (const order of ['oldest', 'newest'] as const) {
      for (const [limit, maxBytes] of [
        [100, 1e9],
        [13, 1e9],
        [100, 700],
        [1, 1],
      ]) {
        for (const now of [clock, clock + 10]) {
          const q = { limit, maxBytes, order, now }
          const stored = await d.nextBatch(q)
          expect(await d.pendingRuns(q)).toEqual(runsOf(stored, order))
        }
      }
    }
    // Skipping the batch in flight: what nextBatch gives once those seqs are gone.
    const skipFirst = async (order: 'oldest' | 'newest', take: number) => {
      const q = { limit: take, maxBytes: 1e9, order, now: clock }
      const inFlight = await d.pendingRuns(q)
      const skip: Array<[number, number] | undefined> = []
      for (const r of inFlight) {
        const lo = Math.min(r.first, r.last)
        const hi = Math.max(r.first, r.last)
        const s = skip[r.priority]
        skip[r.priority] = s ? [Math.min(s[0], lo), Math.max(s[1], hi)] : [lo, hi]
      }
      const sent = new Set(inFlight.flatMap(expandRun))
      const rest = (await d.nextBatch({ ...q, limit: 1000 })).filter((m) => !sent.has(m.seq))
      expect((await d.pendingRuns({ ...q, limit: 25, skip })).flatMap(expandRun)).toEqual(
        rest.slice(0, 25).map((m) => m.seq),
      )
      return skip
    }
    await skipFirst('oldest', 17)
    await skipFirst('oldest', 4)
    const skip = await skipFirst('newest', 22)
    // Newest first: messages appended after the batch in flight was read come first.
    const late = await d.append([msg(100), msg(101), msg(102, { priority: 9 })])
    const next = (
      await d.pendingRuns({ limit: 4, maxBytes: 1e9, order: 'newest', now: clock, skip })
    ).flatMap(expandRun)
    expect(next.slice(0, 3)).toEqual([late.seqs[2], late.seqs[1], late.seqs[0]])
    expect(seqs).toContain(next[3])
  })

  /** 80 messages whose ts falls with seq; the 5 and then 30 oldest expire; the exact answers. */
  async function backlogOf(d: StorageDriver) {
    const { seqs } = await d.append(
      Array.from({ length: 80 }, (_, i) =>
        msg(i, { ts: 10_000 - i * 10, expiresAt: i >= 75 ? clock + 10 : i >= 45 ? clock + 20 : null }),
      ),
    )
    const ex = (a: number, b: number): [number, number] => [seqs[a], seqs[b]]
    const exact = (now: number, excluded: Array<[number, number]>) => {
      let best: number | null = null
      for (let i = 0; i < 80; i++) {
        const expiresAt = i >= 75 ? clock + 10 : i >= 45 ? clock + 20 : null
        if (expiresAt !== null && expiresAt <= now) continue
        if (excluded.some(([a, b]) => seqs[i] >= a && seqs[i] <= b)) continue
        if (best === null || 10_000 - i * 10 < best) best = 10_000 - i * 10
      }
      return best
    }
    const cases: Array<[number, Array<[number, number]>]> = []
    for (const now of [clock, clock + 10, clock + 20])
      for (const excluded of [[], [ex(70, 79)], [ex(0, 9), ex(60, 72)], [ex(0, 79)]])
        cases.push([now, excluded])
    return { cases, exact }
  }

  it('oldestPendingTs never answers later than the oldest pending message outside the ranges, nor earlier than the oldest of all', async () => {
    const d = completeDriver(await make())
    const { cases, exact } = await backlogOf(d)
    for (const [now, excluded] of cases) {
      const got = await d.oldestPendingTs(now, excluded)
      const all = (await d.stats(now)).oldestPendingTs
      const want = exact(now, excluded)
      // Later would let the broker's watermark pass a message still to come.
      if (want === null) expect(got === null || got <= (all ?? Infinity)).toBe(true)
      else {
        expect(got).not.toBeNull()
        expect(got!).toBeLessThanOrEqual(want)
        expect(got!).toBeGreaterThanOrEqual(all!)
      }
    }
  })

  it.skipIf(!own('oldestPendingTs'))(
    "the driver's own oldestPendingTs is exact: the oldest unexpired ts outside the ranges excluded",
    async () => {
      const d = await make()
      const { cases, exact } = await backlogOf(d)
      for (const [now, excluded] of cases)
        expect(await d.oldestPendingTs!(now, excluded)).toBe(exact(now, excluded))
    },
  )

  it('commitSent marks sent, adds counters and sets state', async () => {
    const d = completeDriver(await make())
    const { seqs } = await d.append([msg(1), msg(2), msg(3)])
    await d.setState('gone', 'x')
    expect(
      await d.commitSent(seqs.slice(0, 2), clock, {
        counters: { c: 2 },
        state: { k: 'v', gone: undefined },
      }),
    ).toBe(2)
    expect(await d.commitSent([], clock, { counters: { c: 1 } })).toBe(0)
    expect(await d.getCounters()).toEqual({ c: 3 })
    expect(await d.getState('k')).toBe('v')
    expect(await d.getState('gone')).toBeUndefined()
    expect((await d.stats(clock)).pending).toBe(1)
  })

  it.skipIf(!own('commitSent'))(
    "the driver's own commitSent is one transaction: all or nothing",
    async () => {
      const d = await make()
      const { seqs } = await d.append([msg(1), msg(2)])
      expect(await d.commitSent!([seqs[0]], clock, { counters: { c: 1 } })).toBe(1)
      await expect(
        d.commitSent!([seqs[1]], clock, { counters: { c: 1 }, state: { epoch: 'x' } }),
      ).rejects.toThrow(/epoch/)
      // The refused state change leaves the message pending and the counter as it was.
      expect((await d.stats(clock)).pending).toBe(1)
      expect(await d.getCounters()).toEqual({ c: 1 })
    },
  )
}
