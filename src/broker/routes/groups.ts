import type { FastifyPluginAsync } from 'fastify'
import { canSeeGroup } from '../authorization.js'
import { HttpError } from '../http-error.js'

const GROUP_NAME = {
  type: 'string',
  minLength: 1,
  maxLength: 128,
  pattern: '^[^\\u0000-\\u001f\\u007f]+$',
} as const

/** Consumer groups: a named, durable read position per order. */
const groups: FastifyPluginAsync = async (app) => {
  // A consumer sees only the groups it is granted.
  app.get('/v1/groups', { config: { permission: 'groups:read' } }, async (req) => ({
    groups: (await app.broker.store.listGroups()).filter((g) => canSeeGroup(req.credential, g.name)),
  }))

  app.post<{ Params: { name: string }; Body: { order: 'event' | 'arrival'; position: number } }>(
    '/v1/groups/:name/commit',
    {
      config: { permission: 'groups:commit' },
      schema: {
        params: { type: 'object', properties: { name: GROUP_NAME }, required: ['name'] },
        body: {
          type: 'object',
          required: ['position'],
          properties: {
            order: { type: 'string', enum: ['event', 'arrival'] },
            position: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
          },
        },
      },
    },
    async (req) => {
      const { store, now } = app.broker
      const order = req.body.order ?? 'event'
      const heads = await store.heads()
      const head = order === 'event' ? heads.event : heads.arrival
      if (req.body.position > head)
        throw new HttpError(
          400,
          'INVALID_POSITION',
          `position ${req.body.position} is beyond the ${order} head ${head}`,
        )
      const position = await store.commitGroup(req.params.name, order, req.body.position, now())
      return { name: req.params.name, order, position }
    },
  )
}
export default groups
