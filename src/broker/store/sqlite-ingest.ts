/**
 * Ingest into the SQLite broker store: batches that arrive while a commit is
 * in progress share the next one (group commit), on a fast path that inserts
 * a whole group with multi-row statements, or the general path that gives
 * each batch its own SAVEPOINT; the watermark release in the same
 * transaction. SqliteBrokerStore (sqlite.ts) adds reads and administration.
 */
import type BetterSqlite3 from 'better-sqlite3'
import type { BatchAck, BatchBody } from '../../protocol/batch.js'
import { holdFloor, liveSince } from './holders.js'
import { headersText } from './message-shape.js'
import { lowMarkOf, maxSeqOf } from './node-rows.js'
import {
  BULK_COLUMNS,
  BULK_CONSTANTS,
  BULK_ROWS,
  INSERT_COLUMNS,
  INSERT_ROWS,
  PAIR_ROWS,
  prepareStatements,
  type Statements,
  type Stream,
} from './sqlite-statements.js'
import { compareEvent, sameShape, type Fresh } from './sqlite-event-order.js'
import { TopicBlocks } from './sqlite-topic-blocks.js'
import { StoreUnavailableError, type IngestContext, type ReleaseResult } from './types.js'

const UNAVAILABLE_CODES = /^SQLITE_(FULL|BUSY|LOCKED|IOERR|READONLY|CANTOPEN|NOMEM|PROTOCOL)/
/** Most batches sharing one commit. */
const MAX_GROUP = 64

/** Thrown inside the fast group transaction: roll it back and ingest the group on the general path. */
class SlowPath extends Error {}

interface IngestJob {
  batch: BatchBody
  ctx: IngestContext
  resolve: (ack: BatchAck) => void
  reject: (err: unknown) => void
  result?: BatchAck
  error?: unknown
}

function mapError(err: unknown): unknown {
  const code = (err as { code?: string })?.code
  if (typeof code === 'string' && UNAVAILABLE_CODES.test(code))
    return new StoreUnavailableError(`the broker store cannot commit (${code})`, { cause: err })
  return err
}

/** The ingest half of the SQLite broker store: group commit, the fast and general paths, release. */
export abstract class SqliteIngest {
  protected readonly db: BetterSqlite3.Database
  /** @internal */
  protected readonly stmts: Statements
  protected readonly blocks: TopicBlocks
  protected readonly insertTx: BetterSqlite3.Transaction<
    (batch: BatchBody, ctx: IngestContext, before: number | null) => Omit<BatchAck, 'watermark'>
  >
  protected readonly groupTx: BetterSqlite3.Transaction<(jobs: IngestJob[]) => void>
  protected readonly fastGroupTx: BetterSqlite3.Transaction<(jobs: IngestJob[]) => void>
  protected readonly nodeTx: BetterSqlite3.Transaction<(job: IngestJob, before: number | null) => Fresh[]>
  protected queue: IngestJob[] = []
  protected flushScheduled = false
  protected readonly releaseTx: BetterSqlite3.Transaction<(ctx: IngestContext) => ReleaseResult>
  protected closed = false
  /** Streams by `node \0 epoch` and by id. Ids are never reused, so committed entries stay valid. */
  protected readonly streams = new Map<string, Stream>()
  protected readonly streamsById = new Map<number, Stream>()
  /** Topic ids by topic (ids are never reused either). */
  protected readonly topicIds = new Map<string, number>()
  /**
   * Streams (`s` + key) and topics (`t` + topic) created by the transaction in
   * progress: forgotten if it (or its savepoint) rolls back.
   */
  protected readonly newStreams: string[] = []
  /** Take fastGroupSync first (tests turn it off to compare it with the general path). */
  fastIngest = true

  constructor(db: BetterSqlite3.Database) {
    this.db = db
    this.stmts = prepareStatements(db)
    this.blocks = new TopicBlocks(db)
    // Nested inside groupTx, each batch runs in its own SAVEPOINT: one bad batch spoils only itself.
    this.insertTx = db.transaction((batch: BatchBody, ctx: IngestContext, before: number | null) =>
      this.insertSync(batch, ctx, before),
    )
    this.groupTx = db.transaction((jobs: IngestJob[]) => this.groupSync(jobs))
    this.fastGroupTx = db.transaction((jobs: IngestJob[]) => this.fastGroupSync(jobs))
    this.nodeTx = db.transaction((job: IngestJob, before: number | null) => this.acceptSync(job, before))
    this.releaseTx = db.transaction((ctx: IngestContext) => this.releaseSync(ctx))
    for (const st of this.stmts.allStreams.all()) this.remember(st)
    for (const [id, topic] of this.stmts.allTopics.all()) this.topicIds.set(topic, id)
  }

