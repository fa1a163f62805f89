/**
 * Hung connections of the PostgreSQL store's pool, found and closed.
 *
 * A network partition that drops packets without a reset (a host that is
 * gone, a firewall or NAT that forgot the flow) leaves an established
 * connection waiting for an answer that never comes: TCP gives up only after
 * its retransmissions (about 15 minutes on Linux), and keepalives do not
 * probe a connection with a query in flight. Measured before this watchdog:
 * an ingest sent into such a partition answered after 200 s, and only
 * because the test ended the server. Meanwhile the broker cannot shut down
 * (it waits for its ingests) and the hung release passes block every batch.
 *
 * So every client checked out of the pool is timed. One that has been out
 * longer than `hungAfterMs` is checked on, from a fresh connection with a
 * short connect timeout:
 * - the server cannot be reached: every such client is closed (ETIMEDOUT),
 *   so its query fails now, its request answers 503 and the store looks for
 *   the primary (postgres-primary.ts);
 * - the server answers and the client's backend is gone from
 *   pg_stat_activity (terminated, or ended by a timeout, and the news was
 *   lost): that client is closed (ECONNRESET, a pass on it is sent again);
 * - the server answers and the backend is there: nothing is done. A long
 *   statement that is really running (a migration, a large release) is
 *   never cut short by this.
 * A server that answers the check with an error of its own (too many
 *   connections, shutting down) is reachable: nothing is closed on it.
 */
import type pgTypes from 'pg'

type Pg = typeof pgTypes

/** A client out of the pool this long is checked on. Above lock_timeout (15 s): a lock wait is not a hang. */
export const HUNG_AFTER_MS = 20_000
/** How often checked-out clients are looked at. */
export const WATCH_EVERY_MS = 5_000
/** The check's own connect and query must answer within this. */
const CHECK_TIMEOUT_MS = 5_000

const SQLSTATE = /^[0-9A-Z]{5}$/

interface PgClientInternals {
  processID?: number
  connection?: { stream?: { destroy(err?: Error): void } }
}

export interface WatchdogDeps {
  pg: Pg
  /** Settings for the check's connection, to the host in use. */
  clientConfig(): pgTypes.ClientConfig
  /** Host in use, for messages. */
  label(): string
  hungAfterMs?: number
  now?: () => number
}

export class ConnectionWatchdog {
  /** Clients checked out now, and since when. */
  private readonly out = new Map<pgTypes.PoolClient, number>()
  private checking = false
  private timer: NodeJS.Timeout | undefined
  /** Clients closed as hung so far (tests, logs). */
  closed = 0

  constructor(private readonly deps: WatchdogDeps) {}

  /** Time the clients of `pool` while they are checked out. */
  track(pool: pgTypes.Pool): void {
    pool.on('acquire', (c) => this.out.set(c, this.now()))
    pool.on('release', (_err, c) => this.out.delete(c))
    pool.on('remove', (c) => this.out.delete(c))
    if (!this.timer) {
      this.timer = setInterval(() => void this.check(), WATCH_EVERY_MS)
      this.timer.unref()
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now()
  }

  /** Check the clients out longer than the bound; resolves with how many were closed. */
  async check(): Promise<number> {
    if (this.checking) return 0
    const now = this.now()
    const bound = this.deps.hungAfterMs ?? HUNG_AFTER_MS
    const old = [...this.out].filter(([, since]) => now - since >= bound)
    if (old.length === 0) return 0
    this.checking = true
    try {
      const pids = old.map(([c]) => (c as unknown as PgClientInternals).processID ?? 0)
      const seen = await this.backends(pids)
      if (seen === 'reachable') return 0
      let n = 0
      for (const [c, since] of old) {
        if (this.out.get(c) !== since) continue // answered (or out again) meanwhile
        const pid = (c as unknown as PgClientInternals).processID ?? 0
        if (seen !== 'unreachable' && seen.has(pid)) continue
        const secs = Math.round((now - since) / 1000)
        const why =
          seen === 'unreachable'
            ? `the server does not answer a new connection within ${CHECK_TIMEOUT_MS / 1000} s`
            : `its backend (pid ${pid}) is gone from pg_stat_activity`
        const err = Object.assign(
          new Error(
            `connection to PostgreSQL at ${this.deps.label()} had no answer for ${secs} s and was closed: ${why}`,
          ),
          { code: seen === 'unreachable' ? 'ETIMEDOUT' : 'ECONNRESET' },
        )
        this.out.delete(c)
        // The query in flight fails with err; the client's own 'error' event must not crash the
        // process when its holder (pool.connect()) listens to none.
        c.on('error', () => {})
        ;(c as unknown as PgClientInternals).connection?.stream?.destroy(err)
        n++
      }
      this.closed += n
      return n
    } finally {
      this.checking = false
    }
  }

  /** The backends among `pids` the server still has; 'unreachable'; or 'reachable' when it answered with an error. */
  private async backends(pids: number[]): Promise<Set<number> | 'unreachable' | 'reachable'> {
    const client = new this.deps.pg.Client({
      ...this.deps.clientConfig(),
      connectionTimeoutMillis: CHECK_TIMEOUT_MS,
      query_timeout: CHECK_TIMEOUT_MS,
      application_name: 'rmq-broker-check',
    })
    client.on('error', () => {})
    try {
      await client.connect()
      const { rows } = await client.query<{ pid: number }>(
        'SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])',
        [pids],
      )
      await client.end()
      return new Set(rows.map((r) => Number(r.pid)))
    } catch (err) {
      // No goodbye: on an unreachable server it would hang like the rest.
      ;(client as unknown as PgClientInternals).connection?.stream?.destroy()
      const code = (err as { code?: unknown })?.code
      return typeof code === 'string' && SQLSTATE.test(code) ? 'reachable' : 'unreachable'
    }
  }
}
