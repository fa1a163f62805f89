/**
 * BrokerStore on PostgreSQL, for several broker processes on several hosts
 * sharing one database (`broker.store=postgres`, `broker.postgres.url`, or
 * the usual PG* environment variables when the URL is empty).
 *
 * - Every ingest and every release that moves anything runs in one
 *   transaction that first locks the single `rmq_meta` row (SELECT ... FOR
 *   UPDATE). That row lock is the one-releaser rule: arrival and event
 *   positions are assigned and committed strictly one transaction after the
 *   other, so a reader that has seen position P never later finds a new
 *   message at or below P. It is transaction-scoped: a broker that dies drops
 *   its connection, PostgreSQL aborts its transaction and the next broker
 *   proceeds (failover needs no election). lock_timeout and
 *   idle_in_transaction_session_timeout bound how long a stuck holder can
 *   block the others.
 * - Commits are durable before a promise resolves: every write transaction
 *   sets synchronous_commit=on locally, whatever the server default.
 * - Commits that add arrivals or release messages send NOTIFY rmq_messages
 *   (delivered only on commit); `subscribe` LISTENs on a dedicated
 *   connection so long-polls on every broker wake at once.
 * - The `pg` driver is imported only when this store is opened.
 */
import { holdFloor, liveSince } from './holders.js'
import type pgTypes from 'pg'
import type { BatchAck, BatchBody } from '../../protocol/batch.js'
import { lowMarkOf, maxSeqOf, toMessage, toNode } from './node-rows.js'
import { PostgresAdmin } from './postgres-admin.js'
import {
  MESSAGE_COLUMNS,
  NODE_COLUMNS,
  BEGIN_LOCKED,
  INSERT_BATCH,
  UPSERT_NODE,
  WATERMARK_INPUTS,
  RELEASE_UP_TO,
  UPDATE_META,
} from './postgres-statements.js'
import { pgHeldBack, pgRead } from './postgres-read.js'
import { NOTIFY_CHANNEL } from './postgres-schema.js'
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
type PoolClient = pgTypes.PoolClient

interface MetaRow {
  watermark: number | null
  next_position: number
  next_arrival: number
  held: number
}

type MessageRow = Parameters<typeof toMessage>[0]
type NodeRow = Parameters<typeof toNode>[0]

interface IngestJob {
  batch: BatchBody
  ctx: IngestContext
  resolve(ack: BatchAck): void
  reject(err: unknown): void
}

/** Most batches one group commit carries. */
const MAX_GROUP = 32

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

function candidateWatermark(w: { lm: number | null; n: number; held_max: number | null }): number | null {
  // No live edge node holds anything back: release everything held.
  if (w.n > 0) return w.lm
  return w.held_max === null ? null : w.held_max + 1
}

function fromRow(r: Omit<MessageRow, 'payload'> & { payload: Buffer }): StoredMessage {
  return toMessage({ ...r, payload: r.payload.toString('utf8') })
}

export class PostgresBrokerStore implements BrokerStore {
  readonly kind = 'postgres'
  private closed = false
  private readonly queue: IngestJob[] = []
  private flushing = false
  private readonly listeners = new Set<() => void>()
  private listener: pgTypes.Client | undefined
  private listenRetry: NodeJS.Timeout | undefined

  /** Tokens, consumer groups and alerts (postgres-admin.ts). */
  private readonly admin: PostgresAdmin

