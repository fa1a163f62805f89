/**
 * An outbox in process memory: for tests, examples and producers that accept
 * losing unsent messages when the process exits. Same semantics as `sqlite`
 * (the conformance suite checks both); not durable, one process only.
 */
import { randomUUID } from 'node:crypto'
import { StorageError } from '../../shared/errors.js'
import { accountedSize } from '../../core/storage/size.js'
import { limitError, type Fullness } from './common.js'
import type {
  AppendResult,
  BatchQuery,
  BrowseQuery,
  BrowsedMessage,
  NewMessage,
  PurgeQuery,
  PurgeResult,
  StorageCapabilities,
  StorageDriver,
  StorageOptions,
  StorageStats,
  StoredMessage,
} from '../../core/storage/driver.js'

export class MemoryStorage implements StorageDriver {
  readonly name = 'memory'
  readonly capabilities: StorageCapabilities = { durable: false, multiProcess: false }
  epoch = randomUUID()
  private readonly now: () => number
  /** Insertion order is seq order. */
  private readonly messages = new Map<number, StoredMessage>()
  private lastSeq = 0
  private readonly state = new Map<string, string>()
  private readonly counters = new Map<string, number>()
  private readonly leases = new Map<string, { owner: string; expiresAt: number }>()
  private readonly totals = { appended: 0, sent: 0, expired: 0, dropped: 0 }
  private closed = false

  constructor(private readonly opts: StorageOptions) {
    this.now = opts.now ?? Date.now
  }

  private check(): void {
    if (this.closed) throw new StorageError('the memory outbox is closed')
  }

  private fullness(): Fullness {
    let totalBytes = 0
    let pending = 0
    for (const m of this.messages.values()) {
      totalBytes += m.size
      if (m.status === 'pending') pending++
    }
    return { totalMessages: this.messages.size, totalBytes, pending }
  }

  private delete(m: StoredMessage, counter?: 'expired' | 'dropped'): void {
    this.messages.delete(m.seq)
    if (counter && m.status === 'pending') this.totals[counter]++
  }

  /** Same order as sqlite: expired, then sent, then (drop-oldest) oldest pending. */
  private makeRoom(incoming: { messages: number; bytes: number }, now: number, strict: boolean): number {
    const { maxBytes, maxMessages, overflow } = this.opts
    const f = this.fullness()
    let needBytes = f.totalBytes + incoming.bytes - maxBytes
    let needCount = maxMessages > 0 ? f.totalMessages + incoming.messages - maxMessages : 0
    if (needBytes <= 0 && needCount <= 0) return 0
    if (strict && (incoming.bytes > maxBytes || (maxMessages > 0 && incoming.messages > maxMessages)))
      throw limitError(this.opts, f, incoming)
    const victims = new Map<StoredMessage, 'expired' | 'dropped' | undefined>()
    const take = (
      pick: (m: StoredMessage) => boolean,
      counter: 'expired' | 'dropped' | undefined,
      list: StoredMessage[],
    ) => {
      for (const m of list) {
        if (needBytes <= 0 && needCount <= 0) return
        if (!pick(m) || victims.has(m)) continue
        victims.set(m, counter)
        needBytes -= m.size
        needCount--
      }
    }
    const all = [...this.messages.values()]
    take(
      (m) => m.expiresAt !== null && m.expiresAt <= now,
      'expired',
      [...all].sort((a, b) => a.expiresAt! - b.expiresAt!),
    )
    take(
      (m) => m.status === 'sent',
      undefined,
      [...all].sort((a, b) => a.sentAt! - b.sentAt!),
    )
    if (overflow === 'drop-oldest') take((m) => m.status === 'pending', 'dropped', all)
    if (strict && (needBytes > 0 || needCount > 0)) throw limitError(this.opts, f, incoming)
    let dropped = 0
    for (const [m, counter] of victims) {
      if (counter === 'dropped') dropped++
      this.delete(m, counter)
    }
    return dropped
  }

  async append(messages: NewMessage[]): Promise<AppendResult> {
    this.check()
    if (messages.length === 0) return { seqs: [], dropped: 0 }
    const now = this.now()
    const sizes = messages.map((m) => accountedSize(m, m.headers ? JSON.stringify(m.headers) : null))
    const bytes = sizes.reduce((a, b) => a + b, 0)
    const dropped = this.makeRoom({ messages: messages.length, bytes }, now, true)
    const seqs = messages.map((m, i) => {
      const seq = ++this.lastSeq
      this.messages.set(seq, {
        seq,
        topic: m.topic,
        payload: Buffer.from(m.payload),
        contentType: m.contentType ?? null,
        ts: m.ts,
        arrivedAt: now,
        expiresAt: m.expiresAt ?? null,
        priority: m.priority ?? 4,
        headers: m.headers ? { ...m.headers } : null,
        status: 'pending',
        sentAt: null,
        attempts: 0,
        size: sizes[i],
      })
      return seq
    })
    this.totals.appended += messages.length
    return { seqs, dropped }
  }

  private live(now: number): StoredMessage[] {
    return [...this.messages.values()].filter(
      (m) => m.status === 'pending' && (m.expiresAt === null || m.expiresAt > now),
    )
  }

  async nextBatch(q: BatchQuery): Promise<StoredMessage[]> {
    this.check()
    const dir = q.order === 'newest' ? -1 : 1
    const candidates = this.live(q.now).sort((a, b) => b.priority - a.priority || dir * (a.seq - b.seq))
    const out: StoredMessage[] = []
    let bytes = 0
    for (const m of candidates) {
      if (out.length >= q.limit || (out.length > 0 && bytes + m.size > q.maxBytes)) break
      bytes += m.size
      out.push(copy(m))
    }
    return out
  }

