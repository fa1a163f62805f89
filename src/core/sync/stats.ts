/**
 * Sync statistics kept in the outbox (counters and `sync.last`), for `rmq
 * status` and for the `stats` field every request carries (docs/monitoring.md).
 */
import { readBackoff } from '../backoff.js'
import type { StorageDriver, StorageStats } from '../storage/driver.js'
import { LAST_KEY, SYNC_COUNTERS, type LastState, type Prepared, type SyncStats } from './types.js'

/** Sync statistics kept in the store, for `rmq status` and the `stats` field of each batch. */
export async function readSyncStats(driver: StorageDriver): Promise<SyncStats> {
  const c = await driver.getCounters()
  const last = await readLast(driver)
  const n = (k: string) => c[k] ?? 0
  return {
    attempts: n(SYNC_COUNTERS.attempts),
    successes: n(SYNC_COUNTERS.successes),
    failures: n(SYNC_COUNTERS.failures),
    batches: n(SYNC_COUNTERS.batches),
    heartbeats: n(SYNC_COUNTERS.heartbeats),
    messagesSent: n(SYNC_COUNTERS.messagesSent),
    bytesRaw: n(SYNC_COUNTERS.bytesRaw),
    bytesWire: n(SYNC_COUNTERS.bytesWire),
    ...last,
    backoff: (await readBackoff(driver)) ?? null,
  }
}

export async function readLast(driver: StorageDriver): Promise<LastState> {
  const empty: LastState = { lastAttemptAt: null, lastSuccessAt: null, lastError: null, lastErrorAt: null }
  const raw = await driver.getState(LAST_KEY)
  if (!raw) return empty
  try {
    return { ...empty, ...(JSON.parse(raw) as Partial<LastState>) }
  } catch {
    return empty
  }
}

/**
 * The `stats` of a request: the sync counters as they stand once this
 * request (`messages` of them) and the requests in flight before it
 * (`flying`) are accepted. The broker keeps the stats of accepted requests
 * only, so what it keeps includes the run in progress; the same rule makes
 * `backlog` count the batches in flight as delivered. Only when a request
 * in flight fails while a later one is accepted (pipelining) do they count
 * one success too many, until the next report. Byte counters leave this
 * request out (it is being encoded). `at`: the request's clock.
 * docs/monitoring.md.
 */
export async function requestStats(
  driver: StorageDriver,
  s: StorageStats,
  messages: number,
  flying: readonly Prepared[],
  at: number,
): Promise<Record<string, unknown>> {
  const stored = await readSyncStats(driver)
  const requests = flying.length + 1
  const sync = { ...stored, attempts: stored.attempts + requests, successes: stored.successes + requests }
  sync.batches += flying.length + (messages > 0 ? 1 : 0)
  if (messages === 0) sync.heartbeats++
  sync.messagesSent += messages
  for (const f of flying) {
    sync.messagesSent += f.seqs.length
    sync.bytesRaw += f.encoded.rawBytes
    sync.bytesWire += f.encoded.wireBytes
  }
  sync.lastAttemptAt = sync.lastSuccessAt = at
  return {
    // Accepted, this request ends any backoff in force.
    sync: { ...sync, backoff: null },
    storage: {
      pending: s.pending,
      pendingBytes: s.pendingBytes,
      totalMessages: s.totalMessages,
      totalBytes: s.totalBytes,
      maxBytes: s.maxBytes,
      maxMessages: s.maxMessages,
      fileBytes: s.fileBytes,
      appendedTotal: s.appendedTotal,
      sentTotal: s.sentTotal,
      expiredTotal: s.expiredTotal,
      expiredPending: s.expiredPending ?? 0,
      droppedTotal: s.droppedTotal,
    },
  }
}