  protected remember(st: Stream): Stream {
    this.streams.set(`${st.node}\u0000${st.epoch}`, st)
    this.streamsById.set(st.id, st)
    return st
  }

  /** The stream id of (node, epoch), created in the transaction in progress when new. */
  protected streamOf(node: string, epoch: string): Stream {
    const key = `${node}\u0000${epoch}`
    const known = this.streams.get(key)
    if (known) return known
    const found = this.stmts.findStream.get(node, epoch)
    if (found) return this.remember(found)
    this.newStreams.push('s' + key)
    return this.remember(this.stmts.addStream.get(node, epoch)!)
  }

  /** The id of a topic, created in the transaction in progress when new. */
  protected topicOf(topic: string): number {
    let id = this.topicIds.get(topic)
    if (id !== undefined) return id
    id = this.stmts.findTopic.get(topic)
    if (id === undefined) {
      this.newStreams.push('t' + topic)
      id = this.stmts.addTopic.get(topic)!
    }
    this.topicIds.set(topic, id)
    return id
  }

  protected streamById(id: number): Stream {
    let st = this.streamsById.get(id)
    if (!st) {
      // Made by another connection to this file.
      for (const row of this.stmts.allStreams.all()) this.remember(row)
      st = this.streamsById.get(id)
      if (!st) throw new Error(`broker store: message of unknown stream ${id}`)
    }
    return st
  }

  /** Forget streams created since `mark` (their rows were rolled back). */
  protected forgetStreams(mark: number): void {
    for (const tagged of this.newStreams.splice(mark)) {
      const key = tagged.slice(1)
      if (tagged[0] === 't') {
        this.topicIds.delete(key)
        continue
      }
      const st = this.streams.get(key)
      this.streams.delete(key)
      if (st) this.streamsById.delete(st.id)
    }
  }

  /** Insert rows of `width` values (flattened) into events or held, PAIR_ROWS per statement. */
  protected insertTuples(
    many: BetterSqlite3.Statement,
    one: BetterSqlite3.Statement,
    width: number,
    flat: number[],
  ): void {
    const per = PAIR_ROWS * width
    let i = 0
    if (flat.length >= per) {
      const args = new Array<number>(per)
      for (; i + per <= flat.length; i += per) {
        for (let k = 0; k < per; k++) args[k] = flat[i + k]
        many.run(args)
      }
    }
    for (; i < flat.length; i += width) one.run(flat.slice(i, i + width))
  }

  /**
   * Group commit: batches that arrive while a commit is in progress wait for
   * the next one and share its fsync. Each still gets its own SAVEPOINT, its
   * own result, and its answer only after the shared commit. Messages of one
   * group count as arriving together: late means below W before the group.
   */
  protected groupSync(jobs: IngestJob[]): void {
    const before = this.stmts.meta.get()!.watermark
    let ctx = jobs[0].ctx
    for (const job of jobs) {
      const mark = this.newStreams.length
      try {
        job.result = { ...this.insertTx(job.batch, job.ctx, before), watermark: null }
      } catch (err) {
        this.forgetStreams(mark)
        // A full disk or I/O error can abort the whole transaction: then nothing of the group commits.
        if (!this.db.inTransaction || mapError(err) instanceof StoreUnavailableError) throw err
        job.error = err
      }
      if (job.ctx.now > ctx.now) ctx = job.ctx
    }
    const { watermark } = this.releaseSync(ctx)
    for (const job of jobs) if (job.result) job.result.watermark = watermark
  }

