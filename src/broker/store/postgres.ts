/**
 * BrokerStore on PostgreSQL, for several broker processes on several hosts
 * sharing one database (`broker.store=postgres`, `broker.postgres.url`, or
 * the usual PG* environment variables when the URL is empty).
 *
 * - Ingest takes no lock shared by all ingests: one batch is one statement in
 *   its own durable transaction (ingestBatchSql: set-wise insert, duplicates
 *   skipped on (node, epoch, seq), the node's own row upserted), so batches
 *   of different nodes, on one broker or several, commit in parallel and
 *   PostgreSQL flushes their commits together.
 * - Positions are given after commit by release passes (rmq_pass,
 *   postgres-release.ts), one at a time across all brokers (an advisory lock
 *   held for the pass's transaction only). A pass gives arrival positions
 *   only to messages below the horizon of transactions still running, so a
 *   reader that has seen position P never later finds a message at or below
 *   P. Positions are written to the narrow rmq_order; message rows are never
 *   rewritten. An ingest answers after a pass covered it (its ack says the
 *   watermark that pass reached).
 * - Commits are durable before a promise resolves: every write transaction
 *   sets synchronous_commit=on locally, whatever the server default.
 * - Passes that give positions send NOTIFY rmq_messages (delivered only on
 *   commit); `subscribe` LISTENs on a dedicated connection so long-polls on
 *   every broker wake at once.
 * - The `pg` driver is imported only when this store is opened.
 */
import type pgTypes from 'pg'
import type { BatchAck, BatchBody } from '../../protocol/batch.js'
import { lowMarkOf, maxSeqOf, toMessage, toNode } from './node-rows.js'
import { headersText, sameShape, shapeOf } from './message-shape.js'
import { PostgresAdmin } from './postgres-admin.js'
import { integerArray, textArray } from './postgres-arrays.js'
import { MESSAGE_COLUMNS, NODE_COLUMNS, ingestBatchSql } from './postgres-statements.js'
import { pgHeldBack, pgRead } from './postgres-read.js'
import { ReleasePasses, type RunPass } from './postgres-release.js'
import { NOTIFY_CHANNEL, RELEASE_LOCK_KEY } from './postgres-schema.js'
import type { PrimaryPool } from './postgres-primary.js'
import {
  StoreUnavailableError,
  type BrokerStore,
  type AlertQuery,
  type AlertRecord,
  type GroupRecord,
  type HeldQuery,
  type HeldReport,
  type IngestContext,
  type NewAlert,
  type NodeRecord,
  type NodeTokenRecord,
  type NodeVersion,
  type FleetVersions,
  type ReadOrder,
  type ReadQuery,
  type ReadResult,
  type ReleaseResult,
  type StoredMessage,
  type StreamHeads,
  type FoundToken,
  type NewTokenRecord,
  type TokenRecord,
} from './types.js'

type Pg = typeof pgTypes

interface MetaRow {
  watermark: number | null
  next_position: number
  next_arrival: number
  held: number
}

type MessageRow = Parameters<typeof toMessage>[0]
type NodeRow = Parameters<typeof toNode>[0]

// 25006 read_only_sql_transaction: the host was demoted or is a standby (failover under way).
const UNAVAILABLE_SQLSTATE = /^(08|53|57P0[1-4]|55P03|40001|40P01|57014|25P03|25006|58)/
const UNAVAILABLE_ERRNO =
  /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH)$/

export function isUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown }
  if (typeof e?.code === 'string' && (UNAVAILABLE_SQLSTATE.test(e.code) || UNAVAILABLE_ERRNO.test(e.code)))
    return true
  const msg = typeof e?.message === 'string' ? e.message : ''
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
    msg,
  )
}

const UNIQUE_VIOLATION = '23505'
/** The LISTEN connection is pinged this often, and given up when a ping is unanswered this long. */
export const LISTEN_PING_MS = 10_000

/**
 * Say goodbye to a LISTEN connection without waiting for it: into a dead link the goodbye never
 * completes, so the socket is destroyed if it is still open a moment later.
 */
