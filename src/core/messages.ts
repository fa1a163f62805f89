/**
 * What is in the outbox, for an operator (`rmq messages`, docs/storage.md
 * "Looking inside"): list stored messages by status, topic filter and event
 * time, or show one. The outbox is opened read-only, so a listing never
 * blocks or slows a running publish or sync.
 */
import type { LoadedConfig } from './config/load.js'
import type { BrowsedMessage, BrowseQuery } from './storage/driver.js'
import { topicFilterProblem, topicMatcher } from '../protocol/topic-filter.js'
import { UsageError, ValidationError } from '../shared/errors.js'
import { parseTimestamp } from '../shared/units.js'
import { openOutbox } from './outbox.js'
import { edgeNow } from '../shared/clock.js'

export const MESSAGE_STATUSES = ['pending', 'sent', 'expired', 'all'] as const

export interface ListMessagesOptions {
  status?: BrowseQuery['status']
  /** MQTT-style filter; default all. */
  topic?: string
  /** Event time (ts) from, inclusive: ISO 8601 or epoch ms. */
  since?: string
  /** Event time until, exclusive. */
  until?: string
  limit?: number
  /** `desc` (newest first, the default) or `asc`. */
  order?: 'asc' | 'desc'
}

function time(flag: string, input: string | undefined): number | undefined {
  if (input === undefined) return undefined
  const t = parseTimestamp(input)
  if (t === undefined)
    throw new UsageError(`--${flag} ${JSON.stringify(input)} is not a time`, {
      suggestion: 'give an ISO 8601 time such as 2026-12-03T12:00:00Z, or epoch milliseconds',
    })
  return t
}

async function withOutbox<T>(
  loaded: LoadedConfig,
  fn: (d: Awaited<ReturnType<typeof openOutbox>>) => Promise<T>,
) {
  const driver = await openOutbox(loaded.config, loaded.cwd, { readOnly: true })
  try {
    return await fn(driver)
  } finally {
    await driver.close()
  }
}

/** The driver query of `o`; a bad filter or limit is a UsageError naming the flag. */
export function browseQuery(o: ListMessagesOptions = {}): BrowseQuery {
  if (o.topic !== undefined) {
    const problem = topicFilterProblem(o.topic)
    if (problem)
      throw new UsageError(`--topic ${JSON.stringify(o.topic)}: ${problem}`, {
        suggestion: 'use an MQTT filter such as plant/+/temp or plant/#',
      })
  }
  const limit = o.limit ?? 20
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > 100_000)
    throw new UsageError(`--limit ${o.limit} is out of range`, { suggestion: 'use 1..100000' })
  return {
    status: o.status ?? 'all',
    since: time('since', o.since),
    until: time('until', o.until),
    order: o.order ?? 'desc',
    limit,
    now: edgeNow(),
    match: o.topic === undefined || o.topic === '#' ? undefined : topicMatcher(o.topic),
  }
}

export async function listMessages(
  loaded: LoadedConfig,
  o: ListMessagesOptions = {},
): Promise<BrowsedMessage[]> {
  const query = browseQuery(o)
  return withOutbox(loaded, (d) => d.browse(query))
}

export async function showMessage(loaded: LoadedConfig, seq: number): Promise<BrowsedMessage> {
  if (!Number.isSafeInteger(seq) || seq < 1)
    throw new UsageError(`SEQ must be a positive integer`, { suggestion: 'take it from `rmq messages`' })
  const [m] = await withOutbox(loaded, (d) =>
    d.browse({ status: 'all', order: 'asc', afterSeq: seq - 1, limit: 1, now: edgeNow() }),
  )
  if (!m || m.seq !== seq)
    throw new ValidationError(`no message with seq ${seq} in the outbox`, {
      suggestion:
        'it may have been removed by cleanup (sent, expired or dropped); list what is there with `rmq messages --status all`',
    })
  return m
}

/** A payload as text when it is printable UTF-8, else as hex. */
export function payloadText(payload: Buffer, max = Infinity): { text: string; enc: 'utf8' | 'hex' } {
  const s = payload.toString('utf8')
  // Control characters other than tab and newlines make it binary (printed as hex).
  // eslint-disable-next-line no-control-regex
  const printable = Buffer.from(s, 'utf8').equals(payload) && !/[\u0000-\u0008\u000e-\u001f\u007f]/.test(s)
  const text = printable ? s : payload.toString('hex')
  return { text: text.length > max ? text.slice(0, max - 1) + '…' : text, enc: printable ? 'utf8' : 'hex' }
}

/** A listed message as JSON (`--json`): the payload as text or hex, times as ISO 8601 too. */
export interface MessageRecord {
  seq: number
  status: BrowsedMessage['status']
  topic: string
  ts: number
  tsIso: string | null
  arrivedAt: number
  expiresAt: number | null
  sentAt: number | null
  sentAtIso: string | null
  priority: number
  contentType: string | null
  headers: Record<string, string> | null
  attempts: number
  size: number
  payload: string
  enc: 'utf8' | 'hex'
}

export function messageRecord(
  m: BrowsedMessage,
  payload: { text: string; enc: 'utf8' | 'hex' },
): MessageRecord {
  const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString())
  return {
    seq: m.seq,
    status: m.status,
    topic: m.topic,
    ts: m.ts,
    tsIso: iso(m.ts),
    arrivedAt: m.arrivedAt,
    expiresAt: m.expiresAt,
    sentAt: m.sentAt,
    sentAtIso: iso(m.sentAt),
    priority: m.priority,
    contentType: m.contentType,
    headers: m.headers,
    attempts: m.attempts,
    size: m.size,
    payload: payload.text,
    enc: payload.enc,
  }
}
