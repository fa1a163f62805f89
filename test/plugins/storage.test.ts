import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ConfigError, StorageFullError } from '../../src/shared/errors.js'
import { FAST_PATHS } from '../../src/core/storage/complete-driver.js'
import { resolveStorageDriver } from '../../src/core/storage/registry.js'
import { createMemoryStorage } from '../../src/plugins/storage/memory.js'
import { SCHEMA_VERSION, createSqliteStorage } from '../../src/plugins/storage/sqlite/index.js'
import type { StorageOptions } from '../../src/core/storage/driver.js'
import { ROOT, makeTempDir } from '../helpers/cli.js'
import { createBasicSqliteStorage } from '../helpers/basic-driver.js'
import { storageConformance } from '../../src/testing/storage-conformance.js'

storageConformance({
  name: 'sqlite',
  factory: createSqliteStorage,
  durable: true,
  childModule: {
    url: pathToFileURL(path.join(ROOT, 'src/plugins/storage/sqlite/index.ts')).href,
    nodeArgs: ['--import', 'tsx'],
  },
  fastPaths: FAST_PATHS,
})

storageConformance({ name: 'memory', factory: createMemoryStorage, durable: false, fastPaths: [] })

// A driver with the basic methods only (as a third party may write one), completed by completeDriver.
storageConformance({
  name: 'sqlite with the basic methods only',
  factory: createBasicSqliteStorage,
  durable: true,
  childModule: {
    url: pathToFileURL(path.join(ROOT, 'test/helpers/basic-driver.ts')).href,
    nodeArgs: ['--import', 'tsx'],
  },
  fastPaths: [],
})

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

  it('truncates the WAL on compact() while another process keeps checkpointing it', async () => {
    const d = createSqliteStorage(options())
    const payload = Buffer.alloc(4000, 1)
    const { seqs } = await d.append(Array.from({ length: 500 }, (_, i) => ({ topic: 't', payload, ts: i })))
    await d.markSent(seqs, 1)
    await d.purge({ sentBefore: 2, now: 0, limit: 10_000 })
    const wal = options().path + '-wal'
    expect(fs.statSync(wal).size).toBeGreaterThan(1_000_000)
    // A publisher's automatic checkpoint holds SQLite's checkpoint lock, and a
    // TRUNCATE meeting it is answered busy at once, whatever the busy timeout.
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const db = new (require('better-sqlite3'))(process.argv[1], { timeout: 5000 })
         const end = Date.now() + 30000
         process.stdout.write('ready\\n')
         while (Date.now() < end) db.exec('PRAGMA wal_checkpoint(PASSIVE)')`,
        options().path,
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
    )
    try {
      await new Promise((resolve) => child.stdout.once('data', resolve))
      const { fileBytesAfter } = await d.compact()
      expect(fs.statSync(wal).size).toBe(0)
      expect(fileBytesAfter).toBe(fs.statSync(options().path).size)
    } finally {
      child.kill('SIGKILL')
      await d.close()
    }
  })

  it('uses the indexes for batches, stats, sending and purge (no full scans)', async () => {
    const d = createSqliteStorage(options())
    await d.close()
    const db = new Database(options().path, { readonly: true })
    const plan = (sql: string) =>
      (db.prepare('EXPLAIN QUERY PLAN ' + sql).all() as Array<{ detail: string }>)
        .map((r) => r.detail)
        .join('; ')
    const noScan = (p: string) => {
      // A SCAN is only an ordered walk of an index that stops at its LIMIT (no table scan).
      expect(p).not.toMatch(/SCAN \w+(?! USING (COVERING )?INDEX)(;|$)/)
      expect(p).not.toMatch(/TEMP B-TREE/)
      return p
    }
    // Batches: the pending primary key in either order, one rowid lookup per message.
    for (const dir of ['ASC', 'DESC'])
      expect(
        noScan(
          plan(
            `SELECT seq, size, ts, expires_at FROM pending WHERE priority = 4 AND (expires_at IS NULL OR expires_at > 5) ORDER BY seq ${dir} LIMIT 10`,
          ),
        ),
      ).toMatch(/SEARCH pending USING PRIMARY KEY \(priority=\?\)/)
    expect(
      noScan(
        plan(
          'SELECT m.* FROM pending p CROSS JOIN messages m ON m.seq = p.seq WHERE p.priority = 4 AND (p.expires_at IS NULL OR p.expires_at > 5) ORDER BY p.seq LIMIT 10',
        ),
      ),
    ).toMatch(/SEARCH p USING PRIMARY KEY \(priority=\?\).*SEARCH m USING INTEGER PRIMARY KEY \(rowid=\?\)/)
    // The wire form of a run: a rowid range.
    expect(
      plan(
        'SELECT group_concat(topic) FROM (SELECT * FROM messages WHERE seq BETWEEN 1 AND 9 ORDER BY seq DESC)',
      ),
    ).toMatch(/SEARCH messages USING INTEGER PRIMARY KEY \(rowid>\? AND rowid<\?\)/)
    // Oldest pending ts (watermark): pending_ts.
    expect(
      noScan(plan('SELECT ts FROM pending WHERE (expires_at IS NULL OR expires_at > 5) ORDER BY ts LIMIT 1')),
    ).toMatch(/USING INDEX pending_ts/)
    // Sending: queue rows by key range for every priority, never a message row.
    expect(
      noScan(
        plan('DELETE FROM pending WHERE priority IN (9, 8, 7, 6, 5, 4, 3, 2, 1, 0) AND seq BETWEEN 1 AND 9'),
      ),
    ).toMatch(/SEARCH pending USING PRIMARY KEY \(priority=\? AND seq>\? AND seq<\?\)/)
    expect(
      plan(
        `DELETE FROM pending WHERE priority IN (9, 8, 7, 6, 5, 4, 3, 2, 1, 0) AND seq IN (SELECT value FROM json_each('[1,5]'))`,
      ),
    ).toMatch(/SEARCH pending USING PRIMARY KEY \(priority=\? AND seq=\?\)/)
    // Retention: oldest sent ranges (sent_at), their messages by rowid range.
    expect(
      noScan(
        plan(
          'SELECT m.size FROM sent s CROSS JOIN messages m ON m.seq BETWEEN s.first AND s.last WHERE s.sent_at < 5 ORDER BY s.sent_at, s.first, m.seq LIMIT 9',
        ),
      ),
    ).toMatch(
      /SEARCH s USING INDEX sent_at \(sent_at<\?\).*SEARCH m USING INTEGER PRIMARY KEY \(rowid>\? AND rowid<\?\)/,
    )
    expect(
      noScan(
        plan('SELECT seq, size, priority FROM messages WHERE expires_at <= 5 ORDER BY expires_at LIMIT 9'),
      ),
    ).toMatch(/USING INDEX messages_expiry/)
    // Expired pending (stats): messages_expiry, one pending probe each.
    expect(
      noScan(
        plan(
          'SELECT count(*) FROM messages m CROSS JOIN pending p ON p.priority = m.priority AND p.seq = m.seq WHERE m.expires_at <= 5',
        ),
      ),
    ).toMatch(/USING INDEX messages_expiry.*SEARCH p USING PRIMARY KEY \(priority=\? AND seq=\?\)/)
    db.close()
  })

  it('does not touch message rows when sending: only the queue tables change', async () => {
    const d = createSqliteStorage(options())
    const { seqs } = await d.append(
      Array.from({ length: 50 }, (_, i) => ({ topic: 't', payload: Buffer.from(`p${i}`), ts: i })),
    )
    const db = new Database(options().path, { readonly: true })
    const snapshot = () => db.prepare('SELECT * FROM messages ORDER BY seq').all()
    const before = snapshot()
    expect(await d.markSent(seqs.slice(0, 20), 100)).toBe(20)
    expect(await d.markSent([seqs[30], seqs[32], seqs[31], seqs[40]], 200)).toBe(4)
    expect(snapshot()).toEqual(before)
    expect(db.prepare('SELECT first, last, sent_at FROM sent ORDER BY first').raw().all()).toEqual([
      [seqs[0], seqs[19], 100],
      [seqs[30], seqs[32], 200],
      [seqs[40], seqs[40], 200],
    ])
    expect(db.prepare('SELECT count(*) FROM pending').pluck().get()).toBe(26)
    // Retention empties and trims the ranges; an emptied range is gone.
    expect((await d.purge({ sentBefore: 150, now: 0, limit: 15 })).sentDeleted).toBe(15)
    expect(db.prepare('SELECT first, last FROM sent ORDER BY first').raw().all()[0]).toEqual([
      seqs[15],
      seqs[19],
    ])
    expect((await d.purge({ sentBefore: 150, now: 0, limit: 100 })).sentDeleted).toBe(5)
    expect(db.prepare('SELECT count(*) FROM sent').pluck().get()).toBe(2)
    db.close()
    await d.close()
  })

  it('migrates a version 1 outbox in place: pending, sent (with sentAt), attempts, totals and seqs kept', async () => {
    const file = options().path
    const v1 = new Database(file)
    v1.exec('PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL')
    v1.exec(SCHEMA_V1)
    v1.exec(`INSERT INTO state VALUES ('epoch', 'e0c1b2a3-0000-4000-8000-000000000001'), ('createdAt', '1')`)
    const ins = v1.prepare(
      `INSERT INTO messages (topic, payload, content_type, ts, arrived_at, expires_at, priority, headers, status, sent_at, attempts, size)
       VALUES (?, ?, NULL, ?, 10, ?, ?, NULL, ?, ?, ?, 70)`,
    )
    // seq 1-3 sent at 100, 4 pending, 5-6 sent at 200, 7 sent at 100 (an island), 8 pending priority 9
    // with 2 attempts, 9 pending and expired.
    const rows: Array<[number, number | null, number, number]> = [
      [1, 100, 4, 0],
      [1, 100, 4, 0],
      [1, 100, 4, 0],
      [0, null, 4, 1],
      [1, 200, 4, 0],
      [1, 200, 4, 0],
      [1, 100, 4, 0],
      [0, null, 9, 2],
      [0, null, 4, 0],
    ]
    rows.forEach(([status, sentAt, priority, attempts], i) =>
      ins.run(
        'old',
        Buffer.from(`m${i + 1}`),
        1000 + i,
        i === 8 ? 50 : null,
        priority,
        status,
        sentAt,
        attempts,
      ),
    )
    v1.exec(
      `UPDATE totals SET pending = 3, pending_bytes = 210, sent = 6, sent_bytes = 420, appended_total = 9, sent_total = 6`,
    )
    v1.pragma('user_version = 1')
    v1.close()

    // A connection of an older rmq, open across the migration.
    const old = new Database(file)
    const oldAppend = old.prepare('UPDATE totals SET pending = pending + 1 WHERE id = 1')
    const d = createSqliteStorage(options())
    expect(d.epoch).toBe('e0c1b2a3-0000-4000-8000-000000000001')
    // Its next write fails loudly instead of appending a message nothing would queue.
    expect(() => oldAppend.run()).toThrow(/no such table: totals/)
    old.close()
    const db = new Database(file, { readonly: true })
    expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION)
    expect(db.prepare('SELECT first, last, sent_at FROM sent ORDER BY first').raw().all()).toEqual([
      [1, 3, 100],
      [5, 6, 200],
      [7, 7, 100],
    ])
    // The operator's view (schema 3) reads the migrated queue state: status and sent_at per message.
    expect(
      db.prepare('SELECT seq, status, sent_at, sent_at_iso FROM outbox ORDER BY seq').raw().all(),
    ).toEqual([
      [1, 'sent', 100, '1970-01-01T00:00:00.100Z'],
      [2, 'sent', 100, '1970-01-01T00:00:00.100Z'],
      [3, 'sent', 100, '1970-01-01T00:00:00.100Z'],
      [4, 'pending', null, null],
      [5, 'sent', 200, '1970-01-01T00:00:00.200Z'],
      [6, 'sent', 200, '1970-01-01T00:00:00.200Z'],
      [7, 'sent', 100, '1970-01-01T00:00:00.100Z'],
      [8, 'pending', null, null],
      [9, 'expired', null, null],
    ])
    const names = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index'").pluck().all()
    expect(names).not.toContain('messages_pending')
    expect(names).not.toContain('messages_sent')
    db.close()
    const batch = await d.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: 60 })
    expect(batch.map((m) => [m.seq, m.priority, m.attempts, m.payload.toString()])).toEqual([
      [8, 9, 2, 'm8'],
      [4, 4, 1, 'm4'],
    ])
    expect(await d.stats(60)).toMatchObject({ pending: 2, sentKept: 6, totalMessages: 9, sentTotal: 6 })
    // It keeps working: new seqs continue, sending and retention use the migrated ranges.
    const { seqs } = await d.append([{ topic: 'new', payload: Buffer.from('n'), ts: 5 }])
    expect(seqs).toEqual([10])
    expect(await d.markSent([4, 8, 10, 1], 300)).toBe(3)
    expect(await d.purge({ sentBefore: 150, now: 60, limit: 100 })).toMatchObject({
      sentDeleted: 4,
      expiredDeleted: 1,
    })
    expect(await d.stats(60)).toMatchObject({ pending: 0, sentKept: 5, totalMessages: 5 })
    await d.close()
    // A second open finds nothing to migrate.
    const again = createSqliteStorage(options())
    expect((await again.stats(60)).totalMessages).toBe(5)
    await again.close()
  })
})

/** The schema rmq created as version 1, for the migration test. */
const SCHEMA_V1 = `CREATE TABLE messages (
     seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL, content_type TEXT,
     ts INTEGER NOT NULL, arrived_at INTEGER NOT NULL, expires_at INTEGER, priority INTEGER NOT NULL,
     headers TEXT, status INTEGER NOT NULL DEFAULT 0, sent_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
     size INTEGER NOT NULL
   );
   CREATE INDEX messages_pending ON messages (priority, seq) WHERE status = 0;
   CREATE INDEX messages_pending_ts ON messages (ts) WHERE status = 0;
   CREATE INDEX messages_sent ON messages (sent_at) WHERE status = 1;
   CREATE INDEX messages_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
   CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
   CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE totals (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     pending INTEGER NOT NULL, pending_bytes INTEGER NOT NULL,
     sent INTEGER NOT NULL, sent_bytes INTEGER NOT NULL,
     appended_total INTEGER NOT NULL, sent_total INTEGER NOT NULL,
     expired_total INTEGER NOT NULL, dropped_total INTEGER NOT NULL
   );
   INSERT INTO totals VALUES (1, 0, 0, 0, 0, 0, 0, 0, 0);`
