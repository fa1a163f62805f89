/**
 * The default outbox: one SQLite file (better-sqlite3), WAL, synchronous=FULL
 * unless storage.durability=normal, every write in a BEGIN IMMEDIATE
 * transaction. Running totals live in the `queue_totals` row and are updated in the
 * same transactions, so stats() and limit checks never scan the table.
 * Schema and design notes: docs/storage.md. The operations live by concern
 * in this folder; this class puts them together as a StorageDriver.
 */
import { failpointValue } from '../../../shared/failpoints.js'
import type {
  AppendResult,
  BatchQuery,
  BrowseQuery,
  BrowsedMessage,
  NewMessage,
  PendingRun,
  PurgeQuery,
  PurgeResult,
  RunQuery,
  SentExtras,
  StorageCapabilities,
  StorageDriver,
  StorageOptions,
  StorageStats,
  StoredMessage,
  WireFrames,
  WireJson,
} from '../../../core/storage/driver.js'
import type { Database } from './addon.js'
import { append } from './append.js'
import { browse } from './browse.js'
import { SqliteConnection } from './connection.js'
import { compact, enforceLimits, purge } from './delete.js'
import { nextBatch, oldestPendingTs, pendingRuns, stats } from './read.js'
import { migrate, readEpoch } from './migrate.js'
import { commitSent, recordAttempt } from './sent.js'
import { acquireLease, addCounters, getCounters, getState, releaseLease, setState } from './state.js'
import { wireFrames, wireJson } from './wire.js'

import { SCHEMA_VERSION } from './schema.js'

export { SCHEMA_VERSION }

export class SqliteStorage implements StorageDriver {
  readonly name = 'sqlite'
  readonly capabilities: StorageCapabilities = { durable: true, multiProcess: true }
  epoch: string
  private readonly c: SqliteConnection
  private readonly db: Database

  constructor(opts: StorageOptions) {
    this.c = new SqliteConnection(opts)
    this.db = this.c.db
    try {
      this.epoch = this.c.epoch = this.c.guard(() => (opts.readOnly ? readEpoch(this.c) : migrate(this.c)))
      // `RMQ_FAILPOINTS=sqlite.maxPageCount=64` caps the file (tests: disk full without a full disk).
      const maxPages = failpointValue('sqlite.maxPageCount')
      if (!opts.readOnly)
        this.db.exec(
          `PRAGMA synchronous = ${opts.durability === 'normal' ? 'NORMAL' : 'FULL'}` +
            (maxPages ? `; PRAGMA max_page_count = ${Number(maxPages)}` : ''),
        )
    } catch (err) {
      this.db.close()
      throw err
    }
  }

  append(messages: NewMessage[]): Promise<AppendResult> {
    return append(this.c, messages)
  }

  nextBatch(q: BatchQuery): Promise<StoredMessage[]> {
    return nextBatch(this.c, q)
  }

  pendingRuns(q: RunQuery): Promise<PendingRun[]> {
    return pendingRuns(this.c, q)
  }

  wireJson(seqs: number[]): Promise<WireJson> {
    return wireJson(this.c, seqs)
  }

  wireFrames(seqs: number[]): Promise<WireFrames> {
    return wireFrames(this.c, seqs)
  }

  oldestPendingTs(now: number, exclude: Array<[number, number]>): Promise<number | null> {
    return oldestPendingTs(this.c, now, exclude)
  }

  /** commitSent without extras: the same set-based marking (sent.ts). */
  markSent(seqs: number[], sentAt: number): Promise<number> {
    return commitSent(this.c, seqs, sentAt, {})
  }

  commitSent(seqs: number[], sentAt: number, extras: SentExtras): Promise<number> {
    return commitSent(this.c, seqs, sentAt, extras)
  }

  recordAttempt(seqs: number[]): Promise<void> {
    return recordAttempt(this.c, seqs)
  }

  purge(q: PurgeQuery): Promise<PurgeResult> {
    return purge(this.c, q)
  }

  enforceLimits(opts?: {
    limit?: number
  }): Promise<{ dropped: number; deleted: number; bytesFreed: number }> {
    return enforceLimits(this.c, opts)
  }

  compact(opts?: {
    maxPages?: number
  }): Promise<{ fileBytesBefore: number | null; fileBytesAfter: number | null; freePages: number }> {
    return compact(this.c, opts)
  }

  stats(now: number): Promise<StorageStats> {
    return stats(this.c, now)
  }

  browse(q: BrowseQuery): Promise<BrowsedMessage[]> {
    return browse(this.c, q)
  }

  async checkIntegrity(
    full: boolean,
  ): Promise<{ problems: string[]; schemaVersion: number; currentSchemaVersion: number }> {
    return this.c.guard(() => {
      const rows = this.db
        .prepare(full ? 'PRAGMA integrity_check' : 'PRAGMA quick_check')
        .pluck()
        .all() as string[]
      const version = this.db.prepare('PRAGMA user_version').pluck().get() as number
      return {
        problems: rows.filter((r) => r !== 'ok'),
        schemaVersion: version,
        currentSchemaVersion: SCHEMA_VERSION,
      }
    })
  }

  async renewEpoch(): Promise<string> {
    const epoch = (await import('node:crypto')).randomUUID()
    this.c.write(() => this.c.stmt("UPDATE state SET value = ? WHERE key = 'epoch'").run(epoch))
    this.epoch = this.c.epoch = epoch
    return epoch
  }

  getState(key: string): Promise<string | undefined> {
    return getState(this.c, key)
  }

  setState(key: string, value: string | undefined): Promise<void> {
    return setState(this.c, key, value)
  }

  addCounters(deltas: Record<string, number>): Promise<void> {
    return addCounters(this.c, deltas)
  }

  getCounters(): Promise<Record<string, number>> {
    return getCounters(this.c)
  }

  acquireLease(name: string, owner: string, ttlMs: number, now: number): Promise<boolean> {
    return acquireLease(this.c, name, owner, ttlMs, now)
  }

  releaseLease(name: string, owner: string): Promise<void> {
    return releaseLease(this.c, name, owner)
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close()
  }
}

export function createSqliteStorage(options: StorageOptions): StorageDriver {
  return new SqliteStorage(options)
}

export default createSqliteStorage