  /**
   * The group on the fast path: the same results as groupSync, but a message
   * released by this group's own watermark gets its event row at once
   * instead of a held row that releaseSync turns into one. Held messages
   * released now get their positions in the same (ts, node, seq, epoch)
   * order. Anything unexpected throws SlowPath (the transaction rolls back
   * and groupSync runs instead).
   */
  protected fastGroupSync(jobs: IngestJob[]): void {
    const s = this.stmts
    const meta = s.meta.get()!
    const before = meta.watermark
    let ctx = jobs[0].ctx
    const fresh: Fresh[] = []
    const taken = new Map<string, Set<number>>()
    for (const job of jobs) {
      if (job.ctx.now > ctx.now) ctx = job.ctx
      // Two batches of one group carrying the same message: the general path counts the second as a duplicate.
      const key = `${job.batch.node}\u0000${job.batch.epoch}`
      const seen = taken.get(key)
      if (seen && job.batch.messages.some((m) => seen.has(m.seq))) throw new SlowPath()
      const mark = this.newStreams.length
      try {
        const accepted = this.nodeTx(job, before)
        for (const f of accepted) fresh.push(f)
        const set = seen ?? new Set<number>()
        for (const f of accepted) set.add(f.seq)
        taken.set(key, set)
      } catch (err) {
        this.forgetStreams(mark)
        if (!this.db.inTransaction || mapError(err) instanceof StoreUnavailableError) throw err
        job.error = err
      }
    }

    // The watermark after this group, as releaseSync computes it after the inserts.
    const live = s.liveLowMark.get(liveSince(ctx), holdFloor(ctx))!
    let candidate: number | null
    if (live.n > 0) candidate = live.lm
    else {
      let held = s.maxHeldTs.get()!.m
      for (const f of fresh) if (held === null || f.ts > held) held = f.ts
      candidate = held === null ? null : held + 1
    }
    let watermark = before
    if (candidate !== null && (watermark === null || candidate > watermark)) watermark = candidate

    let arrival = meta.next_arrival
    for (const f of fresh) f.arrival = arrival++

    // Release: held messages and this group's below the watermark, merged in event order.
    let position = meta.next_position
    const events: number[] = []
    const later: number[] = []
    if (watermark !== null) {
      const w = watermark
      const held = s.heldBelow.all(w).map(([arrival, ts, stream, seq, topicId]) => {
        const st = this.streamById(stream)
        return { arrival, ts, node: st.node, seq, epoch: st.epoch, topicId }
      })
      held.sort(compareEvent)
      const now = fresh.filter((f) => f.ts < w).sort(compareEvent)
      let i = 0
      let j = 0
      while (i < held.length || j < now.length) {
        if (j >= now.length || (i < held.length && compareEvent(held[i], now[j]) < 0)) {
          later.push(held[i].arrival, position)
          events.push(position++, held[i].arrival, held[i++].topicId)
        } else {
          const f = now[j++]
          f.position = position++
          events.push(f.position, f.arrival, f.topicId)
        }
      }
      if (held.length > 0 && s.dropHeld.run(w).changes !== held.length) throw new SlowPath()
    }

    // Insert in arrival order: runs of BULK_ROWS messages of one shape bind 5 values per row instead of
    // 13 (binding is most of the per-row cost); the rest INSERT_ROWS or 1 row per statement, all bound.
    const params = new Array<unknown>(INSERT_ROWS * INSERT_COLUMNS)
    const bulk = new Array<unknown>(BULK_CONSTANTS + BULK_ROWS * BULK_COLUMNS)
    const holds: number[] = []
    let inserted = 0
    for (let i = 0; i < fresh.length;) {
      const first = fresh[i]
      let end = i + 1
      while (end < fresh.length && end - i < BULK_ROWS && sameShape(fresh[end], first)) end++
      let rows: number
      let stmt: BetterSqlite3.Statement
      let args: unknown[]
      if (end - i === BULK_ROWS) {
        rows = BULK_ROWS
        stmt = s.insertBulk
        args = bulk
        args[0] = first.stream
        args[1] = first.m.enc
        args[2] = first.m.contentType ?? null
        args[3] = first.m.priority ?? 4
        args[4] = first.m.expiresAt ?? null
        args[5] = first.headers
        args[6] = first.receivedAt
        args[7] = first.late
        for (let k = 0, o = BULK_CONSTANTS; k < rows; k++, o += BULK_COLUMNS) {
          const f = fresh[i + k]
          args[o] = f.arrival
          args[o + 1] = f.m.seq
          args[o + 2] = f.topicId
          args[o + 3] = f.m.ts
          args[o + 4] = f.m.payload
          args[o + 5] = f.position
        }
      } else {
        rows = fresh.length - i >= INSERT_ROWS ? INSERT_ROWS : 1
        stmt = rows === 1 ? s.insertOne : s.insertMany
        args = rows === 1 ? new Array<unknown>(INSERT_COLUMNS) : params
        for (let k = 0, o = 0; k < rows; k++, o += INSERT_COLUMNS) {
          const f = fresh[i + k]
          args[o] = f.arrival
          args[o + 1] = f.stream
          args[o + 2] = f.m.seq
          args[o + 3] = f.topicId
          args[o + 4] = f.m.ts
          args[o + 5] = f.m.payload
          args[o + 6] = f.m.enc
          args[o + 7] = f.m.contentType ?? null
          args[o + 8] = f.m.priority ?? 4
          args[o + 9] = f.m.expiresAt ?? null
          args[o + 10] = f.headers
          args[o + 11] = f.receivedAt
          args[o + 12] = f.late
          args[o + 13] = f.position
        }
      }
      for (let k = 0; k < rows; k++) {
        const f = fresh[i + k]
        if (f.position === null) holds.push(f.ts, f.arrival, f.stream, f.seq, f.topicId)
      }
      try {
        inserted += stmt.run(args).changes
      } catch (err) {
        // A full disk or I/O error fails the group as on the general path; a bad row goes there to spoil only its batch.
        if (mapError(err) instanceof StoreUnavailableError) throw err
        throw new SlowPath()
      }
      i += rows
    }
    if (inserted !== fresh.length) throw new SlowPath()
    this.insertTuples(s.holdMany, s.holdOne, 5, holds)
    this.insertTuples(s.eventMany, s.eventOne, 3, events)
    for (const f of fresh) this.blocks.add(0, f.topicId, f.arrival)
    for (let i = 0; i < events.length; i += 3) this.blocks.add(1, events[i + 2], events[i])
    this.insertTuples(s.laterMany, s.laterOne, 2, later)
    if (arrival !== meta.next_arrival || position !== meta.next_position || watermark !== before)
      s.setAll.run(watermark, position, arrival)
    for (const job of jobs) if (job.result) job.result.watermark = watermark
  }

