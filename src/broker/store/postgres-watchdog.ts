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

/** Settings for a check's connection to the host a pool is on. */
type HostConfig = () => pgTypes.ClientConfig

export class ConnectionWatchdog {
  /** Clients checked out now, and since when. */
  private readonly out = new Map<pgTypes.PoolClient, number>()
  /** The host each tracked client's pool is on (after a failover, old pools' clients are checked on their own host). */
  private readonly hostOf = new Map<pgTypes.PoolClient, HostConfig>()
  private checking = false
  private timer: NodeJS.Timeout | undefined
  /** Clients closed as hung so far (tests, logs). */
  closed = 0

  constructor(private readonly deps: WatchdogDeps) {}

  /** Time the clients of `pool` (on the host `host` gives settings for) while they are checked out. */
  track(pool: pgTypes.Pool, host: HostConfig = this.deps.clientConfig): void {
    pool.on('acquire', (c) => {
      this.out.set(c, this.now())
      this.hostOf.set(c, host)
    })
    const gone = (c: pgTypes.PoolClient) => {
      this.out.delete(c)
      this.hostOf.delete(c)
    }
    pool.on('release', (_err, c) => gone(c))
    pool.on('remove', (c) => gone(c))
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
      // One check per host: backend pids are per server.
      const byHost = new Map<HostConfig, Array<[pgTypes.PoolClient, number]>>()
      for (const entry of old) {
        const host = this.hostOf.get(entry[0]) ?? this.deps.clientConfig
        byHost.set(host, [...(byHost.get(host) ?? []), entry])
      }
      let n = 0
      for (const [host, clients] of byHost) n += await this.checkHost(host, clients, now)
      this.closed += n
      return n
    } finally {
      this.checking = false
    }
  }

  private async checkHost(
    host: HostConfig,
    old: Array<[pgTypes.PoolClient, number]>,
    now: number,
  ): Promise<number> {
    const pidOf = (c: pgTypes.PoolClient) => (c as unknown as PgClientInternals).processID || 0
    const seen = await this.backends(
      host,
      old.map(([c]) => pidOf(c)),
    )
    if (seen === 'reachable') return 0
    let n = 0
    for (const [c, since] of old) {
      if (this.out.get(c) !== since) continue // answered (or out again) meanwhile
      const pid = pidOf(c)
      // No pid (or pids that cannot be trusted, seen as 'reachable'): only an unreachable server closes it.
      if (seen !== 'unreachable' && (pid === 0 || seen.has(pid))) continue
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
    return n
  }

  /** The backends among `pids` the server still has; 'unreachable'; or 'reachable' when it answered with an error. */
  private async backends(
    host: HostConfig,
    pids: number[],
  ): Promise<Set<number> | 'unreachable' | 'reachable'> {
    const client = new this.deps.pg.Client({
      ...host(),
      connectionTimeoutMillis: CHECK_TIMEOUT_MS,
      query_timeout: CHECK_TIMEOUT_MS,
      application_name: 'rmq-broker-check',
    })
    client.on('error', () => {})
    let connected = false
    try {
      await client.connect()
      connected = true
      const { rows } = await client.query<{ pid: number; me: number }>(
        'SELECT pid, pg_backend_pid() AS me FROM pg_stat_activity WHERE pid = ANY($1::int[]) OR pid = pg_backend_pid()',
        [pids],
      )
      // Behind a pooler (PgBouncer) the pids a client was told are not the server's: trust none.
      const me = (client as unknown as PgClientInternals).processID
      if (!rows.length || Number(rows[0].me) !== me) return 'reachable'
      return new Set(rows.map((r) => Number(r.pid)))
    } catch (err) {
      // Only a connection that cannot be made says the server is gone: a server that answered (an
      // error of its own, or a slow query once connected) is reachable; a name that did not
      // resolve says nothing about the server.
      const code = (err as { code?: unknown })?.code
      if (
        connected ||
        (typeof code === 'string' && (SQLSTATE.test(code) || /^(EAI_AGAIN|ENOTFOUND)$/.test(code)))
      )
        return 'reachable'
      return 'unreachable'
    } finally {
      // No goodbye awaited: if the link goes silent now it would hang like the rest.
      ;(client as unknown as PgClientInternals).connection?.stream?.destroy()
    }
  }
}
