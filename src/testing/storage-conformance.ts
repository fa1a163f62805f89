/**
 * The StorageDriver conformance suite. Every driver (built-in or third party)
 * must pass it:
 *
 *   import { storageConformance } from 'rmq/testing'
 *   storageConformance({ name: 'mine', factory: createMyStorage })
 *
 * Give `childModule` (a module whose default export is the factory) when the
 * driver declares multiProcess, so two real processes write one store at once.
 *
 * `fastPaths` lists the optional methods the driver offers itself. The tests
 * of pendingRuns, wireJson, wireFrames and commitSent run against the driver
 * completed by completeDriver (src/core/storage/complete-driver.ts), as sync
 * uses it, so they apply to every driver: its own fast paths, or the
 * fallbacks built from its basic methods. What only a driver's own fast path
 * promises (exactness, atomicity, any seqs) is selected with it.skipIf.
 */
import { spawn } from 'node:child_process'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { StorageFullError } from '../shared/errors.js'
import { completeDriver, FAST_PATHS, type FastPath } from '../core/storage/complete-driver.js'
import { accountedSize } from '../core/storage/size.js'
import type { NewMessage, StorageDriver, StorageOptions } from '../core/storage/driver.js'
import { fastPathConformance } from './storage-fast-paths-conformance.js'
import { CLOCK_START, UUID, msg, tempDir, type ConformanceOptions } from './storage-helpers.js'

export type { ConformanceOptions } from './storage-helpers.js'

