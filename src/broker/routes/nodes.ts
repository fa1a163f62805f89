import type { FastifyPluginAsync } from 'fastify'
import { HttpError } from '../http-error.js'
import { healthRules, neverSeenStatus, nodeStatus } from '../node-status.js'

/**
 * GET /v1/nodes: every node with its derived status and health, a summary by
 * health, and the rules in force. GET /v1/nodes/:id: one node (404 if unknown;
 * a node with a token that never synced is `never-seen`, or `never-synced` once its
 * token is older than broker.alerts.neverSyncedFor). docs/monitoring.md.
 */
const nodes: FastifyPluginAsync = async (app) => {
  app.get('/v1/nodes', { config: { permission: 'fleet:read' } }, async () => app.monitor.fleet())

  app.get<{ Params: { id: string } }>(
    '/v1/nodes/:id',
    { config: { permission: 'nodes:read' } },
    async (req) => {
      const { store, options } = app.broker
      const now = app.broker.now()
      const [rec, tokens] = await Promise.all([store.node(req.params.id), store.nodeTokens()])
      const token = tokens.find((t) => t.name === req.params.id)
      if (rec) return nodeStatus(rec, now, healthRules(options), options.maxLateness, token)
      if (token) return neverSeenStatus(token, now, healthRules(options))
      throw new HttpError(404, 'NOT_FOUND', `no node ${JSON.stringify(req.params.id)}`)
    },
  )
}
export default nodes
