/**
 * A storage driver as a third party writes one: plain JavaScript, the basic
 * StorageDriver methods only (no fast path), importing nothing but 'rmq'.
 * test/e2e/package.test.ts copies it into a project that installed the
 * packed rmq and runs `storageConformance` from 'rmq/testing' on it.
 * `createBrokenStorage` has one plausible bug (seqs restart once every
 * message is gone), so that run must fail.
 */
import { randomUUID } from 'node:crypto'
import { StorageFullError, StorageError, accountedSize } from 'rmq'

function createListStorage(options, { reuseSeqs = false } = {}) {
  const { maxBytes, maxMessages, overflow } = options
  const clock = options.now ?? Date.now
  let messages = [] // in seq order
  let lastSeq = 0
  const state = new Map()
  const counters = {}
  const leases = new Map()
  const totals = { appended: 0, sent: 0, expired: 0, dropped: 0 }
  const isLive = (m, now) => m.status === 'pending' && (m.expiresAt === null || m.expiresAt > now)
  const used = () => messages.reduce((n, m) => n + m.size, 0)
  const pending = () => messages.filter((m) => m.status === 'pending').length
  const copy = (m) => ({ ...m, payload: Buffer.from(m.payload), headers: m.headers && { ...m.headers } })
  /** Deletes `gone`; a pending message among them counts as expired (past its TTL at `now`) or dropped. */
  const remove = (gone, now) => {
    for (const m of gone)
      if (m.status === 'pending') totals[m.expiresAt !== null && m.expiresAt <= now ? 'expired' : 'dropped']++
    messages = messages.filter((m) => !gone.has(m))
  }
  const full = (bytes, count) =>
    new StorageFullError(`the outbox is full: ${used()} of ${maxBytes} bytes used; nothing was stored`, {
      suggestion: 'run `rmq sync` to send pending messages, or raise storage.maxBytes',
      details: {
        reason: 'limit',
        usedBytes: used(),
        maxBytes,
        messages: messages.length,
        pending: pending(),
        incoming: { bytes, count },
      },
    })
  /** Frees room for `bytes`/`count` more: expired, then sent, then (drop-oldest) the oldest pending. */
  function makeRoom(bytes, count, strict) {
    const now = clock()
    let needBytes = used() + bytes - maxBytes
    let needCount = maxMessages > 0 ? messages.length + count - maxMessages : 0
    if (needBytes <= 0 && needCount <= 0) return 0
    if (strict && (bytes > maxBytes || (maxMessages > 0 && count > maxMessages))) throw full(bytes, count)
    const gone = new Set()
    const expired = (m) => m.expiresAt !== null && m.expiresAt <= now
    const order = [
      ...messages.filter(expired),
      ...messages.filter((m) => m.status === 'sent' && !expired(m)).sort((a, b) => a.sentAt - b.sentAt),
      ...(overflow === 'drop-oldest' ? messages.filter((m) => m.status === 'pending' && !expired(m)) : []),
    ]
    for (const m of order) {
      if (needBytes <= 0 && needCount <= 0) break
      gone.add(m)
      needBytes -= m.size
      needCount--
    }
    if (strict && (needBytes > 0 || needCount > 0)) throw full(bytes, count)
    const dropped = [...gone].filter((m) => m.status === 'pending' && !expired(m)).length
    remove(gone, now)
    return dropped
  }
  return {
    name: reuseSeqs ? 'list-broken' : 'list',
    capabilities: { durable: false, multiProcess: false },
    epoch: randomUUID(),
    async append(batch) {
      if (batch.length === 0) return { seqs: [], dropped: 0 }
      const now = clock()
      const sizes = batch.map((m) => accountedSize(m, m.headers ? JSON.stringify(m.headers) : null))
      const dropped = makeRoom(
        sizes.reduce((a, b) => a + b, 0),
        batch.length,
        true,
      )
      if (reuseSeqs) lastSeq = messages.length ? messages[messages.length - 1].seq : 0 // the bug
      const seqs = batch.map((m, i) => {
        const seq = ++lastSeq
        messages.push({
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
      totals.appended += batch.length
      return { seqs, dropped }
    },
    async nextBatch({ limit, maxBytes: cap, order, now }) {
      const dir = order === 'newest' ? -1 : 1
      const live = messages
        .filter((m) => isLive(m, now))
        .sort((a, b) => b.priority - a.priority || dir * (a.seq - b.seq))
      const out = []
      let bytes = 0
      for (const m of live) {
        if (out.length >= limit || (out.length > 0 && bytes + m.size > cap)) break
        bytes += m.size
        out.push(copy(m))
      }
      return out
    },
    async markSent(seqs, sentAt) {
      const wanted = new Set(seqs)
      let n = 0
      for (const m of messages) {
        if (!wanted.has(m.seq) || m.status !== 'pending') continue
        Object.assign(m, { status: 'sent', sentAt })
        n++
      }
      totals.sent += n
      return n
    },
    async recordAttempt(seqs) {
      for (const m of messages) if (seqs.includes(m.seq)) m.attempts += seqs.filter((s) => s === m.seq).length
    },
    async purge({ sentBefore, now, limit, dryRun }) {
      const sent = messages
        .filter((m) => m.status === 'sent' && m.sentAt < sentBefore)
        .sort((a, b) => a.sentAt - b.sentAt)
      const expired = messages.filter(
        (m) => m.status === 'pending' && m.expiresAt !== null && m.expiresAt <= now,
      )
      const gone = [...sent, ...expired].slice(0, limit)
      const res = { sentDeleted: 0, expiredDeleted: 0, bytesFreed: 0 }
      for (const m of gone) {
        res[m.status === 'sent' ? 'sentDeleted' : 'expiredDeleted']++
        res.bytesFreed += m.size
      }
      if (!dryRun) remove(new Set(gone), now)
      return res
    },
    async enforceLimits() {
      return { dropped: makeRoom(0, 0, false) }
    },
    async compact() {
      return { fileBytesBefore: null, fileBytesAfter: null }
    },
    async stats(now) {
      const live = messages.filter((m) => isLive(m, now))
      const oldest = live.reduce((o, m) => (o === null || m.ts < o ? m.ts : o), null)
      return {
        epoch: this.epoch,
        pending: live.length,
        pendingBytes: live.reduce((n, m) => n + m.size, 0),
        oldestPendingTs: oldest,
        oldestPendingArrivedAt: live[0]?.arrivedAt ?? null,
        sentKept: messages.length - pending(),
        totalMessages: messages.length,
        totalBytes: used(),
        fileBytes: null,
        appendedTotal: totals.appended,
        sentTotal: totals.sent,
        expiredTotal: totals.expired,
        expiredPending: pending() - live.length,
        droppedTotal: totals.dropped,
        maxBytes,
        maxMessages,
      }
    },
    async getState(key) {
      return state.get(key)
    },
    async setState(key, value) {
      if (key === 'epoch') throw new StorageError('the outbox epoch is fixed when the store is created')
      if (value === undefined) state.delete(key)
      else state.set(key, value)
    },
    async addCounters(deltas) {
      for (const [k, v] of Object.entries(deltas)) counters[k] = (counters[k] ?? 0) + v
    },
    async getCounters() {
      return { ...counters }
    },
    async acquireLease(name, owner, ttlMs, now) {
      const l = leases.get(name)
      if (l && l.owner !== owner && l.expiresAt > now) return false
      leases.set(name, { owner, expiresAt: now + ttlMs })
      return true
    },
    async releaseLease(name, owner) {
      if (leases.get(name)?.owner === owner) leases.delete(name)
    },
    async close() {},
  }
}

export const createBrokenStorage = (options) => createListStorage(options, { reuseSeqs: true })
export default (options) => createListStorage(options)
