import fs from 'node:fs'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { CLEANUP_LEASE, runCleanup } from '../../src/core/cleanup.js'
import { HOUR, msgs, sent, setupOutbox, type Cleanups } from '../helpers/cleanup.js'

const cleanups: Cleanups = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})
const setup = (options?: Record<string, unknown>, dir?: string) => setupOutbox(cleanups, options, dir)

describe('runCleanup', () => {
  it('deletes expired messages whether sent or not, counts unsent ones as expired, keeps live pending ones', async () => {
    const { config, store } = await setup()
    const now = Date.now()
    const expiredPending = (await store.append(msgs(3, { expiresAt: now - 1000 }))).seqs
    const live = (await store.append(msgs(2, { expiresAt: now + HOUR }))).seqs
    const noTtl = (await store.append(msgs(2))).seqs
    const expiredSent = (await store.append(msgs(4, { expiresAt: now - 1 }))).seqs
    await store.markSent(expiredSent, now - 60_000) // well inside the 24h retention
    const r = await runCleanup(store, config, { now })
    expect(r).toMatchObject({ status: 'ok', sentDeleted: 4, expiredDeleted: 3, dropped: 0, limitDeleted: 0 })
    const s = await store.stats(now)
    expect(s).toMatchObject({ totalMessages: 4, pending: 4, sentKept: 0, expiredTotal: 3 })
    const left = await store.nextBatch({ limit: 100, maxBytes: 1e9, order: 'oldest', now })
    expect(left.map((m) => m.seq)).toEqual([...live, ...noTtl])
    expect(expiredPending.every((q) => !left.some((m) => m.seq === q))).toBe(true)
  })

  it('keeps sent messages for cleanup.sentRetention and deletes older ones', async () => {
    const { config, store } = await setup({ 'cleanup.sentRetention': '2h' })
    const now = Date.now()
    await sent(store, 50, now - 3 * HOUR)
    await sent(store, 20, now - HOUR)
    const pending = (await store.append(msgs(5))).seqs
    const r = await runCleanup(store, config, { now })
    expect(r).toMatchObject({ sentDeleted: 50, expiredDeleted: 0, sentRetentionMs: 2 * HOUR })
    expect(r.sentBefore).toBe(now - 2 * HOUR)
    expect(r.remaining).toMatchObject({ messages: 25, pending: 5, sentKept: 20 })
    const again = await runCleanup(store, config, { now: now + 1.5 * HOUR })
    expect(again.sentDeleted).toBe(20)
    const left = await store.nextBatch({ limit: 100, maxBytes: 1e9, order: 'oldest', now })
    expect(left.map((m) => m.seq)).toEqual(pending)
  })

  it('enforces lowered limits under overflow=reject: sent messages go, pending ones never do', async () => {
    const { store, dir } = await setup()
    const now = Date.now()
    await sent(store, 30, now - 60_000, 1000) // inside retention
    const pending = (await store.append(msgs(30, {}, 1000))).seqs
    await store.close()
    const lowered = await setup({ 'storage.maxBytes': 20 * 1100, 'storage.overflow': 'reject' }, dir)
    const r = await runCleanup(lowered.store, lowered.config, { now })
    expect(r).toMatchObject({ sentDeleted: 0, dropped: 0, limitDeleted: 30 })
    expect(r.remaining).toMatchObject({ pending: 30, sentKept: 0 })
    expect(r.limits.overBytes).toBeGreaterThan(0) // still over: pending data is never deleted under reject
    const left = await lowered.store.nextBatch({ limit: 100, maxBytes: 1e9, order: 'oldest', now })
    expect(left.map((m) => m.seq)).toEqual(pending)
  })

  it('enforces lowered limits under overflow=drop-oldest: sent first, then the oldest pending, in small steps', async () => {
    const { store, dir } = await setup()
    const now = Date.now()
    await sent(store, 10, now - 60_000, 1000)
    const pending = (await store.append(msgs(90, {}, 1000))).seqs
    await store.close()
    const lowered = await setup(
      { 'storage.maxMessages': 40, 'storage.overflow': 'drop-oldest', 'storage.maxBytes': '1GB' },
      dir,
    )
    // One step deletes at most `limit` rows: sent ones first.
    expect(await lowered.store.enforceLimits({ limit: 7 })).toMatchObject({ dropped: 0, deleted: 7 })
    const r = await runCleanup(lowered.store, lowered.config, { now, initialRows: 7 })
    expect(r).toMatchObject({ dropped: 50, limitDeleted: 3 })
    expect(r.transactions).toBeGreaterThan(2)
    expect(r.limits).toMatchObject({ overBytes: 0, overMessages: 0 })
    const s = await lowered.store.stats(now)
    expect(s).toMatchObject({ totalMessages: 40, droppedTotal: 50 })
    const left = await lowered.store.nextBatch({ limit: 100, maxBytes: 1e9, order: 'oldest', now })
    expect(left.map((m) => m.seq)).toEqual(pending.slice(50)) // the newest 40 stay
  })

  it('shrinks the database file after a large cleanup', async () => {
    const { config, store, dir } = await setup()
    const now = Date.now()
    await sent(store, 40_000, now - 2 * 24 * HOUR, 500)
    await store.append(msgs(100))
    const file = path.join(dir, config.storage.path)
    const before = fs.statSync(file).size
    expect(before).toBeGreaterThan(20_000_000)
    const r = await runCleanup(store, config, { now })
    expect(r.sentDeleted).toBe(40_000)
    expect(r.fileBytesBefore).toBeGreaterThan(20_000_000)
    expect(r.fileBytesAfter).toBeLessThan(r.fileBytesBefore! / 10)
    expect(r.fileBytesFreed).toBe(r.fileBytesBefore! - r.fileBytesAfter!)
    expect(fs.statSync(file).size).toBeLessThan(before / 10)
    expect(fs.existsSync(file + '-wal') ? fs.statSync(file + '-wal').size : 0).toBeLessThan(1_000_000)
    expect((await store.stats(now)).pending).toBe(100)
  })

  it('--dry-run reports what a real run deletes and changes nothing', async () => {
    const { config, store, dir } = await setup()
    const now = Date.now()
    await sent(store, 1000, now - 2 * 24 * HOUR)
    await sent(store, 10, now - 60_000)
    await store.append(msgs(5, { expiresAt: now - 1 }))
    await store.append(msgs(7))
    const file = path.join(dir, config.storage.path)
    const statsBefore = await store.stats(now)
    const bytesBefore = fs.readFileSync(file)
    const dry = await runCleanup(store, config, { now, dryRun: true })
    expect(dry).toMatchObject({ dryRun: true, sentDeleted: 1000, expiredDeleted: 5, transactions: 0 })
    expect(dry.remaining).toMatchObject({ messages: 17, pending: 7, sentKept: 10 })
    expect(await store.stats(now)).toEqual(statsBefore)
    expect(fs.readFileSync(file).equals(bytesBefore)).toBe(true)
    const real = await runCleanup(store, config, { now })
    expect(real).toMatchObject({
      sentDeleted: dry.sentDeleted,
      expiredDeleted: dry.expiredDeleted,
      bytesFreed: dry.bytesFreed,
    })
  })

  it('does nothing while another cleanup holds the lease', async () => {
    const { config, store } = await setup()
    await sent(store, 10, Date.now() - 2 * 24 * HOUR)
    expect(await store.acquireLease(CLEANUP_LEASE, 'other', 60_000, Date.now())).toBe(true)
    const r = await runCleanup(store, config)
    expect(r).toMatchObject({ status: 'locked', sentDeleted: 0 })
    expect((await store.stats(Date.now())).sentKept).toBe(10)
  })
})
