import type { FastifyPluginAsync } from 'fastify'

/** GET /metrics: Prometheus text format (no authentication, like /healthz). */
const metrics: FastifyPluginAsync = async (app) => {
  app.get('/metrics', async (_req, reply) => {
    const text = await app.monitor.metrics.render()
    return reply.header('content-type', app.monitor.metrics.contentType).send(text)
  })
}
export default metrics
