import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { failpoint } from '../../shared/failpoints.js'
import { BROKER_FEATURES, topicProblem, type BatchBody } from '../../protocol/batch.js'
import { HttpError } from '../http-error.js'
import { BASE64_RE, batchAckSchema, batchBodySchema } from '../schemas.js'

function rateLimit(req: FastifyRequest, reply: FastifyReply, node: string): void {
  const waitMs = req.server.broker.rateLimiter.take(node)
  if (waitMs > 0) {
    throw new HttpError(429, 'RATE_LIMITED', `too many batches from node ${node}; retry later`, {
      'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))),
    })
  }
  void reply
}

/** POST /v1/batches: one batch or heartbeat from an edge node (docs/protocol.md). */
const batches: FastifyPluginAsync = async (app) => {
  // Batch requests between their headers and the end of their response: tells the store whether a batch is alone.
  let inProgress = 0
  app.post(
    '/v1/batches',
    {
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
        if (req.authNode) rateLimit(req, reply, req.authNode)
      },
    },
    async (req, reply) => {
      const body = req.body as BatchBody
      const { store, options, notifier, now } = app.broker
      if (req.authNode !== null && body.node !== req.authNode)
        throw new HttpError(
          403,
          'WRONG_NODE',
          `this ${req.authBy === 'certificate' ? 'client certificate' : 'token'} belongs to node ${req.authNode}, not ${body.node}`,
        )
      if (req.authNode === null) rateLimit(req, reply, body.node)
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
      }
      await failpoint('broker.ingest.before-commit')
      const ack = await store.ingest(body, {
        now: now(),
        maxLateness: options.maxLateness,
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
