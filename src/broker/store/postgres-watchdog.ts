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
 * - the server answers, the backend is there, and the client still waits for
 *   an answer while the backend is `idle` (no statement, no transaction), is
 *   stuck sending its answer (`active`, waiting on ClientWrite), or waits for
 *   the rest of the statement (`active`, waiting on ClientRead: cut off
 *   mid-send): the flow was dropped (a NAT or firewall that forgot it). Only
 *   when seen so for CONFIRM_MS, over checks that found the same statement on
 *   the client, the same backend state, wait and `state_change`, and not one
 *   byte read or written by the client meanwhile (so not a statement only just
 *   sent or still being sent, nor an answer still arriving), is that client
 *   closed (ECONNRESET);
 * - the server answers and the backend is running something else (or is in
 *   a transaction, which idle_in_transaction_session_timeout ends): nothing
 *   is done. A long statement that is really running (a migration, a large
 *   release) is never cut short by this.
 * A server that answers the check with an error of its own (too many
 *   connections, shutting down) is reachable: nothing is closed on it.
 */
import type pgTypes from 'pg'

type Pg = typeof pgTypes

/** A client out of the pool this long is checked on. Above lock_timeout (15 s): a lock wait is not a hang. */
export const HUNG_AFTER_MS = 20_000
/** How often checked-out clients are looked at. */
export const WATCH_EVERY_MS = 5_000
/** A client seen stuck (above) this long, with nothing read meanwhile, is closed. */
export const CONFIRM_MS = 10_000
/** The check's own connect and query must answer within this. */
const CHECK_TIMEOUT_MS = 5_000

const SQLSTATE = /^[0-9A-Z]{5}$/

interface PgClientInternals {
  processID?: number
  /** The statement the client waits on (pg 8's own field; null when none). */
  _activeQuery?: object | null
  connection?: { stream?: { destroy(err?: Error): void; bytesRead?: number; bytesWritten?: number } }
}

export interface WatchdogDeps {
  pg: Pg
  /** Settings for the check's connection, to the host in use. */
  clientConfig(): pgTypes.ClientConfig
  /** Host in use, for messages. */
  label(): string
  hungAfterMs?: number
  /** CONFIRM_MS, for tests. */
  confirmMs?: number
  now?: () => number
}

/** Settings for a check's connection to the host a pool is on. */
type HostConfig = () => pgTypes.ClientConfig

/** A backend as the check saw it. */
interface Backend {
  state: string | null
  waitEvent: string | null
  /** Server time of its last state change, as text: compared for equality only (no clock is shared). */
  changed: string | null
}

/** How a backend looks when its client's flow was dropped (see stuck()). */
type Stuck = 'idle' | 'write' | 'read'

/** A client checked out of a tracked pool. */
interface Checkout {
  since: number
  /** The host its pool is on (after a failover, old pools' clients are checked on their own host). */
  host: HostConfig
  /** First seen stuck (see stuck()) at `at`, and as what; unchanged at every check since. */
  stuck?: { query: object; kind: Stuck; changed: string; bytes: string; at: number }
}

export class ConnectionWatchdog {
  /** Clients checked out now. */
  private readonly out = new Map<pgTypes.PoolClient, Checkout>()
  private checking = false
  private timer: NodeJS.Timeout | undefined
  /** Clients closed as hung so far (tests, logs). */
  closed = 0

  constructor(private readonly deps: WatchdogDeps) {}