  /**
   * One batch on the fast path (in its own SAVEPOINT): which messages are new
   * (not stored before, not repeated in the batch), and the node's record.
   */
  protected acceptSync(job: IngestJob, before: number | null): Fresh[] {
    const { batch, ctx } = job
    const msgs = batch.messages
    const out: Fresh[] = []
    let late = 0
    if (msgs.length > 0) {
      const stream = this.streamOf(batch.node, batch.epoch).id
      let min = Infinity
      let max = -Infinity
      for (const m of msgs) {
        if (m.seq < min) min = m.seq
        if (m.seq > max) max = m.seq
      }
      // A dense run of seqs (a sync batch) is one index range; scattered ones are looked up one by one.
      const existing =
        max - min < 4 * msgs.length
          ? this.stmts.existingRange.all(stream, min, max)
          : this.stmts.existingList.all(stream, JSON.stringify(msgs.map((m) => m.seq)))
      const skip = new Set(existing)
      for (const m of msgs) {
        if (skip.has(m.seq)) continue
        skip.add(m.seq)
        const isLate = before !== null && m.ts < before ? 1 : 0
        late += isLate
        out.push({
          ts: m.ts,
          node: batch.node,
          seq: m.seq,
          epoch: batch.epoch,
          stream,
          topicId: this.topicOf(m.topic),
          m,
          headers: headersText(m.headers),
          receivedAt: ctx.now,
          late: isLate,
          arrival: 0,
          position: null,
        })
      }
    }
    const duplicates = msgs.length - out.length
    this.upsertNodeRow(batch, ctx, out.length, duplicates, late)
    job.result = { accepted: out.length, duplicates, late, watermark: null }
    return out
  }

  protected flush(): void {
    this.flushScheduled = false
    const jobs = this.queue.splice(0, MAX_GROUP)
    if (this.queue.length > 0) this.scheduleFlush()
    if (jobs.length === 0) return
    if (this.closed) {
      for (const job of jobs) job.reject(new StoreUnavailableError('the broker store is closed'))
      return
    }
    try {
      try {
        if (!this.fastIngest) throw new SlowPath()
        this.fastGroupTx.immediate(jobs)
        this.blocks.committedNow()
      } catch (err) {
        this.blocks.rolledBack()
        this.forgetStreams(0)
        if (!(err instanceof SlowPath)) throw err
        // Rolled back: nothing of the fast attempt stays. The general path isolates each batch.
        for (const job of jobs) job.result = job.error = undefined
        this.groupTx.immediate(jobs)
      }
    } catch (err) {
      this.forgetStreams(0)
      for (const job of jobs) job.reject(mapError(err))
      return
    }
    this.newStreams.length = 0
    for (const job of jobs)
      if (job.result) job.resolve(job.result)
      else job.reject(mapError(job.error))
  }

