import type { FastifyPluginAsync } from 'fastify'
import { HttpError } from '../http-error.js'

/**
 * GET /v1/alerts?state=active|resolved|all&limit=N: active alerts (all of
 * them) and the most recent resolved ones (limit, default 100), newest first.
 */
const alerts: FastifyPluginAsync = async (app) => {
  app.get<{ Querystring: { state?: string; limit?: string } }>(
    '/v1/alerts',
    { config: { permission: 'alerts:read' } },
    async (req) => {
      const state = req.query.state ?? 'all'
      if (!['active', 'resolved', 'all'].includes(state))
        throw new HttpError(400, 'INVALID_QUERY', 'state must be active, resolved or all')
      const limit = req.query.limit === undefined ? 100 : Number(req.query.limit)
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
        throw new HttpError(400, 'INVALID_QUERY', 'limit must be an integer from 1 to 10000')
      const { store } = app.broker
      const [active, resolved] = await Promise.all([
        state === 'resolved' ? [] : store.listAlerts({ state: 'active', limit: 10_000 }),
        state === 'active' ? [] : store.listAlerts({ state: 'resolved', limit }),
      ])
      return { now: app.broker.now(), active, resolved }
    },
  )
}
export default alerts
