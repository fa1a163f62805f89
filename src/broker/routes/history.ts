import type { FastifyPluginAsync } from 'fastify'
import { HttpError } from '../http-error.js'

/** GET /v1/history?since=T: the dashboard's fleet samples after T (broker time, ms). */
const history: FastifyPluginAsync = async (app) => {
  app.get<{ Querystring: { since?: string } }>(
    '/v1/history',
    { config: { permission: 'history:read' } },
    async (req) => {
      const since = req.query.since === undefined ? 0 : Number(req.query.since)
      if (!Number.isFinite(since))
        throw new HttpError(400, 'INVALID_QUERY', 'since must be epoch milliseconds')
      return {
        now: app.broker.now(),
        intervalMs: app.monitor.historyIntervalMs,
        samples: app.monitor.history.list(since),
      }
    },
  )
}
export default history
