import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { failpoint } from '../../shared/failpoints.js'
import {
  batchReply,
  checkBatch,
  checkBatchNode,
  JsonBytes,
  parseJsonBody,
  validateBatchBody,
  type BatchCheckOptions,
  type BatchReply,
} from '../batch-checks.js'
import { DEFAULT_EVENT_TIME_BOUND } from '../event-time.js'
import { HttpError } from '../http-error.js'
import { limitOf, orderingContext } from '../options.js'
import { batchAckSchema } from '../schemas.js'

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
      // The body is validated by batch-checks.ts (here or on the store's writer thread), not by Fastify.
      config: { permission: 'batches:write', jsonBytes: true },
      schema: { response: { 200: batchAckSchema } },
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
    async (req, reply): Promise<BatchReply> => {
      const { store, options, notifier, now } = app.broker
      const at = now()
      const checks: BatchCheckOptions = {
        messageBytes: limitOf(options.limits, 'messageBytes'),
        authNode: req.authNode,
        authBy: req.authBy,
        now: at,
        futureSkew: options.futureSkew ?? DEFAULT_EVENT_TIME_BOUND,
      }
      const ctx = () => ({
        ...orderingContext(options, at),
        // A pipelined batch (backlog.unacked) is usually followed by its node's next one: not company.
        concurrent: Math.max(0, inProgress - 1 - (unacked ? 1 : 0)),
      })
      let unacked = false
      let reply_: BatchReply
      // A large JSON body (body-decoding.ts) from a known node: the store parses and checks it off the
      // event loop when it can. Without a credential the node (for its rate and in-flight limits) is
      // only known from the body, so that is parsed here.
      if (req.body instanceof JsonBytes && store.ingestJson && req.authNode !== null) {
        await failpoint('broker.ingest.before-commit')
        reply_ = await store.ingestJson(req.body.bytes, checks, ctx())
      } else {
        const body = validateBatchBody(
          req.body instanceof JsonBytes ? parseJsonBody(req.body.bytes) : req.body,
        )
        checkBatchNode(body, req.authNode, req.authBy)
        if (req.authNode === null) {
          rateLimit(req, reply, body.node)
          admit(reply, body.node)
        }
        checkBatch(body, checks)
        unacked = !!body.backlog.unacked
        await failpoint('broker.ingest.before-commit')
        reply_ = batchReply(await store.ingest(body, ctx()), body)
      }
      await failpoint('broker.ingest.after-commit-before-reply')
      notifier.notify()
      if (reply_.duplicates > 0 || reply_.late > 0)
        req.log.debug({ node: req.authNode ?? undefined, ...reply_ }, 'batch stored')
      // Every store checks backlog.unacked against the node's last committed batch.
      return reply_
    },
  )
}
export default batches
