/**
 * A total-queue checker in the manner of Jepsen's: given every publish
 * attempt (acknowledged, failed or unknown) and everything a consumer read,
 * classify each message and check the ordering promises (docs/guarantees.md).
 *
 * - delivered once: read exactly once (acknowledged or unknown attempts).
 * - lost: acknowledged but never read. Must be 0.
 * - duplicated: read more than once. Must be 0.
 * - unexpected: read but never attempted. Must be 0.
 * - phantom: read although its publish failed with a clear error. Must be 0
 *   (a failed publish stores nothing).
 * - unknown attempts (publisher killed) may be read once or not at all.
 * - id mismatch: an acknowledged id (node:epoch:seq) that the broker holds
 *   under another identity. Must be 0.
 * - order (event stream): positions strictly increase; messages not flagged
 *   late are in (ts, node, seq, epoch) order; within one (node, epoch) and
 *   one ts, seq increases.
 */

export type AttemptStatus = 'ok' | 'failed' | 'unknown'

export interface Attempt {
  /** Unique key carried in the payload ({"k": key}). */
  key: string
  node: string
  status: AttemptStatus
  /** The id the publisher printed (acknowledged attempts). */
  id?: string
}

export interface Delivered {
  node: string
  epoch: string
  seq: number
  ts: number
  position: number
  late: boolean
  payload: string
  enc?: string
}

export interface CheckResult {
  attempted: number
  acknowledged: number
  failed: number
  unknown: number
  read: number
  deliveredOnce: number
  /** Unknown attempts that were delivered (once). */
  unknownDelivered: number
  lost: string[]
  duplicated: string[]
  unexpected: string[]
  phantom: string[]
  idMismatch: string[]
  orderViolations: string[]
  late: number
}

/** The key of a delivered message, or undefined when the payload is not from the workload. */
export function keyOf(m: Pick<Delivered, 'payload' | 'enc'>): string | undefined {
  if (m.enc === 'base64') return undefined
  try {
    const v = JSON.parse(m.payload) as { k?: unknown }
    return typeof v?.k === 'string' ? v.k : undefined
  } catch {
    return undefined
  }
}

function cmp(a: Delivered, b: Delivered): number {
  if (a.ts !== b.ts) return a.ts < b.ts ? -1 : 1
  if (a.node !== b.node) return a.node < b.node ? -1 : 1
  if (a.seq !== b.seq) return a.seq < b.seq ? -1 : 1
  if (a.epoch !== b.epoch) return a.epoch < b.epoch ? -1 : 1
  return 0
}

const show = (m: Delivered) => `${m.node}:${m.epoch.slice(0, 8)}:${m.seq}@${m.ts}#${m.position}`

/** Check `stream` (one consumer's read of the event stream, in the order read) against the attempts. */
export function checkQueue(attempts: Iterable<Attempt>, stream: Delivered[]): CheckResult {
  const byKey = new Map<string, Attempt>()
  const res: CheckResult = {
    attempted: 0,
    acknowledged: 0,
    failed: 0,
    unknown: 0,
    read: stream.length,
    deliveredOnce: 0,
    unknownDelivered: 0,
    lost: [],
    duplicated: [],
    unexpected: [],
    phantom: [],
    idMismatch: [],
    orderViolations: [],
    late: 0,
  }
  for (const a of attempts) {
    if (byKey.has(a.key)) throw new Error(`workload bug: key ${a.key} attempted twice`)
    byKey.set(a.key, a)
    res.attempted++
    if (a.status === 'ok') res.acknowledged++
    else if (a.status === 'failed') res.failed++
    else res.unknown++
  }

  const seen = new Map<string, Delivered[]>()
  for (const m of stream) {
    if (m.late) res.late++
    const key = keyOf(m)
    if (key === undefined || !byKey.has(key)) {
      res.unexpected.push(key ?? show(m))
      continue
    }
    const list = seen.get(key)
    if (list) list.push(m)
    else seen.set(key, [m])
  }
  for (const [key, a] of byKey) {
    const got = seen.get(key)
    if (!got) {
      if (a.status === 'ok') res.lost.push(key)
      continue
    }
    if (got.length > 1) res.duplicated.push(`${key} x${got.length}`)
    if (a.status === 'failed') res.phantom.push(key)
    if (got.length === 1 && a.status !== 'failed') {
      res.deliveredOnce++
      if (a.status === 'unknown') res.unknownDelivered++
    }
    if (a.status === 'ok' && a.id) {
      const m = got[0]
      const want = `${m.node}:${m.epoch}:${m.seq}`
      if (a.id !== want) res.idMismatch.push(`${key}: acknowledged ${a.id}, stored as ${want}`)
    }
  }

  // Order.
  let prev: Delivered | undefined
  let prevOnTime: Delivered | undefined
  const lastAtTs = new Map<string, Delivered>()
  for (const m of stream) {
    if (prev && m.position <= prev.position)
      res.orderViolations.push(`position ${m.position} after ${prev.position}`)
    prev = m
    if (!m.late) {
      if (prevOnTime && cmp(prevOnTime, m) >= 0)
        res.orderViolations.push(`event order: ${show(m)} released after ${show(prevOnTime)}`)
      prevOnTime = m
    }
    const stream = `${m.node}\u0000${m.epoch}`
    const last = lastAtTs.get(stream)
    if (last && last.ts === m.ts && last.seq >= m.seq)
      res.orderViolations.push(`per-node order: ${show(m)} after ${show(last)} (same ts)`)
    lastAtTs.set(stream, m)
  }
  return res
}

/** Problems that must never happen, as readable lines (empty: all promises held). */
export function violations(r: CheckResult): string[] {
  const out: string[] = []
  const list = (name: string, xs: string[]) => {
    if (xs.length > 0)
      out.push(`${name}: ${xs.length} (${xs.slice(0, 5).join(', ')}${xs.length > 5 ? ', …' : ''})`)
  }
  list('lost', r.lost)
  list('duplicated', r.duplicated)
  list('unexpected', r.unexpected)
  list('phantom (failed publish delivered)', r.phantom)
  list('id mismatch', r.idMismatch)
  list('order violations', r.orderViolations)
  return out
}