  /** Time the clients of `pool` (on the host `host` gives settings for) while they are checked out. */
  track(pool: pgTypes.Pool, host: HostConfig = this.deps.clientConfig): void {
    pool.on('acquire', (c) => this.out.set(c, { since: this.now(), host }))
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
    const old = [...this.out].filter(([, o]) => now - o.since >= bound)
    if (old.length === 0) return 0
    this.checking = true
    try {
      // One check per host: backend pids are per server.
      const byHost = new Map<HostConfig, Array<[pgTypes.PoolClient, Checkout]>>()
      for (const entry of old) byHost.set(entry[1].host, [...(byHost.get(entry[1].host) ?? []), entry])
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
    old: Array<[pgTypes.PoolClient, Checkout]>,
    now: number,
  ): Promise<number> {
    const internals = (c: pgTypes.PoolClient) => c as unknown as PgClientInternals
    const pidOf = (c: pgTypes.PoolClient) => internals(c).processID || 0
    const seen = await this.backends(
      host,
      old.map(([c]) => pidOf(c)),
    )
    if (seen === 'reachable') return 0
    let n = 0
    for (const [c, o] of old) {
      if (this.out.get(c) !== o) continue // answered (or out again) meanwhile
      const pid = pidOf(c)
      let why: string
      if (seen === 'unreachable') {
        why = `the server does not answer a new connection within ${CHECK_TIMEOUT_MS / 1000} s`
      } else if (pid === 0) {
        continue // no pid (or pids that cannot be trusted, seen as 'reachable'): only an unreachable server closes it
      } else if (!seen.has(pid)) {
        why = `its backend (pid ${pid}) is gone from pg_stat_activity`
      } else {
        const stuck = this.stuck(internals(c), o, seen.get(pid)!)
        if (!stuck) continue
        why = `its backend (pid ${pid}) ${stuck}`
      }
      const secs = Math.round((now - o.since) / 1000)
      const err = Object.assign(
        new Error(
          `connection to PostgreSQL at ${this.deps.label()} was out of the pool for ${secs} s and was closed: ${why}`,
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

  /**
   * Why a client whose backend is there is stuck, once it has been so for CONFIRM_MS; else
   * undefined. It waits on a statement while its backend is idle, waits to send it the answer, or
   * waits for the rest of the statement; the same statement, backend state, wait and state_change
   * at every check since the first sighting, and no byte read or written by the client in between. A first sighting only notes the
   * time: the statement may only just have been sent, or its answer be on its way.
   */
  private stuck(c: PgClientInternals, o: Checkout, b: Backend): string | undefined {
    const query = c._activeQuery
    const kind: Stuck | undefined =
      b.state === 'idle'
        ? 'idle'
        : b.state !== 'active'
          ? undefined
          : b.waitEvent === 'ClientWrite'
            ? 'write'
            : b.waitEvent === 'ClientRead'
              ? 'read'
              : undefined
    if (!query || !kind || b.changed === null) {
      o.stuck = undefined
      return undefined
    }
    const stream = c.connection?.stream
    const bytes = `${stream?.bytesRead ?? -1}/${stream?.bytesWritten ?? -1}`
    const at = this.now()
    const s = o.stuck
    if (!s || s.query !== query || s.kind !== kind || s.changed !== b.changed || s.bytes !== bytes) {
      o.stuck = { query, kind, changed: b.changed, bytes, at }
      return undefined
    }
    const waited = at - s.at
    if (waited < (this.deps.confirmMs ?? CONFIRM_MS)) return undefined
    const secs = Math.round(waited / 1000)
    const drop = '(the flow was dropped on the way)'
    return kind === 'idle'
      ? `has sat idle for ${secs} s while the client waited for an answer, reading and writing nothing ${drop}`
      : kind === 'write'
        ? `has waited ${secs} s to send its answer while the client read and wrote nothing ${drop}`
        : `has waited ${secs} s for the rest of the statement while the client read and wrote nothing ${drop}`
  }

  /** The backends among `pids` the server still has; 'unreachable'; or 'reachable' when it answered with an error. */
  private async backends(
    host: HostConfig,
    pids: number[],
  ): Promise<Map<number, Backend> | 'unreachable' | 'reachable'> {
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
      const { rows } = await client.query<{ pid: number; me: number } & Backend>(
        `SELECT pid, pg_backend_pid() AS me, state, wait_event AS "waitEvent", state_change::text AS changed
           FROM pg_stat_activity WHERE pid = ANY($1::int[]) OR pid = pg_backend_pid()`,
        [pids],
      )
      // Behind a pooler (PgBouncer) the pids a client was told are not the server's: trust none.
      const me = (client as unknown as PgClientInternals).processID
      if (!rows.length || Number(rows[0].me) !== me) return 'reachable'
      return new Map(
        rows.map((r) => [Number(r.pid), { state: r.state, waitEvent: r.waitEvent, changed: r.changed }]),
      )
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