function giveUp(client: pgTypes.Client): void {
  const c = client as unknown as {
    _connecting?: boolean
    connection?: { stream?: { destroyed?: boolean; destroy(err?: Error): void } }
  }
  const stream = c.connection?.stream
  if (c._connecting) {
    // Still connecting: pg's end() would leave connect() pending for good; fail it instead.
    stream?.destroy(new Error('the LISTEN connection was given up while connecting'))
    return
  }
  client.end().catch(() => {})
  setTimeout(() => {
    if (stream && !stream.destroyed) stream.destroy()
  }, 2000).unref()
}

/**
 * The connection was lost with the statement in flight (its backend
 * terminated: pg_terminate_backend, a crash; the server restarting): another
 * pooled connection may well work at once. Not a refused or timed-out
 * connect, which would only fail again.
 */
export function isLostMidQuery(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown }
  if (e?.code === '57P01' || e?.code === 'ECONNRESET') return true
  return typeof e?.message === 'string' && /Connection terminated unexpectedly/i.test(e.message)
}

/** enc, content type, priority, expiry and headers: scalars when every message has the same, else arrays. */
function shapeColumns(ms: BatchBody['messages']): { uniform: boolean; values: unknown[] } {
  const s = ms.length > 0 ? shapeOf(ms[0]) : undefined
  if (s && ms.every((m) => sameShape(s, m)))
    return { uniform: true, values: [s.enc, s.contentType, s.priority, s.expiresAt, headersText(s.headers)] }
  return {
    uniform: false,
    values: [
      textArray(ms.map((m) => m.enc)),
      textArray(ms.map((m) => m.contentType ?? null)),
      integerArray(ms.map((m) => m.priority ?? 4)),
      integerArray(ms.map((m) => m.expiresAt ?? null)),
      textArray(ms.map((m) => headersText(m.headers))),
    ],
  }
}

function fromRow(r: Omit<MessageRow, 'payload'> & { payload: Buffer }): StoredMessage {
  return toMessage({ ...r, payload: r.payload.toString('utf8') })
}

export class PostgresBrokerStore implements BrokerStore {
  readonly kind = 'postgres'
  private closed = false
  /** Ingests and passes under way (close waits for them). */
  private inflight = 0
  private readonly listeners = new Set<() => void>()
  private listener: pgTypes.Client | undefined
  private listenRetry: NodeJS.Timeout | undefined
  /** Pings the LISTEN connection: a silent partition would leave it open and deaf (no error, no end). */
  private listenPing: NodeJS.Timeout | undefined
  private readonly passes: ReleasePasses

  /** Tokens, consumer groups and alerts (postgres-admin.ts). */
  private readonly admin: PostgresAdmin

  constructor(
    private readonly pg: Pg,
    /** On the current primary; rebuilt on another host after a failover (postgres-primary.ts). */
    private readonly pool: PrimaryPool,
    log?: (level: 'info' | 'warn', message: string, fields?: Record<string, unknown>) => void,
  ) {
    this.admin = new PostgresAdmin(pool, (fn) => this.wrap(fn))
    const run: RunPass = async (params) => {
      try {
        return (
          await this.pool.query({
            name: 'rmq_pass',
            text: 'SELECT p_frontier::text, p_watermark, p_sequenced, p_released FROM rmq_pass($1, $2, $3::xid8)',
            values: params,
          })
        ).rows[0]
      } catch (err) {
        // Before the pass is sent again: a lost primary is searched for at once.
        this.pool.failed(err)
        throw err
      }
    }
    this.passes = new ReleasePasses(
      run,
      (ms) =>
        log?.('warn', `PostgreSQL: an ingest waited ${ms} ms for a release pass (an old open transaction?)`, {
          waitedMs: ms,
        }),
      undefined,
      // Not while the primary is being searched for: the retry would go to the old host's pool.
      (err) => isLostMidQuery(err) && !this.pool.switching,
    )
  }

