/**
 * The connection pool of the PostgreSQL store, pointed at the current
 * primary when `broker.postgres.url` lists several hosts (postgres-hosts.ts).
 *
 * - Finding the primary: hosts are tried in the order written; each is
 *   connected to once and asked `pg_is_in_recovery()` (and, for read-write,
 *   `transaction_read_only`); a standby is skipped. `any` takes the first
 *   host that answers.
 * - Re-finding it: the store reports every failed query here (`failed`).
 *   A lost connection, a refused one, an administrator shutdown (57P01) or a
 *   write refused as read-only (25006: the host was demoted, or we reached a
 *   standby) starts one search at a time, in rounds with backoff, bounded in
 *   time. Meanwhile queries keep going to the old pool and fail, so requests
 *   answer 503 + Retry-After at once instead of hanging; once a primary is
 *   found the pool is rebuilt on it and the old one closed. A search that
 *   finds nobody gives up; the next failure starts another.
 * - A connection that hangs (a partition without a reset) is closed by the
 *   watchdog (postgres-watchdog.ts), so its request answers 503.
 * - One host and no target_session_attrs: the pool is built on the URL as
 *   written and never searched (the driver reconnects to that one host).
 */
import type pgTypes from 'pg'
import type { PgHost, PgTarget } from './postgres-hosts.js'
import { sleep } from '../../shared/clock.js'
import { ConnectionWatchdog } from './postgres-watchdog.js'

type Pg = typeof pgTypes
type Pool = pgTypes.Pool

/** What the store and its readers use of a pool. */
export type PoolHandle = Pick<Pool, 'connect' | 'query'>

export type StoreLog = (level: 'info' | 'warn', message: string, fields?: Record<string, unknown>) => void

export interface HostFailure {
  label: string
  reason: string
  error?: unknown
}

const SWITCH_SQLSTATE = /^(25006|57P01|57P02|57P03|08)/
const SWITCH_ERRNO =
  /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH)$/

/** An error that says this host may no longer be the primary (or is gone). */
export function meansPrimaryLost(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown }
  if (typeof e?.code === 'string' && (SWITCH_SQLSTATE.test(e.code) || SWITCH_ERRNO.test(e.code))) return true
  const msg = typeof e?.message === 'string' ? e.message : ''
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
    msg,
  )
}

/** Backoff between search rounds, and how long one search may last. */
const ROUND_DELAYS_MS = [0, 250, 500, 1000, 2000]
const SEARCH_FOR_MS = 30_000
/** A host being probed must answer quickly: a dead one is skipped. */
const PROBE_TIMEOUT_MS = 3_000

function reasonOf(err: unknown): string {
  const e = err as { code?: string; message?: string }
  return e?.message || e?.code || String(err)
}

/** One pass over the hosts, in order: the first acceptable one, or why each was not. */
export async function findPrimary(
  pg: Pg,
  target: PgTarget,
  base: pgTypes.ClientConfig,
): Promise<{ host: PgHost } | { failures: HostFailure[] }> {
  const failures: HostFailure[] = []
  for (const host of target.hosts) {
    const client = new pg.Client({
      ...base,
      connectionString: host.url,
      connectionTimeoutMillis: Math.min(base.connectionTimeoutMillis ?? PROBE_TIMEOUT_MS, PROBE_TIMEOUT_MS),
    })
    client.on('error', () => {})
    try {
      await client.connect()
      if (target.targetSessionAttrs === 'any') return { host }
      const r = (
        await client.query<{ recovery: boolean; ro: string }>(
          `SELECT pg_is_in_recovery() AS recovery, current_setting('transaction_read_only') AS ro`,
        )
      ).rows[0]
      if (r.recovery) failures.push({ label: host.label, reason: 'a standby (in recovery)' })
      else if (target.targetSessionAttrs === 'read-write' && r.ro === 'on')
        failures.push({ label: host.label, reason: 'read-only (default_transaction_read_only=on)' })
      else return { host }
    } catch (error) {
      failures.push({ label: host.label, reason: reasonOf(error), error })
    } finally {
      await client.end().catch(() => {})
    }
  }
  return { failures }
}

