/**
 * One open outbox file: the better-sqlite3 connection, its prepared
 * statements, write transactions (BEGIN IMMEDIATE) with SQLite failures
 * mapped to rmq errors, and the running totals. The driver's operations
 * (append.ts, read.ts, wire.ts, sent.ts, delete.ts, state.ts) take it as
 * their first argument.
 */
import fs from 'node:fs'
import { ConfigError } from '../../../shared/errors.js'
import { ensurePrivateFile } from '../../../shared/private-files.js'
import type { StorageOptions } from '../../../core/storage/driver.js'
import type { Fullness } from '../common.js'
import { Database, nativeAddon, type Statement } from './addon.js'
import { mapSqliteError } from './errors.js'

export interface Totals {
  pending: number
  pending_bytes: number
  sent: number
  sent_bytes: number
  appended_total: number
  sent_total: number
  expired_total: number
  dropped_total: number
}

export interface Deleted {
  sent: number
  sentBytes: number
  pending: number
  pendingBytes: number
}

export class SqliteConnection {
  readonly db: Database
  readonly now: () => number
  /** Set once the schema is in place (schema.ts migrate). */
  epoch = ''
  private readonly stmts = new Map<string, Statement>()
  private maintaining = false

  constructor(readonly opts: StorageOptions) {
    this.now = opts.now ?? Date.now
    if (opts.readOnly && !fs.existsSync(opts.path))
      throw new ConfigError(`no outbox at ${opts.path}`, {
        suggestion: 'check storage.path (RMQ_STORAGE_PATH); the outbox is created by the first `rmq publish`',
      })
    // Every payload is in this file: 0600 from the start, and SQLite gives -wal and -shm its mode.
    if (!opts.readOnly && opts.path !== ':memory:' && opts.path !== '') ensurePrivateFile(opts.path)
    try {
      this.db = new Database(opts.path, {
        timeout: 5000,
        // Read-only: never create the file, never write (WAL readers do not block writers).
        ...(opts.readOnly ? { readonly: true, fileMustExist: true } : {}),
        // better-sqlite3 takes the addon object too; its types list only a path.
        nativeBinding: nativeAddon() as string | undefined,
      })
    } catch (err) {
      throw new ConfigError(`cannot open the outbox at ${opts.path}: ${(err as Error).message}`, {
        suggestion: 'check storage.path: its directory must exist and be writable',
        cause: err,
      })
    }
  }

  stmt(sql: string): Statement {
    let s = this.stmts.get(sql)
    if (!s) {
      s = this.db.prepare(sql)
      this.stmts.set(sql, s)
    }
    return s
  }

  totals(): Totals {
    return this.stmt('SELECT * FROM queue_totals WHERE id = 1').get() as Totals
  }

  fullness(t: Totals = this.totals()): Fullness {
    return {
      totalMessages: t.pending + t.sent,
      totalBytes: t.pending_bytes + t.sent_bytes,
      pending: t.pending,
    }
  }

  /** Map SQLite failures to errors that tell the user what happened and what to do. */
  guard<T>(fn: () => T): T {
    try {
      return fn()
    } catch (err) {
      mapSqliteError(err, this.opts.path, () => this.fullness())
    }
  }

  /** BEGIN IMMEDIATE ... COMMIT, rolled back on any error (cheaper to set up than db.transaction()). */
  transaction<T>(fn: () => T): T {
    this.db.exec('BEGIN IMMEDIATE')
    try {
      const r = fn()
      this.db.exec('COMMIT')
      return r
    } catch (err) {
      if (this.db.inTransaction)
        try {
          this.db.exec('ROLLBACK')
        } catch {
          // SQLite already rolled back (e.g. after SQLITE_FULL); the error below says what happened.
        }
      throw err
    }
  }

  write<T>(fn: () => T): T {
    return this.guard(() => this.transaction(fn))
  }

  /** Take deleted rows off the running totals; deleted pending rows also count in `counter`. */
  adjustTotals(r: Deleted, counter: 'expired_total' | 'dropped_total' | null): void {
    if (r.sent + r.pending === 0) return
    this.stmt(
      `UPDATE queue_totals SET pending = pending - ?, pending_bytes = pending_bytes - ?, sent = sent - ?,
         sent_bytes = sent_bytes - ?${counter ? `, ${counter} = ${counter} + ?` : ''} WHERE id = 1`,
    ).run(r.pending, r.pendingBytes, r.sent, r.sentBytes, ...(counter ? [r.pending] : []))
  }

  /** Delete one message and, when it is pending, its queue row; true when it was pending. */
  deleteMessage(seq: number, priority: number): boolean {
    this.stmt('DELETE FROM messages WHERE seq = ?').run(seq)
    return this.stmt('DELETE FROM pending WHERE priority = ? AND seq = ?').run(priority, seq).changes > 0
  }

  /**
   * A connection that deletes in bulk (cleanup) checkpoints the WAL every 256
   * pages itself (default 1000), so a publisher's commit seldom finds a long
   * WAL to copy.
   */
  maintenance(): void {
    if (this.maintaining) return
    this.maintaining = true
    this.db.exec('PRAGMA wal_autocheckpoint = 256')
  }

  fileBytes(): number | null {
    let total = 0
    try {
      total += fs.statSync(this.opts.path).size
    } catch {
      return null
    }
    try {
      total += fs.statSync(this.opts.path + '-wal').size
    } catch {
      // no WAL file right now
    }
    return total
  }
}