  async renewEpoch(): Promise<string> {
    this.check()
    return (this.epoch = randomUUID())
  }

  async browse(q: BrowseQuery): Promise<BrowsedMessage[]> {
    this.check()
    const dir = q.order === 'asc' ? 1 : -1
    const out: BrowsedMessage[] = []
    const all = [...this.messages.values()].sort((a, b) => dir * (a.seq - b.seq))
    for (const m of all) {
      if (out.length >= q.limit) break
      const status =
        m.status === 'pending' && m.expiresAt !== null && m.expiresAt <= q.now ? 'expired' : m.status
      if (q.status !== 'all' && status !== q.status) continue
      if (q.since !== undefined && m.ts < q.since) continue
      if (q.until !== undefined && m.ts >= q.until) continue
      if (q.afterSeq !== undefined && dir * (m.seq - q.afterSeq) <= 0) continue
      if (q.match && !q.match(m.topic)) continue
      out.push({ ...copy(m), status })
    }
    return out
  }

  async markSent(seqs: number[], sentAt: number): Promise<number> {
    this.check()
    let n = 0
    for (const seq of seqs) {
      const m = this.messages.get(seq)
      if (m && m.status === 'pending') {
        m.status = 'sent'
        m.sentAt = sentAt
        n++
      }
    }
    this.totals.sent += n
    return n
  }

  async recordAttempt(seqs: number[]): Promise<void> {
    this.check()
    for (const seq of seqs) {
      const m = this.messages.get(seq)
      if (m) m.attempts++
    }
  }

  async purge(q: PurgeQuery): Promise<PurgeResult> {
    this.check()
    const res: PurgeResult = { sentDeleted: 0, expiredDeleted: 0, bytesFreed: 0 }
    const all = [...this.messages.values()]
    const sent = all
      .filter((m) => m.status === 'sent' && m.sentAt! < q.sentBefore)
      .sort((a, b) => a.sentAt! - b.sentAt!)
    const expired = all
      .filter((m) => m.expiresAt !== null && m.expiresAt <= q.now && !sent.includes(m))
      .sort((a, b) => a.expiresAt! - b.expiresAt!)
    for (const m of [...sent, ...expired].slice(0, q.limit)) {
      if (m.status === 'sent') res.sentDeleted++
      else res.expiredDeleted++
      res.bytesFreed += m.size
      if (!q.dryRun) this.delete(m, 'expired')
    }
    return res
  }

  async enforceLimits(): Promise<{ dropped: number }> {
    this.check()
    return { dropped: this.makeRoom({ messages: 0, bytes: 0 }, this.now(), false) }
  }

  async compact(): Promise<{ fileBytesBefore: number | null; fileBytesAfter: number | null }> {
    return { fileBytesBefore: null, fileBytesAfter: null }
  }

  async stats(now: number): Promise<StorageStats> {
    this.check()
    const f = this.fullness()
    const live = this.live(now)
    let pendingBytes = 0
    let oldestTs: number | null = null
    for (const m of live) {
      pendingBytes += m.size
      if (oldestTs === null || m.ts < oldestTs) oldestTs = m.ts
    }
    return {
      epoch: this.epoch,
      pending: live.length,
      pendingBytes,
      oldestPendingTs: oldestTs,
      oldestPendingArrivedAt: live[0]?.arrivedAt ?? null,
      sentKept: f.totalMessages - f.pending,
      totalMessages: f.totalMessages,
      totalBytes: f.totalBytes,
      fileBytes: null,
      appendedTotal: this.totals.appended,
      sentTotal: this.totals.sent,
      expiredTotal: this.totals.expired,
      expiredPending: f.pending - live.length,
      droppedTotal: this.totals.dropped,
      maxBytes: this.opts.maxBytes,
      maxMessages: this.opts.maxMessages,
    }
  }

  async getState(key: string): Promise<string | undefined> {
    this.check()
    return this.state.get(key)
  }

  async setState(key: string, value: string | undefined): Promise<void> {
    this.check()
    if (key === 'epoch') throw new StorageError('the outbox epoch is fixed when the store is created')
    if (value === undefined) this.state.delete(key)
    else this.state.set(key, value)
  }

  async addCounters(deltas: Record<string, number>): Promise<void> {
    this.check()
    for (const [k, v] of Object.entries(deltas)) this.counters.set(k, (this.counters.get(k) ?? 0) + v)
  }

  async getCounters(): Promise<Record<string, number>> {
    this.check()
    return Object.fromEntries(this.counters)
  }

  async acquireLease(name: string, owner: string, ttlMs: number, now: number): Promise<boolean> {
    this.check()
    const l = this.leases.get(name)
    if (l && l.owner !== owner && l.expiresAt > now) return false
    this.leases.set(name, { owner, expiresAt: now + ttlMs })
    return true
  }

  async releaseLease(name: string, owner: string): Promise<void> {
    this.check()
    if (this.leases.get(name)?.owner === owner) this.leases.delete(name)
  }

  async close(): Promise<void> {
    this.closed = true
  }
}

function copy(m: StoredMessage): StoredMessage {
  return { ...m, payload: Buffer.from(m.payload), headers: m.headers ? { ...m.headers } : null }
}

export function createMemoryStorage(options: StorageOptions): StorageDriver {
  return new MemoryStorage(options)
}

export default createMemoryStorage
