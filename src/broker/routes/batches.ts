import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { failpoint } from '../../shared/failpoints.js'
import { BROKER_FEATURES, topicProblem, type BatchBody } from '../../protocol/batch.js'
import { boundEventTime, DEFAULT_EVENT_TIME_BOUND } from '../event-time.js'
import { compactStats } from '../node-stats.js'
import { HttpError } from '../http-error.js'
import { limitOf, orderingContext } from '../options.js'
import { BASE64_RE, batchAckSchema, batchBodySchema, STATS_MAX_BYTES } from '../schemas.js'

function rateLimit(req: FastifyRequest, reply: FastifyReply, node: string): void {
  const waitMs = req.server.broker.rateLimiter.take(node)
  if (waitMs > 0) {
    throw new HttpError(429, 'RATE_LIMITED', `too many batches from node ${node}; retry later`, {
      'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))),
    })
  }
  void reply
}

/** Decoded size of a payload as sent (a UTF-8 text or base64). */
function payloadBytes(payload: string, enc: 'utf8' | 'base64'): number {
  if (enc === 'utf8') return Buffer.byteLength(payload, 'utf8')
  const pad = payload.endsWith('==') ? 2 : payload.endsWith('=') ? 1 : 0
  return (payload.length / 4) * 3 - pad
}

/** POST /v1/batches: one batch or heartbeat from an edge node (docs/protocol.md). */
const batches: FastifyPluginAsync = async (app) => {
  // Batch requests between their headers and the end of their response: tells the store whether a batch is alone.
  let inProgress = 0
  // The same per node (broker.limits.inFlightPerNode): one node cannot hold many batches in memory at once.
  const perNode = new Map<string, number>()
  const perNodeCap = limitOf(app.broker.options.limits, 'inFlightPerNode')
  /** Count the request against its node until its response ends, or refuse it with 429. */
  const admit = (reply: FastifyReply, node: string) => {
    if (perNodeCap <= 0) return
    const n = (perNode.get(node) ?? 0) + 1
    if (n > perNodeCap)
      throw new HttpError(
        429,
        'TOO_MANY_IN_FLIGHT',
        `node ${node} already has ${perNodeCap} batch request(s) in progress (broker.limits.inFlightPerNode); ` +
          'retry after one of them is answered',
        { 'retry-after': '1' },
      )
    perNode.set(node, n)
    let done = false
    const end = () => {
      if (done) return
      done = true
      const left = (perNode.get(node) ?? 1) - 1
      if (left > 0) perNode.set(node, left)
      else perNode.delete(node)
    }
    reply.raw.once('finish', end).once('close', end)
  }
  app.post(
    '/v1/batches',
    {
      config: { permission: 'batches:write' },
      schema: { body: batchBodySchema, response: { 200: batchAckSchema } },
      // With tokens the node is known before the body is read: refuse early.
      onRequest: async (req, reply) => {
        inProgress++
        // 'finish' (the response is written) comes before the client can send its next batch; 'close' covers aborts.
        let done = false
        const end = () => {
          if (!done) inProgress--
          done = true
        }
        reply.raw.once('finish', end).once('close', end)
        if (req.authNode) {
          rateLimit(req, reply, req.authNode)
          admit(reply, req.authNode)
        }
      },
    },
    async (req, reply) => {
      const body = req.body as BatchBody
      const { store, options, notifier, now } = app.broker
      const messageBytes = limitOf(options.limits, 'messageBytes')
      if (req.authNode !== null && body.node !== req.authNode)
        throw new HttpError(
          403,
          'WRONG_NODE',
          `this ${req.authBy === 'certificate' ? 'client certificate' : 'token'} belongs to node ${req.authNode}, not ${body.node}`,
        )
      if (req.authNode === null) {
        rateLimit(req, reply, body.node)
        admit(reply, body.node)
      }
      // A batch repeats a few topics thousands of times: each is checked once.
      const checkedTopics = new Set<string>()
      // A seq appears once per batch. Batches are mostly ascending, so a Set is built only after a step down.
      let lastSeq = 0
      let seen: Set<number> | undefined
      for (let i = 0; i < body.messages.length; i++) {
        const m = body.messages[i]
        if (m.seq <= lastSeq || seen) {
          seen ??= new Set(body.messages.slice(0, i).map((x) => x.seq))
          if (seen.has(m.seq))
            throw new HttpError(
              400,
              'DUPLICATE_SEQ',
              `body/messages/${i}/seq: seq ${m.seq} appears twice in this batch; each message is sent once per batch`,
            )
          seen.add(m.seq)
        }
        lastSeq = m.seq
        if (!checkedTopics.has(m.topic)) {
          const problem = topicProblem(m.topic, { forPublish: true })
          if (problem) throw new HttpError(400, 'INVALID_BODY', `body/messages/${i}/topic: ${problem}`)
          checkedTopics.add(m.topic)
        }
        if (m.enc === 'base64' && (m.payload.length % 4 !== 0 || !BASE64_RE.test(m.payload)))
          throw new HttpError(400, 'INVALID_BODY', `body/messages/${i}/payload: not valid base64`)
        // UTF-8 takes at most 3 bytes per UTF-16 unit, base64 decodes to 3/4: most payloads need no count.
        if (m.payload.length * 3 > messageBytes) {
          const size = payloadBytes(m.payload, m.enc)
          if (size > messageBytes)
            throw new HttpError(
              413,
              'MESSAGE_TOO_LARGE',
              `body/messages/${i}: message seq ${m.seq} on topic ${JSON.stringify(m.topic)} has a payload of ` +
                `${size} bytes, over broker.limits.messageBytes (${messageBytes}); nothing of this batch was stored`,
            )
        }
      }
      // The schema bounds every part of stats; this bounds the whole the store keeps and every status read parses.
      if (body.stats !== undefined) {
        const size = Buffer.byteLength(JSON.stringify(body.stats))
        if (size > STATS_MAX_BYTES)
          throw new HttpError(
            413,
            'STATS_TOO_LARGE',
            `body/stats: ${size} bytes serialised, over the limit of ${STATS_MAX_BYTES}; send the counters rmq sends (docs/protocol.md)`,
          )
        // Kept as the fixed fields the status API, alerts and /metrics read, not as sent.
        body.stats = compactStats(body.stats)
      }
      const at = now()
      boundEventTime(body, at, options.futureSkew ?? DEFAULT_EVENT_TIME_BOUND)
      await failpoint('broker.ingest.before-commit')
      const ack = await store.ingest(body, {
        ...orderingContext(options, at),
        // A pipelined batch (backlog.unacked) is usually followed by its node's next one: not company.
        concurrent: Math.max(0, inProgress - 1 - (body.backlog.unacked ? 1 : 0)),
      })
      await failpoint('broker.ingest.after-commit-before-reply')
      notifier.notify()
      if (ack.duplicates > 0 || ack.late > 0)
        req.log.debug({ node: body.node, batch: body.batch, ...ack }, 'batch stored')
      // Every store checks backlog.unacked against the node's last committed batch.
      return { ...ack, batch: body.batch, count: body.messages.length, features: [...BROKER_FEATURES] }
    },
  )
}
export default batches
