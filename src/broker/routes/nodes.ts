import type { FastifyPluginAsync } from 'fastify'
import { HttpError } from '../app.js'

/** GET /v1/nodes and /v1/nodes/:id: the node records as the store keeps them. */
const nodes: FastifyPluginAsync = async (app) => {
  app.get('/v1/nodes', async () => {
    const now = app.broker.now()
    const list = await app.broker.store.nodes()
    return {
      now,
      nodes: list.map((n) => ({
        ...n,
        live: !n.direct && now - n.lastContact <= app.broker.options.maxLateness,
      })),
    }
  })
  app.get<{ Params: { id: string } }>('/v1/nodes/:id', async (req) => {
    const n = await app.broker.store.node(req.params.id)
    if (!n) throw new HttpError(404, 'NOT_FOUND', `no node ${req.params.id}`)
    return n
  })
}
export default nodes