export function storageConformance(opts: ConformanceOptions): void {
  const own = (k: FastPath) => opts.fastPaths.includes(k)
  describe(`storage conformance: ${opts.name}`, () => {
    let dir: string
    let cleanup: () => void
    let clock: number
    const open: StorageDriver[] = []

    beforeEach(() => {
      ;({ dir, cleanup } = tempDir('rmq-storage-'))
      clock = CLOCK_START
    })
    afterEach(async () => {
      for (const d of open.splice(0)) await d.close().catch(() => {})
      cleanup()
    })

    async function make(o: Partial<StorageOptions> = {}): Promise<StorageDriver> {
      const d = await opts.factory({
        path: path.join(dir, 'outbox.db'),
        maxBytes: 1024 ** 3,
        maxMessages: 0,
        overflow: 'reject',
        durability: 'full',
        now: () => clock,
        ...o,
      })
      open.push(d)
      return d
    }

    it('offers exactly the fast paths it declares', async () => {
      const d = await make()
      expect(completeDriver(d).fastPaths).toEqual(Object.fromEntries(FAST_PATHS.map((k) => [k, own(k)])))
    })

    it('has a name, capabilities and a random UUID epoch', async () => {
      const d = await make()
      expect(typeof d.name).toBe('string')
      expect(typeof d.capabilities.durable).toBe('boolean')
      expect(d.capabilities.durable).toBe(opts.durable)
      expect(d.epoch).toMatch(UUID)
      expect((await d.stats(clock)).epoch).toBe(d.epoch)
    })

    it('keeps arrival order with strictly increasing seqs and every field intact', async () => {
      const d = await make()
      const binary = Buffer.from([0, 255, 0xc3, 0x28, 10, 0])
      const a = await d.append([
        msg(1, {
          payload: binary,
          contentType: 'application/octet-stream',
          priority: 4,
          expiresAt: clock + 60_000,
          headers: { k: 'v' },
        }),
      ])
      clock += 10
      const b = await d.append([msg(2), msg(3, { ts: 5 })])
      const seqs = [...a.seqs, ...b.seqs]
      expect(seqs).toHaveLength(3)
      expect(seqs[1]).toBeGreaterThan(seqs[0])
      expect(seqs[2]).toBeGreaterThan(seqs[1])
      const batch = await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: clock })
      expect(batch.map((m) => m.seq)).toEqual(seqs)
      const first = batch[0]
      expect(Buffer.compare(first.payload, binary)).toBe(0)
      expect(first).toMatchObject({
        topic: 't/1',
        ts: 1_000_001,
        contentType: 'application/octet-stream',
        arrivedAt: 5_000_000,
        expiresAt: 5_060_000,
        priority: 4,
        headers: { k: 'v' },
        status: 'pending',
        sentAt: null,
        attempts: 0,
      })
      expect(first.size).toBe(
        accountedSize(msg(1, { payload: binary, contentType: 'application/octet-stream' }), '{"k":"v"}'),
      )
      expect(batch[1]).toMatchObject({
        contentType: null,
        expiresAt: null,
        priority: 4,
        headers: null,
        arrivedAt: 5_000_010,
      })
      expect(batch[2].ts).toBe(5)
    })

    it('keeps order, every field and exact sizes in large appends of mixed shapes', async () => {
      const d = await make()
      const shapeA = {
        topic: 'bulk/a',
        contentType: 'text/plain',
        priority: 7,
        expiresAt: clock + 60_000,
        headers: { h: 'ü' },
      }
      const messages: NewMessage[] = []
      // Long runs of one shape (only payload and ts differ), a mixed stretch, then another long run.
      for (let i = 0; i < 250; i++)
        messages.push({ ...shapeA, payload: Buffer.from(`a-${i}-${'é'.repeat(i % 7)}`), ts: 10 + i })
      for (let i = 0; i < 40; i++)
        messages.push(
          i % 2 ? msg(i, { priority: i % 10 }) : { ...shapeA, payload: Buffer.from(`m-${i}`), ts: 3 },
        )
      for (let i = 0; i < 230; i++)
        messages.push({ topic: 'bulk/b', payload: Buffer.alloc(i % 13, i), ts: 2_000 - i })
      const { seqs } = await d.append(messages)
      expect(seqs).toHaveLength(messages.length)
      for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBe(seqs[i - 1] + 1)
      const stored = await d.nextBatch({ limit: 10_000, maxBytes: 1e9, order: 'oldest', now: clock })
      stored.sort((x, y) => x.seq - y.seq)
      expect(stored.map((m) => m.seq)).toEqual(seqs)
      let bytes = 0
      stored.forEach((s, i) => {
        const m = messages[i]
        const size = accountedSize(m, m.headers ? JSON.stringify(m.headers) : null)
        bytes += size
        expect(Buffer.compare(s.payload, Buffer.from(m.payload))).toBe(0)
        expect(s).toMatchObject({
          topic: m.topic,
          ts: m.ts,
          contentType: m.contentType ?? null,
          expiresAt: m.expiresAt ?? null,
          priority: m.priority ?? 4,
          headers: m.headers ?? null,
          arrivedAt: clock,
          size,
        })
      })
      expect(await d.stats(clock)).toMatchObject({ pending: messages.length, pendingBytes: bytes })
    })

    it('never reuses a seq, even after everything was deleted', async () => {
      const d = await make()
      const { seqs } = await d.append([msg(1), msg(2)])
      await d.markSent(seqs, clock)
      const purged = await d.purge({ sentBefore: clock + 1, now: clock, limit: 100 })
      expect(purged.sentDeleted).toBe(2)
      const again = await d.append([msg(3)])
      expect(again.seqs[0]).toBeGreaterThan(seqs[1])
    })

    it('appends a batch atomically: all or nothing', async () => {
      const one = accountedSize(msg(1))
      const d = await make({ maxBytes: one * 5 })
      await d.append([msg(1), msg(2), msg(3)])
      const before = await d.stats(clock)
      await expect(d.append([msg(4), msg(5), msg(6)])).rejects.toBeInstanceOf(StorageFullError)
      const after = await d.stats(clock)
      expect(after.totalMessages).toBe(3)
      expect(after.appendedTotal).toBe(before.appendedTotal)
      const batch = await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: clock })
      expect(batch.map((m) => m.topic)).toEqual(['t/1', 't/2', 't/3'])
      expect((await d.append([])).seqs).toEqual([])
    })

    it('moves messages from pending to sent and counts attempts', async () => {
      const d = await make()
      const { seqs } = await d.append([msg(1), msg(2), msg(3)])
      expect(await d.markSent([seqs[0], seqs[1]], clock + 5)).toBe(2)
      expect(await d.markSent([seqs[0], 999_999], clock + 6)).toBe(0)
      const batch = await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: clock })
      expect(batch.map((m) => m.seq)).toEqual([seqs[2]])
      const s = await d.stats(clock)
      expect(s).toMatchObject({ pending: 1, sentKept: 2, totalMessages: 3, sentTotal: 2, appendedTotal: 3 })
      expect(s.pendingBytes).toBe(accountedSize(msg(3)))
      expect(s.totalBytes).toBe(accountedSize(msg(1)) + accountedSize(msg(2)) + accountedSize(msg(3)))
    })

    it('marks sent by runs, scattered seqs, duplicates and any order, counting each message once', async () => {
      const d = await make()
      const { seqs } = await d.append(Array.from({ length: 40 }, (_, i) => msg(i)))
      // Descending, with a duplicate: one run.
      expect(await d.markSent([seqs[3], seqs[2], seqs[1], seqs[2]], clock)).toBe(3)
      // Every other one: more runs than a driver may want to send one by one.
      const scattered = seqs.filter((_, i) => i >= 10 && i % 2 === 0)
      expect(await d.markSent([...scattered].reverse(), clock + 1)).toBe(scattered.length)
      // Already sent, unknown, and fresh ones mixed.
      expect(await d.markSent([seqs[1], seqs[39], 1e9, seqs[37]], clock + 2)).toBe(2)
      const left = await d.nextBatch({ limit: 100, maxBytes: 1e9, order: 'oldest', now: clock })
      const sent = new Set([seqs[1], seqs[2], seqs[3], ...scattered, seqs[37], seqs[39]])
      expect(left.map((m) => m.seq)).toEqual(seqs.filter((s) => !sent.has(s)))
      const s = await d.stats(clock)
      expect(s).toMatchObject({ pending: 40 - sent.size, sentKept: sent.size, sentTotal: sent.size })
      expect(s.pendingBytes).toBe(left.reduce((n, m) => n + m.size, 0))
    })

    fastPathConformance({ make, own })

    it('records attempts on the stored messages', async () => {
      const d = await make()
      const { seqs } = await d.append([msg(1), msg(2)])
      await d.recordAttempt([seqs[0]])
      await d.recordAttempt([seqs[0], seqs[1]])
      const batch = await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: clock })
      expect(batch.map((m) => m.attempts)).toEqual([2, 1])
    })

    it('cuts batches by count and by bytes, always returning at least one message', async () => {
      const d = await make()
      const big = msg(1, { payload: Buffer.alloc(5000, 1) })
      await d.append([big, msg(2), msg(3), msg(4), msg(5)])
      const q = { order: 'oldest' as const, now: clock }
      expect(await d.nextBatch({ ...q, limit: 3, maxBytes: 1e9 })).toHaveLength(3)
      const one = await d.nextBatch({ ...q, limit: 10, maxBytes: 100 })
      expect(one.map((m) => m.topic)).toEqual(['t/1'])
      const small = accountedSize(msg(2))
      const rest = await d.nextBatch({ ...q, limit: 10, maxBytes: accountedSize(big) + 2 * small })
      expect(rest.map((m) => m.topic)).toEqual(['t/1', 't/2', 't/3'])
    })

    it('selects oldest-first or newest-first, higher priority first in both', async () => {
      const d = await make()
      await d.append([
        msg(1),
        msg(2, { priority: 9 }),
        msg(3),
        msg(4, { priority: 0 }),
        msg(5, { priority: 9 }),
        msg(6),
      ])
      const oldest = await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: clock })
      expect(oldest.map((m) => m.topic)).toEqual(['t/2', 't/5', 't/1', 't/3', 't/6', 't/4'])
      const newest = await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'newest', now: clock })
      expect(newest.map((m) => m.topic)).toEqual(['t/5', 't/2', 't/6', 't/3', 't/1', 't/4'])
      const top = await d.nextBatch({ limit: 3, maxBytes: 1e9, order: 'newest', now: clock })
      expect(top.map((m) => m.topic)).toEqual(['t/5', 't/2', 't/6'])
    })

    it('never returns expired messages and purges them as expired', async () => {
      const d = await make()
      await d.append([msg(1, { expiresAt: clock + 100 }), msg(2), msg(3, { expiresAt: clock + 1000 })])
      const later = clock + 100
      const batch = await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: later })
      expect(batch.map((m) => m.topic)).toEqual(['t/2', 't/3'])
      const s = await d.stats(later)
      expect(s.pending).toBe(2)
      expect(s.pendingBytes).toBe(accountedSize(msg(2)) + accountedSize(msg(3)))
      // Past its TTL and still stored: counted apart until purged.
      expect(s).toMatchObject({ expiredPending: 1, expiredTotal: 0 })
      const dry = await d.purge({ sentBefore: 0, now: later, limit: 100, dryRun: true })
      expect(dry).toEqual({ sentDeleted: 0, expiredDeleted: 1, bytesFreed: accountedSize(msg(1)) })
      expect((await d.stats(later)).totalMessages).toBe(3)
      const res = await d.purge({ sentBefore: 0, now: later, limit: 100 })
      expect({ ...res, workMs: undefined }).toEqual(dry)
      const after = await d.stats(later)
      expect(after).toMatchObject({ totalMessages: 2, expiredTotal: 1, expiredPending: 0, pending: 2 })
    })

    it('purges sent messages older than the retention, within the limit', async () => {
      const d = await make()
      const { seqs } = await d.append([msg(1), msg(2), msg(3), msg(4)])
      await d.markSent([seqs[0], seqs[1], seqs[2]], 100)
      await d.markSent([seqs[3]], 300)
      const dry = await d.purge({ sentBefore: 200, now: clock, limit: 2, dryRun: true })
      expect(dry.sentDeleted).toBe(2)
      expect((await d.stats(clock)).sentKept).toBe(4)
      expect((await d.purge({ sentBefore: 200, now: clock, limit: 2 })).sentDeleted).toBe(2)
      expect((await d.purge({ sentBefore: 200, now: clock, limit: 2 })).sentDeleted).toBe(1)
      expect((await d.purge({ sentBefore: 200, now: clock, limit: 2 })).sentDeleted).toBe(0)
      const s = await d.stats(clock)
      expect(s).toMatchObject({ sentKept: 1, totalMessages: 1, expiredTotal: 0, sentTotal: 4 })
    })

    it('overflow=reject refuses writes past maxBytes and maxMessages with StorageFullError (73)', async () => {
      const one = accountedSize(msg(1))
      const d = await make({ maxBytes: one * 3 })
      await d.append([msg(1), msg(2), msg(3)])
      const err = await d.append([msg(4)]).catch((e) => e)
      expect(err).toBeInstanceOf(StorageFullError)
      expect(err.exitCode).toBe(73)
      expect(err.message).toMatch(/full/)
      expect(err.suggestion).toMatch(/rmq sync/)
      expect(err.details).toMatchObject({
        reason: 'limit',
        usedBytes: one * 3,
        maxBytes: one * 3,
        pending: 3,
      })
      const byCount = await make({ path: path.join(dir, 'count.db'), maxMessages: 2 })
      await byCount.append([msg(1), msg(2)])
      await expect(byCount.append([msg(3)])).rejects.toBeInstanceOf(StorageFullError)
      expect((await byCount.stats(clock)).totalMessages).toBe(2)
    })

    it('makes room from sent and expired messages before refusing', async () => {
      const one = accountedSize(msg(1))
      const d = await make({ maxBytes: one * 3 })
      const { seqs } = await d.append([msg(1), msg(2, { expiresAt: clock + 1 }), msg(3)])
      await d.markSent([seqs[0]], clock)
      clock += 5
      await d.append([msg(4), msg(5)])
      const s = await d.stats(clock)
      expect(s).toMatchObject({ totalMessages: 3, pending: 3, sentKept: 0, droppedTotal: 0, expiredTotal: 1 })
    })

    it('overflow=drop-oldest drops the oldest pending messages and counts them', async () => {
      const one = accountedSize(msg(1))
      const d = await make({ maxBytes: one * 3, overflow: 'drop-oldest' })
      await d.append([msg(1), msg(2), msg(3)])
      const r = await d.append([msg(4), msg(5)])
      expect(r.dropped).toBe(2)
      const batch = await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: clock })
      expect(batch.map((m) => m.topic)).toEqual(['t/3', 't/4', 't/5'])
      const s = await d.stats(clock)
      expect(s).toMatchObject({ droppedTotal: 2, totalMessages: 3, appendedTotal: 5 })
      // A write larger than the whole store is refused even under drop-oldest.
      await expect(d.append([msg(6, { payload: Buffer.alloc(one * 4) })])).rejects.toBeInstanceOf(
        StorageFullError,
      )
      expect((await d.stats(clock)).totalMessages).toBe(3)
    })

    it('reports stats: oldest pending ts and arrival, totals and limits', async () => {
      const d = await make({ maxBytes: 1_000_000, maxMessages: 50 })
      expect(await d.stats(clock)).toMatchObject({
        pending: 0,
        pendingBytes: 0,
        oldestPendingTs: null,
        oldestPendingArrivedAt: null,
        totalMessages: 0,
        totalBytes: 0,
        maxBytes: 1_000_000,
        maxMessages: 50,
      })
      await d.append([msg(1, { ts: 700, priority: 1 })])
      clock += 50
      const { seqs } = await d.append([msg(2, { ts: 300, priority: 9 }), msg(3, { ts: 900 })])
      const s = await d.stats(clock)
      expect(s).toMatchObject({
        pending: 3,
        oldestPendingTs: 300,
        oldestPendingArrivedAt: 5_000_000,
        appendedTotal: 3,
      })
      await d.markSent([seqs[0]], clock)
      expect((await d.stats(clock)).oldestPendingTs).toBe(700)
    })

    it('keeps small state keys, counters and leases', async () => {
      const d = await make()
      expect(await d.getState('backoff')).toBeUndefined()
      await d.setState('backoff', '{"until":5}')
      await d.setState('backoff', '{"until":6}')
      expect(await d.getState('backoff')).toBe('{"until":6}')
      await d.setState('backoff', undefined)
      expect(await d.getState('backoff')).toBeUndefined()
      await expect(d.setState('epoch', 'x')).rejects.toThrow(/epoch/)
      await d.addCounters({ batches: 2, bytes: 100 })
      await d.addCounters({ batches: 1 })
      expect(await d.getCounters()).toEqual({ batches: 3, bytes: 100 })
      expect(await d.acquireLease('sync', 'a', 1000, 10)).toBe(true)
      expect(await d.acquireLease('sync', 'b', 1000, 20)).toBe(false)
      expect(await d.acquireLease('sync', 'a', 1000, 30)).toBe(true)
      expect(await d.acquireLease('sync', 'b', 1000, 1031)).toBe(true)
      await d.releaseLease('sync', 'a')
      expect(await d.acquireLease('sync', 'a', 1000, 1040)).toBe(false)
      await d.releaseLease('sync', 'b')
      expect(await d.acquireLease('sync', 'a', 1000, 1040)).toBe(true)
    })

    it('enforces lowered limits on demand', async () => {
      const d = await make({ overflow: 'drop-oldest' })
      await d.append([msg(1), msg(2), msg(3)])
      expect(await d.enforceLimits()).toMatchObject({ dropped: 0 })
      expect((await d.compact()).fileBytesAfter === null).toBe(!d.capabilities.durable)
    })

    describe.skipIf(!opts.durable)('a durable driver', () => {
      it('survives close and reopen with messages, state, counters and totals', async () => {
        const d = await make()
        const { seqs } = await d.append([msg(1), msg(2), msg(3, { priority: 8 })])
        await d.markSent([seqs[0]], clock)
        await d.setState('k', 'v')
        await d.addCounters({ n: 4 })
        const before = await d.stats(clock)
        await d.close()
        const again = await make()
        expect(again.epoch).toBe(d.epoch)
        const after = await again.stats(clock)
        expect({ ...after, fileBytes: 0 }).toEqual({ ...before, fileBytes: 0 })
        expect(await again.getState('k')).toBe('v')
        expect(await again.getCounters()).toEqual({ n: 4 })
        const batch = await again.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: clock })
        expect(batch.map((m) => m.topic)).toEqual(['t/3', 't/2'])
        expect((await again.append([msg(4)])).seqs[0]).toBeGreaterThan(seqs[2])
      })

      it('applies lowered limits to an existing store (enforceLimits)', async () => {
        const one = accountedSize(msg(1))
        const d = await make()
        await d.append([msg(1), msg(2), msg(3), msg(4)])
        await d.close()
        const reject = await make({ maxBytes: one * 2 })
        expect(await reject.enforceLimits()).toMatchObject({ dropped: 0 })
        expect((await reject.stats(clock)).totalMessages).toBe(4)
        await reject.close()
        const drop = await make({ maxBytes: one * 2, overflow: 'drop-oldest' })
        expect(await drop.enforceLimits()).toMatchObject({ dropped: 2 })
        const s = await drop.stats(clock)
        expect(s).toMatchObject({ totalMessages: 2, droppedTotal: 2 })
      })
    })

    describe.skipIf(opts.childModule === undefined)('several processes', () => {
      it('lets two processes write the same store at once without losing or reusing a seq', async () => {
        const file = path.join(dir, 'shared.db')
        const init = await make({ path: file })
        await init.close()
        const perChild = 2000
        const script = `
          const { default: factory } = await import(process.env.DRIVER_URL)
          const d = await factory({ path: process.env.STORE, maxBytes: 2 ** 40, maxMessages: 0, overflow: 'reject', durability: 'full' })
          const tag = process.env.TAG
          process.stdout.write('ready\\n')
          await new Promise((r) => process.stdin.once('data', r))
          const seqs = []
          for (let b = 0; b < ${perChild / 100}; b++) {
            const batch = Array.from({ length: 100 }, (_, i) => ({ topic: 'mp/' + tag, payload: Buffer.from(tag + ':' + (b * 100 + i)), ts: Date.now() }))
            seqs.push(...(await d.append(batch)).seqs)
          }
          await d.close()
          process.stdout.write(JSON.stringify(seqs) + '\\n')
        `
        const run = (tag: string) => {
          const child = spawn(
            process.execPath,
            [...(opts.childModule!.nodeArgs ?? []), '--input-type=module', '-e', script],
            {
              env: { ...process.env, DRIVER_URL: opts.childModule!.url, STORE: file, TAG: tag },
              stdio: ['pipe', 'pipe', 'pipe'],
            },
          )
          let out = ''
          let err = ''
          child.stdout.setEncoding('utf8').on('data', (s) => (out += s))
          child.stderr.setEncoding('utf8').on('data', (s) => (err += s))
          const done = new Promise<number[]>((resolve, reject) =>
            child.on('close', (code) =>
              code === 0
                ? resolve(JSON.parse(out.split('\n')[1]))
                : reject(new Error(`child ${tag} exited ${code}: ${err}`)),
            ),
          )
          const ready = new Promise<void>((resolve, reject) => {
            const check = () => (out.includes('ready\n') ? resolve() : child.stdout.once('data', check))
            check()
            done.catch(reject)
          })
          return { child, ready, done }
        }
        const a = run('a')
        const b = run('b')
        await Promise.all([a.ready, b.ready])
        a.child.stdin.end('go\n')
        b.child.stdin.end('go\n')
        const [sa, sb] = await Promise.all([a.done, b.done])
        expect(sa).toHaveLength(perChild)
        expect(sb).toHaveLength(perChild)
        expect(new Set([...sa, ...sb]).size).toBe(2 * perChild)
        const d = await make({ path: file })
        const s = await d.stats(Date.now())
        expect(s).toMatchObject({
          pending: 2 * perChild,
          appendedTotal: 2 * perChild,
          totalMessages: 2 * perChild,
        })
        const all = await d.nextBatch({
          limit: 10 * perChild,
          maxBytes: 1e12,
          order: 'oldest',
          now: Date.now(),
        })
        expect(all).toHaveLength(2 * perChild)
        // Each writer's messages are in its own order.
        for (const tag of ['a', 'b']) {
          const mine = all
            .filter((m) => m.topic === `mp/${tag}`)
            .map((m) => Number(m.payload.toString().split(':')[1]))
          expect(mine).toEqual(Array.from({ length: perChild }, (_, i) => i))
        }
      })
    })
  })
}
