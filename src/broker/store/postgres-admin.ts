/**
 * The PostgreSQL store's tokens, consumer groups and alerts: the SQL written
 * once for both stores (store-admin.ts) on this store's QueryAdapter, where
 * each statement is a small transaction of its own on the pool, run through
 * the store's `wrap` (closed store, unavailable database).
 */
import type pgTypes from 'pg'
import { numberPlaceholders, type AdminTables, type QueryAdapter } from './query-adapter.js'
import { StoreAdmin } from './store-admin.js'

type Wrap = <T>(fn: () => Promise<T>) => Promise<T>

export const POSTGRES_ADMIN_TABLES: AdminTables = {
  tokens: 'rmq_tokens',
  groups: 'rmq_groups',
  alerts: 'rmq_alerts',
}

/** Statements on the pool, `?` numbered `$1..$n` once per SQL text. */
export class PostgresQueries implements QueryAdapter {
  private readonly texts = new Map<string, string>()

  constructor(
    private readonly pool: Pick<pgTypes.Pool, 'query'>,
    private readonly wrap: Wrap,
  ) {}

  private query<T extends pgTypes.QueryResultRow>(sql: string, params: readonly unknown[]) {
    let text = this.texts.get(sql)
    if (text === undefined) {
      text = numberPlaceholders(sql)
      this.texts.set(sql, text)
    }
    return this.wrap(() => this.pool.query<T>(text, params as unknown[]))
  }

  async all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    return (await this.query<T & pgTypes.QueryResultRow>(sql, params)).rows
  }

  async get<T>(sql: string, params: readonly unknown[] = []): Promise<T | undefined> {
    return (await this.query<T & pgTypes.QueryResultRow>(sql, params)).rows[0]
  }

  async run(sql: string, params: readonly unknown[] = []): Promise<number> {
    return (await this.query(sql, params)).rowCount ?? 0
  }
}

export class PostgresAdmin extends StoreAdmin {
  constructor(pool: Pick<pgTypes.Pool, 'query'>, wrap: Wrap) {
    super(new PostgresQueries(pool, wrap), POSTGRES_ADMIN_TABLES)
  }
}