  private async wrap<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new StoreUnavailableError('the broker store is closed')
    try {
      return await fn()
    } catch (err) {
      // A lost or demoted primary: look for the new one while this request answers 503.
      this.pool.failed(err)
      if (err instanceof StoreUnavailableError || !isUnavailable(err)) throw err
      const e = err as { code?: string; message?: string }
      throw new StoreUnavailableError(
        `the PostgreSQL broker store cannot commit (${e.code ?? e.message ?? 'unknown'})`,
        { cause: err },
      )
    }
  }

  private async tracked<T>(fn: () => Promise<T>): Promise<T> {
    this.inflight++
    try {
      return await this.wrap(fn)
    } finally {
      this.inflight--
    }
  }

  /**
   * One batch: its own durable transaction (ingestBatchSql, one round trip),
   * then the wait for a release pass that covers it (postgres-release.ts).
   * Concurrent batches use several pooled connections at once.
   */
  ingest(batch: BatchBody, ctx: IngestContext): Promise<BatchAck> {
    return this.tracked(async () => {
      const ms = batch.messages
      const { lowMark, unackedLowMark } = lowMarkOf(batch)
      // One binary parameter for all payloads: no hex text array for the server to parse.
      const parts = ms.map((m) => Buffer.from(m.payload, 'utf8'))
      const payloads = Buffer.concat(parts)
      const lengths = parts.map((p) => p.length)
      const shape = shapeColumns(ms)
      const values = [
        batch.node,
        batch.epoch,
        integerArray(ms.map((m) => m.seq)),
        textArray(ms.map((m) => m.topic)),
        integerArray(ms.map((m) => m.ts)),
        payloads,
        ...shape.values,
        ctx.now,
        batch.direct === true,
        ms.length > 0 ? ctx.now : null,
        Math.round(batch.clock - ctx.now),
        batch.clock,
        batch.backlog.pending,
        batch.backlog.bytes,
        batch.backlog.oldestTs ?? null,
        unackedLowMark,
        batch.stats === undefined ? null : JSON.stringify(batch.stats),
        ms.length,
        batch.batch,
        batch.backlog.unacked?.batch ?? null,
        lowMark,
        maxSeqOf(batch),
        integerArray(lengths),
      ]
      const insert = (onConflict: boolean) =>
        this.pool.query<{ accepted: number; late: number; tx: string }>({
          name: `rmq_ingest_${shape.uniform ? 'uniform' : 'mixed'}${onConflict ? '_conflict' : ''}`,
          text: ingestBatchSql({ uniform: shape.uniform, onConflict }),
          values,
        })
      const res = await insert(false).catch((err: unknown) => {
        // The same (node, epoch, seq) inserted by a concurrent transaction or twice in this batch.
        if ((err as { code?: string })?.code === UNIQUE_VIOLATION) return insert(true)
        throw err
      })
      const r = res.rows[0]
      const pass = await this.passes.wait(BigInt(r.tx), ctx)
      return {
        accepted: r.accepted,
        duplicates: ms.length - r.accepted,
        late: r.late,
        watermark: pass.watermark,
      }
    })
  }

  release(ctx: IngestContext): Promise<ReleaseResult> {
    return this.tracked(async () => {
      const pass = await this.passes.wait(0n, ctx)
      return { released: pass.released, watermark: pass.watermark }
    })
  }

  read(q: ReadQuery): Promise<ReadResult> {
    return this.wrap(() => pgRead({ pool: this.pool, columns: MESSAGE_COLUMNS, fromRow }, q))
  }

  heldBack(q: HeldQuery): Promise<HeldReport> {
    return this.wrap(() => pgHeldBack(this.pool, q))
  }

  resetWatermark(to: number): Promise<{ before: number | null; after: number }> {
    return this.tracked(async () => {
      const c = await this.pool.connect()
      let broken: Error | undefined
      try {
        // Under the release lock: no pass is between reading and writing the watermark.
        await c.query(
          `BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_advisory_xact_lock(${RELEASE_LOCK_KEY})`,
        )
        const before = (await c.query<MetaRow>('SELECT watermark FROM rmq_meta WHERE id = 1')).rows[0]
          .watermark
        await c.query('UPDATE rmq_meta SET watermark = $1 WHERE id = 1', [to])
        await c.query('COMMIT')
        return { before, after: to }
      } catch (err) {
        await c.query('ROLLBACK').catch((e: Error) => (broken = e))
        throw err
      } finally {
        c.release(broken)
      }
    })
  }

  heads(): Promise<StreamHeads> {
    return this.wrap(async () => {
      const r = (
        await this.pool.query<MetaRow & { total: number }>(
          `SELECT m.watermark, m.next_position, m.next_arrival, m.held, m.ingested - p.purged AS total
           FROM rmq_meta m, rmq_purged p WHERE m.id = 1 AND p.id = 1`,
        )
      ).rows[0]
      return {
        event: r.next_position - 1,
        arrival: r.next_arrival - 1,
        watermark: r.watermark,
        held: r.held,
        total: r.total,
        positionWaits: this.passes.waits(),
      }
    })
  }

  nodes(): Promise<NodeRecord[]> {
    return this.wrap(async () =>
      (await this.pool.query<NodeRow>(`SELECT ${NODE_COLUMNS} FROM rmq_nodes ORDER BY node`)).rows.map(
        toNode,
      ),
    )
  }

  node(id: string): Promise<NodeRecord | undefined> {
    return this.wrap(async () => {
      const r = (
        await this.pool.query<NodeRow>(`SELECT ${NODE_COLUMNS} FROM rmq_nodes WHERE node = $1`, [id])
      ).rows[0]
      return r ? toNode(r) : undefined
    })
  }

  nodeVersions(): Promise<NodeVersion[]> {
    return this.wrap(async () =>
      (
        await this.pool.query<{ node: string; batches: number }>(
          'SELECT node, batches FROM rmq_nodes ORDER BY node',
        )
      ).rows.map((r) => [r.node, Number(r.batches)] as const),
    )
  }

  fleetVersions(): Promise<FleetVersions> {
    return this.wrap(
      async () =>
        (
          await this.pool.query<FleetVersions>(
            `SELECT (SELECT count(*) || ':' || COALESCE(sum(batches), 0) FROM rmq_nodes) AS nodes,
               (SELECT count(*) || ':' || COALESCE(sum(created_at), 0) || ':' || COALESCE(sum(length(name)), 0)
                FROM rmq_tokens WHERE role = 'node') AS tokens`,
          )
        ).rows[0],
    )
  }

  nodesNamed(ids: readonly string[]): Promise<NodeRecord[]> {
    if (ids.length === 0) return Promise.resolve([])
    return this.wrap(async () =>
      (
        await this.pool.query<NodeRow>(
          `SELECT ${NODE_COLUMNS} FROM rmq_nodes WHERE node = ANY($1::text[]) ORDER BY node`,
          [ids],
        )
      ).rows.map(toNode),
    )
  }

  putToken(token: NewTokenRecord, tokenHash: string, now: number): Promise<void> {
    return this.admin.putToken(token, tokenHash, now)
  }

  rotateToken(name: string, tokenHash: string, previousUntil: number): Promise<boolean> {
    return this.admin.rotateToken(name, tokenHash, previousUntil)
  }

  findToken(tokenHash: string): Promise<FoundToken | undefined> {
    return this.admin.findToken(tokenHash)
  }

  touchToken(name: string, now: number): Promise<void> {
    return this.admin.touchToken(name, now)
  }

  listTokens(): Promise<TokenRecord[]> {
    return this.admin.listTokens()
  }

  nodeTokens(): Promise<NodeTokenRecord[]> {
    return this.admin.nodeTokens()
  }

  revokeToken(name: string): Promise<boolean> {
    return this.admin.revokeToken(name)
  }

  groupPosition(name: string, order: ReadOrder): Promise<number | undefined> {
    return this.admin.groupPosition(name, order)
  }

  commitGroup(name: string, order: ReadOrder, position: number, now: number): Promise<number> {
    return this.admin.commitGroup(name, order, position, now)
  }

  purge(options: { receivedBefore: number; limit: number }): Promise<number> {
    return this.wrap(async () => {
      const c = await this.pool.connect()
      let broken: Error | undefined
      try {
        await c.query('BEGIN; SET LOCAL synchronous_commit = on')
        // SKIP LOCKED: brokers purging at the same time split the work instead of waiting.
        const n =
          (
            await c.query(
              `WITH victims AS (
                 SELECT o.arrival, o.node, o.epoch, o.seq FROM rmq_order o
                 JOIN rmq_message_rows m ON m.node = o.node AND m.epoch = o.epoch AND m.seq = o.seq
                 WHERE o.position IS NOT NULL AND m.received_at < $1
                 ORDER BY o.arrival LIMIT $2 FOR UPDATE OF o SKIP LOCKED
               ), gone AS (DELETE FROM rmq_order WHERE arrival IN (SELECT arrival FROM victims))
               DELETE FROM rmq_message_rows WHERE (node, epoch, seq) IN (SELECT node, epoch, seq FROM victims)`,
              [options.receivedBefore, options.limit],
            )
          ).rowCount ?? 0
        if (n > 0) await c.query('UPDATE rmq_purged SET purged = purged + $1 WHERE id = 1', [n])
        await c.query('COMMIT')
        return n
      } catch (err) {
        await c.query('ROLLBACK').catch((e: Error) => (broken = e))
        throw err
      } finally {
        c.release(broken)
      }
    })
  }

  listGroups(): Promise<GroupRecord[]> {
    return this.admin.listGroups()
  }

  listAlerts(q: AlertQuery): Promise<AlertRecord[]> {
    return this.admin.listAlerts(q)
  }

  latestAlerts(): Promise<AlertRecord[]> {
    return this.admin.latestAlerts()
  }

  fireAlert(a: NewAlert, now: number): Promise<AlertRecord | undefined> {
    return this.admin.fireAlert(a, now)
  }

  updateAlert(key: string, patch: { value: number; message: string }, now: number): Promise<boolean> {
    return this.admin.updateAlert(key, patch, now)
  }

  resolveAlert(key: string, now: number): Promise<AlertRecord | undefined> {
    return this.admin.resolveAlert(key, now)
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener)
    if (!this.listener && !this.listenRetry) void this.listen()
    return () => {
      this.listeners.delete(listener)
      if (this.listeners.size === 0) this.unlisten()
    }
  }

  private fire(): void {
    for (const l of [...this.listeners]) {
      try {
        l()
      } catch {
        // a listener's failure is its own
      }
    }
  }

  private async listen(): Promise<void> {
    if (this.closed || this.listeners.size === 0) return
    // On the primary in use: a standby refuses LISTEN, and NOTIFY is sent where commits happen.
    const client = new this.pg.Client(this.pool.clientConfig())
    this.listener = client
    // Connecting and LISTEN must be done within LISTEN_PING_MS too: a link that goes silent in
    // between (a partition) would leave the LISTEN unanswered, with no ping yet to notice.
    const setup = setTimeout(() => retry(), LISTEN_PING_MS)
    setup.unref()
    const retry = () => {
      clearTimeout(setup)
      if (this.listener !== client) return
      this.dropListener()
      if (this.closed || this.listeners.size === 0) return
      this.listenRetry = setTimeout(() => {
        this.listenRetry = undefined
        void this.listen()
      }, 1000)
      this.listenRetry.unref()
    }
    client.on('error', retry)
    client.on('end', retry)
    client.on('notification', () => this.fire())
    try {
      await client.connect()
      await client.query(`LISTEN ${NOTIFY_CHANNEL}`)
      clearTimeout(setup)
      if (this.listener !== client) return // given up meanwhile
      // Commits may have happened while we were not listening.
      this.fire()
      // A ping not answered within LISTEN_PING_MS: the connection is given up and made again (the
      // reconnect fires the listeners, so long-polls re-read what they may have missed).
      let pinging = 0
      this.listenPing = setInterval(() => {
        if (pinging && Date.now() - pinging >= LISTEN_PING_MS - 100) return retry()
        if (pinging) return
        pinging = Date.now()
        client.query('SELECT 1').then(() => (pinging = 0), retry)
      }, LISTEN_PING_MS)
      this.listenPing.unref()
    } catch {
      retry()
    }
  }

  private unlisten(): void {
    if (this.listenRetry) clearTimeout(this.listenRetry)
    this.listenRetry = undefined
    this.dropListener()
  }

  /** Stop pinging the LISTEN connection and give it up (not waited for). */
  private dropListener(): void {
    if (this.listenPing) clearInterval(this.listenPing)
    this.listenPing = undefined
    const client = this.listener
    this.listener = undefined
    if (client) giveUp(client)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    // Let ingests and passes in progress finish and answer; new calls are refused (503).
    while (this.inflight > 0) await new Promise((r) => setTimeout(r, 5))
    this.listeners.clear()
    this.unlisten()
    await this.pool.end()
  }
}
