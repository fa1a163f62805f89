/**
 * A node's reported `stats`, reduced to the fixed fields the status API, the
 * alert rules and /metrics read (docs/monitoring.md "Where the numbers come
 * from"). The batches route reduces every accepted report before the store
 * keeps it, so the store's `stats` column holds this compact form (a few
 * hundred bytes, whatever the node sent within the schema's 16 KiB), with no
 * change to the store's schema. Reading parses a row once per report: the
 * parsed form is cached by (node, last contact) and shared, frozen, by every
 * status read and scrape until the node's next accepted request.
 */

/** Counters: non-negative integers (anything else is dropped, not stored). */
const SYNC_COUNTS = [
  'attempts',
  'successes',
  'failures',
  'batches',
  'heartbeats',
  'messagesSent',
  'bytesRaw',
  'bytesWire',
] as const
/** Times, epoch ms, or null. */
const SYNC_TIMES = ['lastAttemptAt', 'lastSuccessAt', 'lastErrorAt'] as const
const STORAGE_COUNTS = [
  'pending',
  'pendingBytes',
  'totalMessages',
  'totalBytes',
  'maxBytes',
  'maxMessages',
  'fileBytes',
  'appendedTotal',
  'sentTotal',
  'expiredTotal',
  'expiredPending',
  'droppedTotal',
] as const
const BACKOFF_COUNTS = ['failures', 'nextAttemptAt', 'delayMs', 'since'] as const
/** The schema allows texts of 500 characters; a last error needs no more. */
const TEXT_MAX = 500

export type ReportedStats = {
  sync?: Record<string, number | string | null | Record<string, number | string>>
  storage?: Record<string, number>
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0

function counts(from: Record<string, unknown>, keys: readonly string[], to: Record<string, unknown>): void {
  for (const k of keys) if (isCount(from[k])) to[k] = from[k]
}

/**
 * The fixed fields of a report: the known counters (non-negative integers),
 * times (or null), the last error (a text, at most 500 characters, or null)
 * and the backoff (its counters and reason, or null). Unknown fields,
 * negative or fractional counters and wrong types are left out.
 */
export function compactStats(stats: unknown): ReportedStats {
  const out: ReportedStats = {}
  const sync = obj(obj(stats)?.sync)
  if (sync) {
    const s: Record<string, unknown> = {}
    counts(sync, SYNC_COUNTS, s)
    for (const k of SYNC_TIMES) if (isCount(sync[k]) || sync[k] === null) s[k] = sync[k]
    if (typeof sync.lastError === 'string') s.lastError = sync.lastError.slice(0, TEXT_MAX)
    else if (sync.lastError === null) s.lastError = null
    const backoff = obj(sync.backoff)
    if (backoff) {
      const b: Record<string, unknown> = {}
      counts(backoff, BACKOFF_COUNTS, b)
      if (typeof backoff.reason === 'string') b.reason = backoff.reason.slice(0, TEXT_MAX)
      s.backoff = b
    } else if (sync.backoff === null) s.backoff = null
    out.sync = s as ReportedStats['sync']
  }
  const storage = obj(obj(stats)?.storage)
  if (storage) {
    const s: Record<string, unknown> = {}
    counts(storage, STORAGE_COUNTS, s)
    out.storage = s as ReportedStats['storage']
  }
  return out
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object') {
    for (const x of Object.values(v)) deepFreeze(x)
    Object.freeze(v)
  }
  return v
}

interface Parsed {
  lastContact: number
  raw: string
  stats: Record<string, unknown>
}

/** Parsed reports by node; a node's entry is replaced by its next report. Bounded: cleared when full. */
const parsed = new Map<string, Parsed>()
const PARSED_MAX = 100_000

/**
 * The stats of a node row (`raw`: the stored column) as the store keeps
 * them, parsed once per (node, last contact) and shared (frozen) until the
 * node reports again. A column that is not JSON (never written by a broker)
 * reads as no stats.
 */
export function storedStats(
  node: string,
  lastContact: number,
  raw: string | null,
): Record<string, unknown> | null {
  if (raw === null) return null
  const hit = parsed.get(node)
  if (hit && hit.lastContact === lastContact && hit.raw === raw) return hit.stats
  let stats: Record<string, unknown>
  try {
    stats = deepFreeze(JSON.parse(raw) as Record<string, unknown>)
  } catch {
    return null
  }
  if (parsed.size >= PARSED_MAX) parsed.clear()
  parsed.set(node, { lastContact, raw, stats })
  return stats
}
