/**
 * Opening the PostgreSQL broker store: connect (with a clear error naming the
 * target without credentials), migrate under an advisory lock so several
 * brokers starting at once migrate once, then build the store.
 */
import type pgTypes from 'pg'
import { BrokerUnavailableError, ConfigError } from '../../shared/errors.js'
import { PostgresBrokerStore, isUnavailable } from './postgres.js'
import { describeTargets, parsePostgresUrl, type PgHost, type PgTarget } from './postgres-hosts.js'
import { PrimaryPool, describeFailures, findPrimary } from './postgres-primary.js'
import { MIGRATIONS, MIGRATION_LOCK_KEY } from './postgres-schema.js'
import type { BrokerStoreOptions } from './types.js'

/** The PG* environment as the one host (an empty URL: the driver reads PGHOST, PGPORT...). */
function environmentTarget(): PgTarget {
  const env = process.env
  const label = `${env.PGHOST || 'localhost'}:${env.PGPORT || 5432}`
  return {
    hosts: [{ host: env.PGHOST || 'localhost', port: Number(env.PGPORT) || 5432, label, url: '' }],
    database: env.PGDATABASE || env.PGUSER || env.USER || '',
    targetSessionAttrs: 'any',
    failover: false,
    params: [],
  }
}

function accessProblem(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code
  return typeof code === 'string' && /^(28|3D)/.test(code)
}

const FIX_ACCESS =
  'check broker.postgres.url (RMQ_BROKER_POSTGRES_URL) or PGUSER/PGPASSWORD/PGDATABASE: ' +
  'the database must exist and the user may create tables in it'

/** The first acceptable host of a multi-host URL, or the error a broker start reports. */
async function firstPrimary(
  pg: typeof pgTypes,
  target: PgTarget,
  base: pgTypes.ClientConfig,
): Promise<PgHost> {
  const found = await findPrimary(pg, target, base)
  if ('host' in found) return found.host
  const where = describeTargets(target)
  const why = describeFailures(found.failures)
  const denied = found.failures.find((f) => accessProblem(f.error))
  if (denied)
    throw new ConfigError(`cannot use PostgreSQL at ${where}: ${why}`, {
      cause: denied.error,
      suggestion: FIX_ACCESS,
    })
  throw new BrokerUnavailableError(
    `no PostgreSQL ${target.targetSessionAttrs === 'any' ? 'server' : 'primary'} at ${where} (target_session_attrs=${target.targetSessionAttrs}): ${why}`,
    {
      suggestion:
        'start PostgreSQL, promote a standby, or fix the hosts in broker.postgres.url (RMQ_BROKER_POSTGRES_URL), then retry',
    },
  )
}

async function migrate(pool: PrimaryPool): Promise<void> {
  const c = await pool.connect()
  let broken: Error | undefined
  try {
    // READ COMMITTED whatever the server's default: a migration's statements must each see what
    // committed while it waited for its locks (migration 10 moves batches still in flight).
    await c.query('BEGIN ISOLATION LEVEL READ COMMITTED')
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
  // Several hosts: one node-postgres connection string each (postgres-hosts.ts), malformed -> ConfigError.
  const target = options.url ? parsePostgresUrl(options.url) : environmentTarget()
  const clientConfig: pgTypes.ClientConfig = {
    application_name: 'rmq-broker',
    keepAlive: true,
    connectionTimeoutMillis: 10_000,
    // Bound how long a stuck lock holder (a hung host) can block the other brokers.
    lock_timeout: 15_000,
    idle_in_transaction_session_timeout: 30_000,
    types,
  }
  const first = target.failover ? await firstPrimary(pg, target, clientConfig) : target.hosts[0]
  const pool = new PrimaryPool(
    pg,
    target,
    clientConfig,
    { max: 10, idleTimeoutMillis: 30_000 },
    first,
    options.log,
  )
  const where = `${first.label}/${target.database ?? ''}`
  if (target.failover)
    options.log?.('info', `PostgreSQL primary is ${first.label} (hosts ${describeTargets(target)})`, {
      primary: first.label,
    })
  try {
    await migrate(pool)
  } catch (err) {
    await pool.end().catch(() => {})
    if (err instanceof ConfigError) throw err
    const e = err as { code?: string; message?: string }
    if (accessProblem(err))
      throw new ConfigError(`cannot use PostgreSQL at ${where}: ${e.message}`, {
        cause: err,
        suggestion: FIX_ACCESS,
      })
    if (isUnavailable(err))
      throw new BrokerUnavailableError(`cannot connect to PostgreSQL at ${where}: ${e.message ?? e.code}`, {
        cause: err,
        suggestion:
          'start PostgreSQL or fix broker.postgres.url (RMQ_BROKER_POSTGRES_URL) / PGHOST and PGPORT, then retry',
      })
    throw err
  }
  return new PostgresBrokerStore(pg, pool, options.log)
}

export default openPostgresBrokerStore
