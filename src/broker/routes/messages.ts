import { Readable } from 'node:stream'
import type { FastifyPluginAsync } from 'fastify'
import type { ConsumedMessage, MessagesPage } from '../../protocol/messages.js'
import { messageId } from '../../protocol/batch.js'
import { HttpError } from '../http-error.js'
import { limitOf, orderingContext } from '../options.js'
import type { BrokerStore, ReadOrder, ReadResult, StoredMessage } from '../store/types.js'
import { topicFilterProblem } from '../../protocol/topic-filter.js'

export const MAX_LIMIT = 10_000
export const MAX_WAIT_MS = 60_000
/** Long-polls re-read the store this often, to see commits of other broker processes. */
const POLL_MS = 250
/** Work a request spends continuing a filtered read that stopped before the head, at least (ms). */
const SCAN_BUDGET_MS = 2000

function toConsumed(m: StoredMessage, order: ReadOrder): ConsumedMessage {
  return {
    id: messageId(m.node, m.epoch, m.seq),
    node: m.node,
    epoch: m.epoch,
    seq: m.seq,
    topic: m.topic,
    ts: m.ts,
    position: order === 'event' ? m.position! : m.arrival,
    late: m.late,
    payload: m.payload,
    enc: m.enc,
    contentType: m.contentType,
    priority: m.priority,
    expiresAt: m.expiresAt,
    headers: m.headers,
    receivedAt: m.receivedAt,
  }
}

/** Bytes a message counts for against a page's maxBytes: its payload and topic as stored, plus the JSON around them. */
export function pageBytesOf(m: StoredMessage): number {
  let n = m.payload.length + m.topic.length + MESSAGE_OVERHEAD
  if (m.headers) for (const k in m.headers) n += k.length + m.headers[k].length + 6
  return n
}
const MESSAGE_OVERHEAD = 320

/**
 * One page of at most `limit` messages and about `maxBytes` (always at least
 * one message, like Kafka's fetch.max.bytes). The store is read in chunks so
 * that large messages are not loaded far past the cap: the first chunk is as
 * many messages as fit if each were of the largest size a batch may carry,
 * the next ones are sized from the messages seen (growing at most 8-fold).
 * A page cut by bytes ends at its last message (`next` its position,
 * `more: true`), so no message is skipped.
 */
async function readPage(
  store: BrokerStore,
  q: { order: ReadOrder; after: number; topic: string },
  limit: number,
  maxBytes: number,
  messageBytes: number,
): Promise<ReadResult> {
  const out: StoredMessage[] = []
  let bytes = 0
  let after = q.after
  let chunk = Math.min(limit, Math.max(1, Math.floor(maxBytes / (messageBytes + MESSAGE_OVERHEAD))))
  for (;;) {
    const page = await store.read({ ...q, after, limit: chunk })
    for (const m of page.messages) {
      const size = pageBytesOf(m)
      if (out.length > 0 && bytes + size > maxBytes) {
        const last = out[out.length - 1]
        return {
          ...page,
          messages: out,
          next: q.order === 'event' ? last.position! : last.arrival,
          more: true,
        }
      }
      out.push(m)
      bytes += size
    }
    if (page.messages.length < chunk || !page.more || out.length >= limit) return { ...page, messages: out }
    after = page.next
    const fit = Math.floor(((maxBytes - bytes) * out.length) / Math.max(1, bytes))
    chunk = Math.max(1, Math.min(limit - out.length, chunk * 8, fit + 1))
  }
}

/** The page as JSON, written in pieces of about 64 KiB rather than one string (a page may be large). */
function* pageJson(head: { order: ReadOrder }, messages: ConsumedMessage[], rest: object): Generator<string> {
  let buf = `{"order":${JSON.stringify(head.order)},"messages":[`
  for (let i = 0; i < messages.length; i++) {
    buf += (i > 0 ? ',' : '') + JSON.stringify(messages[i])
    if (buf.length >= 65_536) {
      yield buf
      buf = ''
    }
  }
  const tail = JSON.stringify(rest)
  yield buf + (tail === '{}' ? ']}' : `],${tail.slice(1)}`)
}