export function describeFailures(failures: HostFailure[]): string {
  return failures.map((f) => `${f.label}: ${f.reason}`).join('; ')
}

export class PrimaryPool implements PoolHandle {
  private pool: Pool
  private current: PgHost
  private searching: Promise<void> | undefined
  private closed = false

  constructor(
    private readonly pg: Pg,
    private readonly target: PgTarget,
    /** Settings of every connection (timeouts, type parsers), without the host. */
    private readonly base: pgTypes.ClientConfig,
    private readonly poolOptions: pgTypes.PoolConfig,
    first: PgHost,
    private readonly log: StoreLog = () => {},
  ) {
    this.current = first
    this.watchdog = new ConnectionWatchdog({
      pg,
      clientConfig: () => this.clientConfig(),
      label: () => this.current.label,
    })
    this.pool = this.makePool(first)
  }

  /** Closes checked-out connections that hang on a server gone silent (postgres-watchdog.ts). */
  readonly watchdog: ConnectionWatchdog

  private makePool(host: PgHost): Pool {
    const pool = new this.pg.Pool({
      ...this.base,
      ...this.poolOptions,
      connectionString: host.url || undefined,
    })
    // An idle client losing its connection must not crash the broker; the next query reconnects.
    pool.on('error', () => {})
    // Checked on this pool's own host: after a failover its clients' pids mean nothing on the new one.
    this.watchdog.track(pool, () => ({ ...this.base, connectionString: host.url || undefined }))
    return pool
  }

  /** The host in use, `host:port`. */
  get primary(): string {
    return this.current.label
  }

  /** Settings for a dedicated connection (LISTEN) to the host in use. */
  clientConfig(): pgTypes.ClientConfig {
    return { ...this.base, connectionString: this.current.url || undefined }
  }

  readonly connect = (() => this.pool.connect()) as Pool['connect']

  readonly query = ((...args: Parameters<Pool['query']>) =>
    (this.pool.query as (...a: unknown[]) => unknown)(...args)) as Pool['query']

  /** A query failed: search the hosts again if the error says the primary may be lost. */
  failed(err: unknown): void {
    if (this.closed || !this.target.failover || this.searching || !meansPrimaryLost(err)) return
    this.log(
      'warn',
      `PostgreSQL primary ${this.current.label} failed (${reasonOf(err)}): looking for the primary`,
      {
        primary: this.current.label,
      },
    )
    this.searching = this.search().finally(() => (this.searching = undefined))
  }

  /** A search for the primary is running: the pool in use may be on a host that is gone. */
  get switching(): boolean {
    return this.searching !== undefined
  }

  /** Settled when no search is running (tests, close). */
  async settled(): Promise<void> {
    await this.searching
  }

  private async search(): Promise<void> {
    const until = Date.now() + SEARCH_FOR_MS
    let failures: HostFailure[] = []
    for (let round = 0; !this.closed && Date.now() < until; round++) {
      await sleep(ROUND_DELAYS_MS[Math.min(round, ROUND_DELAYS_MS.length - 1)])
      if (this.closed) return
      const found = await findPrimary(this.pg, this.target, this.base)
      if ('host' in found) {
        if (this.closed) return
        if (found.host.label === this.current.label) {
          this.log('info', `PostgreSQL primary is still ${found.host.label}`, { primary: found.host.label })
          return
        }
        const old = this.pool
        const from = this.current.label
        this.pool = this.makePool(found.host)
        this.current = found.host
        // Clients still checked out finish (their queries fail or complete) before the old pool closes.
        old.end().catch(() => {})
        this.log('warn', `PostgreSQL primary is now ${found.host.label} (was ${from})`, {
          primary: found.host.label,
          previous: from,
        })
        return
      }
      failures = found.failures
    }
    if (!this.closed)
      this.log(
        'warn',
        `no PostgreSQL primary found for now (${describeFailures(failures)}): the next failure searches again`,
        {
          primary: this.current.label,
        },
      )
  }

  async end(): Promise<void> {
    this.closed = true
    this.watchdog.stop()
    await this.pool.end()
  }
}
