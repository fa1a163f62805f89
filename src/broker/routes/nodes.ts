import type { FastifyPluginAsync } from 'fastify'
import { HttpError } from '../http-error.js'
import { fleetStatus, healthRules, neverSeenStatus, nodeStatus } from '../node-status.js'

/**
 * GET /v1/nodes: every node with its derived status and health, a summary by
 * health, and the rules in force. GET /v1/nodes/:id: one node (404 if unknown;
 * a node with a token that never synced is `never-seen`). docs/monitoring.md.
 */
const nodes: FastifyPluginAsync = async (app) => {
  app.get('/v1/nodes', async () => fleetStatus(app.broker.store, app.broker.options, app.broker.now()))

  app.get<{ Params: { id: string } }>('/v1/nodes/:id', async (req) => {
    const { store, options } = app.broker
    const now = app.broker.now()
    const rec = await store.node(req.params.id)
    if (rec) return nodeStatus(rec, now, healthRules(options), options.maxLateness)
    const tokens = await store.listTokens()
    if (tokens.some((t) => t.node === req.params.id)) return neverSeenStatus(req.params.id)
    throw new HttpError(404, 'NOT_FOUND', `no node ${JSON.stringify(req.params.id)}`)
  })
}
export default nodes
