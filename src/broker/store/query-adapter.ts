/**
 * The small query interface the token, consumer-group and alert SQL is
 * written against once for both stores (store-admin.ts). Statements use `?`
 * placeholders; the PostgreSQL adapter numbers them (`$1..$n`). SQLite
 * (better-sqlite3) answers synchronously and its adapter resolves at once.
 * The hot paths (ingest, release, read) do not go through here and stay
 * store-specific.
 */
export interface QueryAdapter {
  /** Every row the statement returns. */
  all<T>(sql: string, params?: readonly unknown[]): Promise<T[]>
  /** The first row, or undefined when there is none. */
  get<T>(sql: string, params?: readonly unknown[]): Promise<T | undefined>
  /** Run a statement that returns no rows; resolves with the number of rows it changed. */
  run(sql: string, params?: readonly unknown[]): Promise<number>
}

/** The tables the shared SQL touches, by their name in each store. */
export interface AdminTables {
  tokens: string
  groups: string
  alerts: string
}

/**
 * `?` placeholders numbered `$1..$n` for PostgreSQL. The shared SQL never has
 * a `?` inside a string literal or an identifier, so every `?` is a placeholder.
 */
export function numberPlaceholders(sql: string): string {
  let n = 0
  return sql.replace(/\?/g, () => `$${++n}`)
}