  constructor(
    private readonly pg: Pg,
    /** On the current primary; rebuilt on another host after a failover (postgres-primary.ts). */
    private readonly pool: PrimaryPool,
  ) {
    this.admin = new PostgresAdmin(pool, (fn) => this.wrap(fn))
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

  /** One write transaction holding the rmq_meta row lock; commits durably before resolving. */
  private async locked<T>(fn: (c: PoolClient, meta: MetaRow) => Promise<T>): Promise<T> {
    const c = await this.pool.connect()
    let broken: Error | undefined
    try {
      const results = (await c.query(BEGIN_LOCKED)) as unknown as pgTypes.QueryResult<MetaRow>[]
      const out = await fn(c, results[2].rows[0])
      await c.query('COMMIT')
      return out
    } catch (err) {
      await c.query('ROLLBACK').catch((e: Error) => (broken = e))
      throw err
    } finally {
      c.release(broken)
    }
  }

  /** Recompute W and release under the lock; returns the new meta fields. */
  private async releaseLocked(
    c: PoolClient,
    meta: MetaRow,
    ctx: IngestContext,
  ): Promise<{ released: number; watermark: number | null }> {
    const w = (await c.query(WATERMARK_INPUTS, [liveSince(ctx), holdFloor(ctx)])).rows[0]
    const candidate = candidateWatermark(w)
    let watermark = meta.watermark
    if (candidate !== null && (watermark === null || candidate > watermark)) watermark = candidate
    let released = 0
    if (watermark !== null)
      released = (await c.query(RELEASE_UP_TO, [meta.next_position, watermark])).rowCount ?? 0
    return { released, watermark }
  }

  /**
   * Group commit: batches that arrive at this broker while its previous group
   * is committing wait and go together in the next transaction: one lock
   * acquisition, one release pass and one durable commit (fsync) for all.
   * Each batch runs in its own SAVEPOINT (a bad batch spoils only itself)
   * and is answered only after the shared commit. Messages of one group
   * count as arriving together: late means below W as it stood before it.
   */
  ingest(batch: BatchBody, ctx: IngestContext): Promise<BatchAck> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('the broker store is closed'))
    return new Promise((resolve, reject) => {
      this.queue.push({ batch, ctx, resolve, reject })
      if (!this.flushing) void this.flush()
    })
  }

  private async flush(): Promise<void> {
    this.flushing = true
    try {
      while (this.queue.length > 0) {
        const jobs = this.queue.splice(0, MAX_GROUP)
        try {
          const acks = await this.wrap(() => this.locked((c, meta) => this.ingestGroup(c, meta, jobs)))
          jobs.forEach((job, i) => {
            const ack = acks[i]
            if (ack instanceof Error) job.reject(ack)
            else job.resolve(ack)
          })
        } catch (err) {
          for (const job of jobs) job.reject(err)
        }
      }
    } finally {
      this.flushing = false
    }
  }

  private async ingestGroup(
    c: PoolClient,
    meta: MetaRow,
    jobs: IngestJob[],
  ): Promise<Array<BatchAck | Error>> {
    const before = meta.watermark
    let nextArrival = meta.next_arrival
    let ctx = jobs[0].ctx
    const out: Array<Omit<BatchAck, 'watermark'> | Error> = []
    for (const job of jobs) {
      if (job.ctx.now > ctx.now) ctx = job.ctx
      if (jobs.length > 1) await c.query('SAVEPOINT rmq_batch')
      try {
        const ack = await this.insertBatch(c, job.batch, job.ctx, before, nextArrival)
        if (jobs.length > 1) await c.query('RELEASE SAVEPOINT rmq_batch')
        nextArrival += ack.accepted
        out.push(ack)
      } catch (err) {
        // Lost connection, timeouts...: the whole group fails (503) and nothing of it commits.
        if (jobs.length === 1 || isUnavailable(err)) throw err
        await c.query('ROLLBACK TO SAVEPOINT rmq_batch')
        out.push(err as Error)
      }
    }
    const accepted = nextArrival - meta.next_arrival
    const { released, watermark } = await this.releaseLocked(c, meta, ctx)
    await this.writeMeta(c, meta, watermark, released, accepted)
    return out.map((r) => (r instanceof Error ? r : { ...r, watermark }))
  }

  private async insertBatch(
    c: PoolClient,
    batch: BatchBody,
    ctx: IngestContext,
    before: number | null,
    nextArrival: number,
  ): Promise<Omit<BatchAck, 'watermark'>> {
    const ms = batch.messages
    let accepted = 0
    let late = 0
    if (ms.length > 0) {
      const res = await c.query<{ late: boolean }>(INSERT_BATCH, [
        batch.node,
        batch.epoch,
        ms.map((m) => m.seq),
        ms.map((m) => m.topic),
        ms.map((m) => m.ts),
        ms.map((m) => Buffer.from(m.payload, 'utf8')),
        ms.map((m) => m.enc),
        ms.map((m) => m.contentType ?? null),
        ms.map((m) => m.priority ?? 4),
        ms.map((m) => m.expiresAt ?? null),
        ms.map((m) => (m.headers === null || m.headers === undefined ? null : JSON.stringify(m.headers))),
        nextArrival,
        ctx.now,
        before,
      ])
      accepted = res.rowCount ?? 0
      for (const r of res.rows) if (r.late) late++
    }
    const duplicates = ms.length - accepted
    const { lowMark, unackedLowMark } = lowMarkOf(batch)
    await c.query(UPSERT_NODE, [
      batch.node,
      batch.epoch,
      batch.direct === true,
      ctx.now,
      ms.length > 0 ? ctx.now : null,
      Math.round(batch.clock - ctx.now),
      batch.clock,
      batch.backlog.pending,
      batch.backlog.bytes,
      batch.backlog.oldestTs ?? null,
      unackedLowMark,
      batch.stats === undefined ? null : JSON.stringify(batch.stats),
      accepted,
      duplicates,
      late,
      batch.batch,
      batch.backlog.unacked?.batch ?? null,
      lowMark,
      maxSeqOf(batch),
    ])
    return { accepted, duplicates, late }
  }

  private async writeMeta(
    c: PoolClient,
    meta: MetaRow,
    watermark: number | null,
    released: number,
    accepted: number,
  ): Promise<void> {
    if (released === 0 && accepted === 0 && watermark === meta.watermark) return
    await c.query(UPDATE_META, [
      watermark,
      meta.next_position + released,
      meta.next_arrival + accepted,
      meta.held + accepted - released,
      accepted,
    ])
    // Delivered to listeners only if and when this transaction commits.
    if (released > 0 || accepted > 0) await c.query(`NOTIFY ${NOTIFY_CHANNEL}`)
  }

  release(ctx: IngestContext): Promise<ReleaseResult> {
    return this.wrap(async () => {
      // After every locked commit nothing held has ts below W, so when W cannot
      // move there is nothing to do: answer without taking the lock (every
      // broker runs this on a timer).
      const w = (await this.pool.query(WATERMARK_INPUTS, [liveSince(ctx), holdFloor(ctx)])).rows[0]
      const candidate = candidateWatermark(w)
      if (candidate === null || (w.watermark !== null && candidate <= w.watermark))
        return { released: 0, watermark: w.watermark }
      return this.locked(async (c, meta) => {
        const r = await this.releaseLocked(c, meta, ctx)
        await this.writeMeta(c, meta, r.watermark, r.released, 0)
        return r
      })
    })
  }

  read(q: ReadQuery): Promise<ReadResult> {
    return this.wrap(() => pgRead({ pool: this.pool, columns: MESSAGE_COLUMNS, fromRow }, q))
  }

  heldBack(q: HeldQuery): Promise<HeldReport> {
    return this.wrap(() => pgHeldBack(this.pool, q))
  }

  resetWatermark(to: number): Promise<{ before: number | null; after: number }> {
    return this.wrap(() =>
      this.locked(async (c, meta) => {
        await c.query('UPDATE rmq_meta SET watermark = $1 WHERE id = 1', [to])
        return { before: meta.watermark, after: to }
      }),
    )
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
              `DELETE FROM rmq_messages WHERE arrival IN (
                 SELECT arrival FROM rmq_messages WHERE position IS NOT NULL AND received_at < $1
                 ORDER BY arrival LIMIT $2 FOR UPDATE SKIP LOCKED)`,
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
    const retry = () => {
      if (this.listener !== client) return
      this.listener = undefined
      client.end().catch(() => {})
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
      // Commits may have happened while we were not listening.
      this.fire()
    } catch {
      retry()
    }
  }

  private unlisten(): void {
    if (this.listenRetry) clearTimeout(this.listenRetry)
    this.listenRetry = undefined
    const client = this.listener
    this.listener = undefined
    client?.end().catch(() => {})
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    // Let a group commit in progress finish and answer; queued batches are refused (503).
    while (this.flushing) await new Promise((r) => setTimeout(r, 5))
    this.listeners.clear()
    this.unlisten()
    await this.pool.end()
  }
}
