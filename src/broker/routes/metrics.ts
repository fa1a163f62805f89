import { Readable } from 'node:stream'
import type { FastifyPluginAsync } from 'fastify'

/**
 * GET /metrics: Prometheus text format. It names every node with its backlog,
 * skew and losses: a monitor or admin credential, unless broker.metrics.public
 * (a scrape on a private network).
 */
const metrics: FastifyPluginAsync = async (app) => {
  const permission = app.broker.options.metricsPublic ? 'public' : 'metrics:read'
  app.get('/metrics', { config: { permission } }, async (_req, reply) => {
    const parts = await app.monitor.metrics.render()
    // Sent as they are, with their length: no copy into one buffer, no chunked encoding.
    return reply
      .header('content-type', app.monitor.metrics.contentType)
      .header(
        'content-length',
        parts.reduce((n, b) => n + b.length, 0),
      )
      .send(Readable.from(parts, { objectMode: false }))
  })
}
export default metrics
