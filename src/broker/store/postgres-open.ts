/**
 * Opening the PostgreSQL broker store: connect (with a clear error naming the
 * target without credentials), migrate under an advisory lock so several
 * brokers starting at once migrate once, then build the store.
 */
import type pgTypes from 'pg'
import { BrokerUnavailableError, ConfigError } from '../../shared/errors.js'
import { PostgresBrokerStore, isUnavailable } from './postgres.js'
import { MIGRATIONS, MIGRATION_LOCK_KEY } from './postgres-schema.js'
import type { BrokerStoreOptions } from './types.js'

type Pool = pgTypes.Pool

/** host:port/database of the connection, without credentials (for messages). */
function describeTarget(url: string | undefined): string {
  if (url) {
    try {
      const u = new URL(url)
      return `${u.hostname || 'localhost'}${u.port ? `:${u.port}` : ''}${u.pathname}`
    } catch {
      return 'the configured URL'
    }
  }
  const env = process.env
  return `${env.PGHOST || 'localhost'}:${env.PGPORT || 5432}/${env.PGDATABASE || env.PGUSER || env.USER || ''} (PG* environment)`
}

async function migrate(pool: Pool): Promise<void> {
  const c = await pool.connect()
  let broken: Error | undefined
  try {
    await c.query('BEGIN')
    await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY])
    await c.query(`CREATE TABLE IF NOT EXISTS rmq_schema_version (
      version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`)
    const current =
      (await c.query<{ v: number | null }>('SELECT MAX(version) AS v FROM rmq_schema_version')).rows[0].v ?? 0
    if (current > MIGRATIONS.length)
      throw new ConfigError(
        `the PostgreSQL broker schema is at version ${current}, newer than this rmq knows (${MIGRATIONS.length})`,
        { suggestion: 'upgrade rmq on this host to the version the other brokers run' },
      )
    for (let v = current + 1; v <= MIGRATIONS.length; v++) {
      await c.query(MIGRATIONS[v - 1])
      await c.query('INSERT INTO rmq_schema_version (version) VALUES ($1)', [v])
    }
    await c.query('COMMIT')
  } catch (err) {
    await c.query('ROLLBACK').catch((e: Error) => (broken = e))
    throw err
  } finally {
    c.release(broken)
  }
}

export async function openPostgresBrokerStore(options: BrokerStoreOptions): Promise<PostgresBrokerStore> {
  const { default: pg } = await import('pg')
  const INT8 = 20
  const NUMERIC = 1700
  const types = {
    // bigint columns hold epoch ms, positions and counters: all below 2^53.
    getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
      oid === INT8 || oid === NUMERIC
        ? (v: string) => Number(v)
        : pg.types.getTypeParser(oid, format ?? 'text')) as pgTypes.CustomTypesConfig['getTypeParser'],
  }
  const clientConfig: pgTypes.ClientConfig = {
    // Empty URL: the driver takes PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE... from the environment.
    connectionString: options.url || undefined,
    application_name: 'rmq-broker',
    keepAlive: true,
    connectionTimeoutMillis: 10_000,
    // Bound how long a stuck lock holder (a hung host) can block the other brokers.
    lock_timeout: 15_000,
    idle_in_transaction_session_timeout: 30_000,
    types,
  }
  const pool = new pg.Pool({ ...clientConfig, max: 10, idleTimeoutMillis: 30_000 })
  // An idle client losing its connection must not crash the broker; the next query reconnects.
  pool.on('error', () => {})
  const target = describeTarget(options.url)
  try {
    await migrate(pool)
  } catch (err) {
    await pool.end().catch(() => {})
    if (err instanceof ConfigError) throw err
    const e = err as { code?: string; message?: string }
    if (typeof e.code === 'string' && /^(28|3D)/.test(e.code))
      throw new ConfigError(`cannot use PostgreSQL at ${target}: ${e.message}`, {
        cause: err,
        suggestion:
          'check broker.postgres.url (RMQ_BROKER_POSTGRES_URL) or PGUSER/PGPASSWORD/PGDATABASE: ' +
          'the database must exist and the user may create tables in it',
      })
    if (isUnavailable(err))
      throw new BrokerUnavailableError(`cannot connect to PostgreSQL at ${target}: ${e.message ?? e.code}`, {
        cause: err,
        suggestion:
          'start PostgreSQL or fix broker.postgres.url (RMQ_BROKER_POSTGRES_URL) / PGHOST and PGPORT, then retry',
      })
    throw err
  }
  return new PostgresBrokerStore(pg, pool, clientConfig)
}

export default openPostgresBrokerStore
