/**
 * Plugin `rmq-authentication`: decorates the app with `authenticate`, the
 * onRequest hook of the protected routes (createBrokerApp registers the /v1
 * routes in a context that has it; /healthz, /metrics and the dashboard's
 * static files are outside it). It runs before the body is read, so an
 * unauthenticated sender costs no decompression.
 */
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { HttpError } from '../http-error.js'
import { authenticate, bearerToken } from '../tokens.js'

/** How often a token's last-used time is written (per node): not on every request. */
const TOUCH_EVERY_MS = 60_000

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook: sets req.authNode from the bearer token, or answers 401. */
    authenticate(req: FastifyRequest): Promise<void>
  }
}

const authentication: FastifyPluginAsync = async (app) => {
  const { store, options, now } = app.broker
  const touched = new Map<string, number>()
  app.decorate('authenticate', async (req: FastifyRequest) => {
    if (options.auth === 'none') return
    const token = bearerToken(req.headers.authorization)
    if (!token)
      throw new HttpError(401, 'UNAUTHORIZED', 'missing bearer token', { 'www-authenticate': 'Bearer' })
    const rec = await authenticate(store, token)
    if (!rec)
      throw new HttpError(401, 'UNAUTHORIZED', 'invalid or revoked token', { 'www-authenticate': 'Bearer' })
    req.authNode = rec.node
    const t = now()
    if ((touched.get(rec.node) ?? 0) + TOUCH_EVERY_MS <= t) {
      touched.set(rec.node, t)
      await store.touchToken(rec.node, t).catch(() => {})
    }
  })
}

export default fp(authentication, {
  name: 'rmq-authentication',
  fastify: '5.x',
  dependencies: ['rmq-context'],
})