  protected scheduleFlush(): void {
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => this.flush())
  }

  protected insertSync(
    batch: BatchBody,
    ctx: IngestContext,
    before: number | null,
  ): Omit<BatchAck, 'watermark'> {
    const s = this.stmts
    const meta = s.meta.get()!
    let arrival = meta.next_arrival
    let accepted = 0
    let late = 0
    const stream = batch.messages.length > 0 ? this.streamOf(batch.node, batch.epoch).id : 0
    for (const m of batch.messages) {
      const isLate = before !== null && m.ts < before ? 1 : 0
      const topicId = this.topicOf(m.topic)
      const res = s.insertOne.run(
        arrival,
        stream,
        m.seq,
        topicId,
        m.ts,
        m.payload,
        m.enc,
        m.contentType ?? null,
        m.priority ?? 4,
        m.expiresAt ?? null,
        headersText(m.headers),
        ctx.now,
        isLate,
        null,
      )
      if (res.changes === 1) {
        s.holdOne.run(m.ts, arrival, stream, m.seq, topicId)
        arrival++
        accepted++
        late += isLate
      }
    }
    if (arrival !== meta.next_arrival) {
      s.setArrival.run(arrival)
      s.arrivalBlocksSince.run(meta.next_arrival)
    }
    const duplicates = batch.messages.length - accepted
    this.upsertNodeRow(batch, ctx, accepted, duplicates, late)
    return { accepted, duplicates, late }
  }

  protected upsertNodeRow(
    batch: BatchBody,
    ctx: IngestContext,
    received: number,
    duplicates: number,
    late: number,
  ): void {
    this.stmts.upsertNode.run({
      node: batch.node,
      epoch: batch.epoch,
      direct: batch.direct ? 1 : 0,
      now: ctx.now,
      lastSync: batch.messages.length > 0 ? ctx.now : null,
      skew: Math.round(batch.clock - ctx.now),
      clock: batch.clock,
      pending: batch.backlog.pending,
      bytes: batch.backlog.bytes,
      oldest: batch.backlog.oldestTs ?? null,
      ...lowMarkOf(batch),
      unacked: batch.backlog.unacked?.batch ?? null,
      batch: batch.batch,
      stats: batch.stats === undefined ? null : JSON.stringify(batch.stats),
      received,
      duplicates,
      late,
      batches: 1,
      maxSeq: maxSeqOf(batch),
    })
  }

  protected releaseSync(ctx: IngestContext): ReleaseResult {
    const s = this.stmts
    const meta = s.meta.get()!
    const live = s.liveLowMark.get(liveSince(ctx), holdFloor(ctx))!
    let candidate: number | null
    if (live.n > 0) candidate = live.lm
    else {
      // No live edge node holds anything back: release everything held.
      const held = s.maxHeldTs.get()!.m
      candidate = held === null ? null : held + 1
    }
    let watermark = meta.watermark
    if (candidate !== null && (watermark === null || candidate > watermark)) watermark = candidate
    let released = 0
    if (watermark !== null) {
      released = s.releaseUpTo.run(meta.next_position, watermark).changes
      if (released > 0) {
        s.laterSince.run(meta.next_position)
        s.eventBlocksSince.run(meta.next_position)
        s.dropHeld.run(watermark)
      }
    }
    if (released > 0 || watermark !== meta.watermark)
      s.setRelease.run(watermark, meta.next_position + released)
    return { released, watermark }
  }

  protected run<T>(fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('the broker store is closed'))
    try {
      return Promise.resolve(fn())
    } catch (err) {
      return Promise.reject(mapError(err))
    }
  }

  ingest(batch: BatchBody, ctx: IngestContext): Promise<BatchAck> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('the broker store is closed'))
    return new Promise((resolve, reject) => {
      this.queue.push({ batch, ctx, resolve, reject })
      this.scheduleFlush()
    })
  }

  release(ctx: IngestContext): Promise<ReleaseResult> {
    return this.run(() => this.releaseTx.immediate(ctx))
  }
}
