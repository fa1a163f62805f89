/**
 * The SQLite store's tokens, consumer groups and alerts: the SQL written once
 * for both stores (store-admin.ts) on this store's QueryAdapter, where each
 * statement is prepared once per SQL text and runs synchronously on the
 * store's connection, answered with an already settled promise.
 */
import type BetterSqlite3 from 'better-sqlite3'
import type { AdminTables, QueryAdapter } from './query-adapter.js'
import { StoreAdmin } from './store-admin.js'

/** Runs `fn` now unless the store is closed; its result, or its mapped error, as a settled promise. */
type Guard = <T>(fn: () => T) => Promise<T>

export const SQLITE_ADMIN_TABLES: AdminTables = {
  tokens: 'tokens',
  groups: 'consumer_groups',
  alerts: 'alerts',
}

export class SqliteQueries implements QueryAdapter {
  private readonly statements = new Map<string, BetterSqlite3.Statement<unknown[]>>()

  constructor(
    private readonly db: BetterSqlite3.Database,
    private readonly guard: Guard,
  ) {}

  private statement(sql: string): BetterSqlite3.Statement<unknown[]> {
    let st = this.statements.get(sql)
    if (!st) {
      st = this.db.prepare<unknown[]>(sql)
      this.statements.set(sql, st)
    }
    return st
  }

  all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    return this.guard(() => this.statement(sql).all(...params) as T[])
  }

  get<T>(sql: string, params: readonly unknown[] = []): Promise<T | undefined> {
    return this.guard(() => this.statement(sql).get(...params) as T | undefined)
  }

  run(sql: string, params: readonly unknown[] = []): Promise<number> {
    return this.guard(() => this.statement(sql).run(...params).changes)
  }
}

export class SqliteAdmin extends StoreAdmin {
  constructor(db: BetterSqlite3.Database, guard: Guard) {
    super(new SqliteQueries(db, guard), SQLITE_ADMIN_TABLES)
  }
}