function intParam(q: Record<string, string | undefined>, name: string, def: number, max: number): number {
  const raw = q[name]
  if (raw === undefined || raw === '') return def
  if (!/^\d+$/.test(raw) || Number(raw) > max)
    throw new HttpError(
      400,
      'INVALID_QUERY',
      `${name} must be an integer from 0 to ${max}, got ${JSON.stringify(raw)}`,
    )
  return Number(raw)
}

export function parseOrder(raw: string | undefined): ReadOrder {
  if (raw === undefined || raw === '' || raw === 'event') return 'event'
  if (raw === 'arrival') return 'arrival'
  throw new HttpError(400, 'INVALID_QUERY', `order must be event or arrival, got ${JSON.stringify(raw)}`)
}

/**
 * GET /v1/messages?topic=&after=&limit=&wait=&order=event|arrival&group=
 * Without `after`, a `group` starts from its committed position. GET /v1/heads
 * gives the current stream heads (for starting at "now"). A page says whether
 * it stopped before the head (`more`); an event-order page at the head says
 * what is held behind the watermark (`held`). docs/protocol.md.
 */
const messages: FastifyPluginAsync = async (app) => {
  app.get('/v1/messages', { config: { permission: 'messages:read' } }, async (req, reply) => {
    const t0 = performance.now()
    const q = req.query as Record<string, string | undefined>
    const { store, notifier } = app.broker
    const order = parseOrder(q.order)
    const topic = q.topic === undefined || q.topic === '' ? '#' : q.topic
    const problem = topicFilterProblem(topic)
    if (problem) throw new HttpError(400, 'INVALID_QUERY', `topic: ${problem}`)
    const limit = Math.max(1, intParam(q, 'limit', 100, MAX_LIMIT))
    // maxBytes: the client's own bound, never above the broker's (broker.limits.pageBytes).
    const pageBytes = limitOf(app.broker.options.limits, 'pageBytes')
    const maxBytes = Math.max(
      1,
      Math.min(pageBytes, intParam(q, 'maxBytes', pageBytes, Number.MAX_SAFE_INTEGER)),
    )
    const messageBytes = limitOf(app.broker.options.limits, 'messageBytes')
    const wait = intParam(q, 'wait', 0, MAX_WAIT_MS)
    let after: number
    if (q.after !== undefined && q.after !== '') after = intParam(q, 'after', 0, Number.MAX_SAFE_INTEGER)
    else if (q.group) after = (await store.groupPosition(q.group, order)) ?? 0
    else after = 0
    // A filtered read that stops before the head (`more`) is continued here at once, for at least
    // SCAN_BUDGET_MS (or the long-poll's wait), so clients rarely see an empty page with more: true.
    const started = Date.now()
    let waited = 0
    const deadline = started + wait
    const scanUntil = Math.max(deadline, started + SCAN_BUDGET_MS)
    for (;;) {
      const page = await readPage(store, { order, after, topic }, limit, maxBytes, messageBytes)
      const now = Date.now()
      const done =
        page.messages.length > 0 || notifier.isClosed || (page.more ? now >= scanUntil : now >= deadline)
      if (done) {
        const rest: Omit<MessagesPage, 'order' | 'messages'> = {
          next: page.next,
          more: page.more,
          headPosition: page.head,
          watermark: page.watermark,
        }
        if (order === 'event' && !page.more) {
          const { options, now: clock } = app.broker
          rest.held = await store.heldBack({ topic, ...orderingContext(options, clock()) })
        }
        // The store's work for this page (without the long-poll's waiting), for benchmarks and operators.
        reply.header('server-timing', `read;dur=${(performance.now() - t0 - waited).toFixed(2)}`)
        const consumed = page.messages.map((m) => toConsumed(m, order))
        return reply
          .type('application/json; charset=utf-8')
          .send(Readable.from(pageJson({ order }, consumed, rest), { objectMode: false }))
      }
      after = page.next
      // Reads are synchronous on SQLite: let other requests run between two of them.
      if (page.more) await new Promise((resolve) => setImmediate(resolve))
      else {
        const w0 = performance.now()
        await notifier.wait(Math.min(POLL_MS, deadline - now))
        waited += performance.now() - w0
      }
    }
  })

  app.get('/v1/heads', { config: { permission: 'heads:read' } }, async () => app.broker.store.heads())
}
export default messages
