import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError, StorageFullError } from '../../src/core/errors.js'
import { resolveStorageDriver } from '../../src/plugins/storage/index.js'
import { createMemoryStorage } from '../../src/plugins/storage/memory.js'
import { SCHEMA_VERSION, createSqliteStorage } from '../../src/plugins/storage/sqlite.js'
import type { StorageOptions } from '../../src/plugins/storage/types.js'
import { ROOT, makeTempDir } from '../helpers/cli.js'
import { storageConformance } from './storage-conformance.js'

storageConformance({
  name: 'sqlite',
  factory: createSqliteStorage,
  durable: true,
  childModule: {
    url: pathToFileURL(path.join(ROOT, 'src/plugins/storage/sqlite.ts')).href,
    nodeArgs: ['--import', 'tsx'],
  },
})

storageConformance({ name: 'memory', factory: createMemoryStorage, durable: false })

describe('storage registry', () => {
  it('resolves the built-ins and fails with exit 78 listing them for unknown names', async () => {
    expect(await resolveStorageDriver('sqlite')).toBe(createSqliteStorage)
    expect(await resolveStorageDriver('memory')).toBe(createMemoryStorage)
    const err = await resolveStorageDriver('postgresql').catch((e) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.exitCode).toBe(78)
    expect(err.suggestion).toContain('sqlite, memory')
  })

  it('loads a third-party driver from a path whose default export is the factory', async () => {
    const { dir, cleanup } = makeTempDir()
    try {
      const file = path.join(dir, 'my-driver.mjs')
      const memory = pathToFileURL(path.join(ROOT, 'src/plugins/storage/memory.ts')).href
      fs.writeFileSync(file, `export { default } from ${JSON.stringify(memory)}\n`)
      const factory = await resolveStorageDriver('./my-driver.mjs', dir)
      const d = await factory({
        path: '',
        maxBytes: 1000,
        maxMessages: 0,
        overflow: 'reject',
        durability: 'full',
      })
      expect(d.name).toBe('memory')
    } finally {
      cleanup()
    }
  })
})

describe('sqlite driver specifics', () => {
  let dir: string
  let cleanup: () => void
  beforeEach(() => ({ dir, cleanup } = makeTempDir()))
  afterEach(() => {
    delete process.env.RMQ_FAILPOINTS
    cleanup()
  })
  const options = (o: Partial<StorageOptions> = {}): StorageOptions => ({
    path: path.join(dir, 'outbox.db'),
    maxBytes: 1024 ** 3,
    maxMessages: 0,
    overflow: 'reject',
    durability: 'full',
    ...o,
  })

  it('creates a WAL file with incremental auto-vacuum and the current schema version', async () => {
    const d = createSqliteStorage(options())
    await d.append([{ topic: 'a', payload: Buffer.from('x'), ts: 1 }])
    const db = new Database(options().path, { readonly: true })
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal')
    expect(db.pragma('auto_vacuum', { simple: true })).toBe(2)
    expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION)
    db.close()
    await d.close()
  })

  it('uses synchronous=FULL unless durability=normal', async () => {
    for (const [durability, level] of [
      ['full', 2],
      ['normal', 1],
    ] as const) {
      const d = createSqliteStorage(options({ durability }))
      expect((d as any).db.pragma('synchronous', { simple: true })).toBe(level)
      await d.close()
    }
  })

  it('refuses a store from a newer rmq', async () => {
    const db = new Database(options().path)
    db.pragma('user_version = 99')
    db.close()
    expect(() => createSqliteStorage(options())).toThrow(/newer than this rmq/)
  })

  it('reports a full disk (SQLITE_FULL) as StorageFullError and keeps what was stored', async () => {
    process.env.RMQ_FAILPOINTS = 'sqlite.maxPageCount=40'
    const d = createSqliteStorage(options())
    const payload = Buffer.alloc(2000, 7)
    let stored = 0
    let err: any
    for (let i = 0; i < 200 && !err; i++) {
      try {
        await d.append(Array.from({ length: 5 }, () => ({ topic: 'disk', payload, ts: i })))
        stored += 5
      } catch (e) {
        err = e
      }
    }
    expect(err).toBeInstanceOf(StorageFullError)
    expect(err.exitCode).toBe(73)
    expect(err.message).toMatch(/disk .* is full: nothing from this write was stored/)
    expect(err.details.reason).toBe('disk')
    expect(stored).toBeGreaterThan(0)
    const s = await d.stats(Date.now())
    expect(s.totalMessages).toBe(stored)
    await d.close()
    delete process.env.RMQ_FAILPOINTS
    const db = new Database(options().path, { readonly: true })
    expect(db.pragma('quick_check', { simple: true })).toBe('ok')
    expect(db.prepare('SELECT count(*) FROM messages').pluck().get()).toBe(stored)
    db.close()
  })

  it('gives freed pages back to the file system on compact()', async () => {
    const d = createSqliteStorage(options())
    const payload = Buffer.alloc(4000, 1)
    const { seqs } = await d.append(Array.from({ length: 500 }, (_, i) => ({ topic: 't', payload, ts: i })))
    await d.markSent(seqs, 1)
    await d.purge({ sentBefore: 2, now: 0, limit: 10_000 })
    const { fileBytesBefore, fileBytesAfter } = await d.compact()
    expect(fileBytesBefore).toBeGreaterThan(1_000_000)
    expect(fileBytesAfter!).toBeLessThan(fileBytesBefore! / 4)
    await d.close()
  })

  it('uses the indexes for batches, stats and purge (no full scans)', async () => {
    const d = createSqliteStorage(options())
    await d.close()
    const db = new Database(options().path, { readonly: true })
    const plan = (sql: string) =>
      (db.prepare('EXPLAIN QUERY PLAN ' + sql).all() as Array<{ detail: string }>)
        .map((r) => r.detail)
        .join('; ')
    expect(
      plan(
        'SELECT * FROM messages WHERE status = 0 AND priority = 4 AND (expires_at IS NULL OR expires_at > 5) ORDER BY seq DESC LIMIT 10',
      ),
    ).toMatch(/USING INDEX messages_pending/)
    expect(
      plan(
        'SELECT ts FROM messages WHERE status = 0 AND (expires_at IS NULL OR expires_at > 5) ORDER BY ts LIMIT 1',
      ),
    ).toMatch(/USING INDEX messages_pending_ts/)
    expect(
      plan(
        'SELECT seq, size, status FROM messages WHERE status = 1 AND sent_at < 5 ORDER BY sent_at LIMIT 9',
      ),
    ).toMatch(/USING INDEX messages_sent/)
    expect(
      plan('SELECT seq, size, status FROM messages WHERE expires_at <= 5 ORDER BY expires_at LIMIT 9'),
    ).toMatch(/USING INDEX messages_expiry/)
    // markSent, set-based: by rowid ranges or a json_each list, never a scan.
    expect(
      plan('UPDATE messages SET status = 1, sent_at = 1 WHERE seq BETWEEN 1 AND 9 AND status = 0'),
    ).toMatch(/USING INTEGER PRIMARY KEY \(rowid>\? AND rowid<\?\)/)
    expect(
      plan(
        `UPDATE messages SET status = 1, sent_at = 1 WHERE seq IN (SELECT value FROM json_each('[1,5]')) AND status = 0`,
      ),
    ).toMatch(/USING INTEGER PRIMARY KEY \(rowid=\?\)/)
    db.close()
  })
})
