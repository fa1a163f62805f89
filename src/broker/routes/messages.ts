import type { FastifyPluginAsync } from 'fastify'
import type { ConsumedMessage, MessagesPage } from '../../core/consumer.js'
import { messageId } from '../../core/protocol.js'
import { HttpError } from '../http-error.js'
import type { ReadOrder, StoredMessage } from '../store/types.js'
import { topicFilterProblem } from '../topic-filter.js'

export const MAX_LIMIT = 10_000
export const MAX_WAIT_MS = 60_000
/** Long-polls re-read the store this often, to see commits of other broker processes. */
const POLL_MS = 250

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
 * gives the current stream heads (for starting at "now").
 */
const messages: FastifyPluginAsync = async (app) => {
  app.get('/v1/messages', async (req): Promise<MessagesPage> => {
    const q = req.query as Record<string, string | undefined>
    const { store, notifier } = app.broker
    const order = parseOrder(q.order)
    const topic = q.topic === undefined || q.topic === '' ? '#' : q.topic
    const problem = topicFilterProblem(topic)
    if (problem) throw new HttpError(400, 'INVALID_QUERY', `topic: ${problem}`)
    const limit = Math.max(1, intParam(q, 'limit', 100, MAX_LIMIT))
    const wait = intParam(q, 'wait', 0, MAX_WAIT_MS)
    let after: number
    if (q.after !== undefined && q.after !== '') after = intParam(q, 'after', 0, Number.MAX_SAFE_INTEGER)
    else if (q.group) after = (await store.groupPosition(q.group, order)) ?? 0
    else after = 0
    const deadline = Date.now() + wait
    for (;;) {
      const page = await store.read({ order, after, limit, topic })
      const remaining = deadline - Date.now()
      if (page.messages.length > 0 || remaining <= 0 || notifier.isClosed) {
        const heads = await store.heads()
        return {
          order,
          messages: page.messages.map((m) => toConsumed(m, order)),
          next: page.next,
          watermark: heads.watermark,
        }
      }
      after = page.next
      await notifier.wait(Math.min(POLL_MS, remaining))
    }
  })

  app.get('/v1/heads', async () => app.broker.store.heads())
}
export default messages
