import type { FastifyPluginAsync } from 'fastify'

/**
 * GET /metrics: Prometheus text format. It names every node with its backlog,
 * skew and losses: a monitor or admin credential, unless broker.metrics.public
 * (a scrape on a private network).
 */
const metrics: FastifyPluginAsync = async (app) => {
  const permission = app.broker.options.metricsPublic ? 'public' : 'metrics:read'
  app.get('/metrics', { config: { permission } }, async (_req, reply) => {
    const body = await app.monitor.metrics.render()
    return reply.header('content-type', app.monitor.metrics.contentType).send(body)
  })
}
export default metrics
