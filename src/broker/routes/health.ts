import type { FastifyPluginAsync } from 'fastify'

/** GET /healthz: 200 when the store answers, 503 otherwise. No authentication. */
const health: FastifyPluginAsync = async (app) => {
  app.get('/healthz', { config: { permission: 'public' } }, async (_req, reply) => {
    try {
      const heads = await app.broker.store.heads()
      return { status: 'ok', store: app.broker.store.kind, ...heads }
    } catch (err) {
      return reply.code(503).send({ status: 'unavailable', error: (err as Error).message })
    }
  })
}
export default health
