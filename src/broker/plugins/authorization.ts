/**
 * Plugin `rmq-authorization`: the one authorization hook. Every route
 * registered after it must declare the permission it needs in its config
 * (`config: { permission: 'messages:read' }`, ../authorization.ts); one
 * without is refused when it is registered, so the broker does not start.
 * Each route that is not `public` gets, as its first onRequest hook,
 * authentication (`app.authenticate`) followed by the check of the
 * credential against the route's permission: 403 naming what is missing.
 * The routes and their permissions are listed in `app.routeRules`.
 */
import type { FastifyPluginAsync, FastifyRequest, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { isPermission, permissionProblem, PERMISSIONS, type Permission } from '../authorization.js'
import { HttpError } from '../http-error.js'

export interface RouteRule {
  method: string
  url: string
  permission: Permission
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What a request to this route needs (src/broker/authorization.ts); every route declares one. */
    permission?: Permission
  }
  interface FastifyInstance {
    /** Every route registered since rmq-authorization, with its permission. */
    routeRules: RouteRule[]
  }
}

const authorization: FastifyPluginAsync = async (app) => {
  const rules: RouteRule[] = []
  app.decorate('routeRules', rules)

  const guard = (permission: Permission): onRequestHookHandler =>
    async function authorize(req: FastifyRequest) {
      await app.authenticate(req)
      // broker.auth=none: no credential, everything allowed (loopback only unless forced).
      if (!req.credential) return
      const problem = permissionProblem(req.credential, permission, req)
      if (problem) throw new HttpError(403, 'FORBIDDEN', problem)
    }

  app.addHook('onRoute', (route) => {
    const permission = (route.config as { permission?: unknown } | undefined)?.permission
    const methods = [route.method].flat().join(',')
    if (!isPermission(permission))
      throw new Error(
        `route ${methods} ${route.url} declares no permission: add config: { permission } with one of ` +
          `${PERMISSIONS.join(', ')} (src/broker/authorization.ts)`,
      )
    rules.push({ method: methods, url: route.url, permission })
    if (permission === 'public') return
    const own = route.onRequest === undefined ? [] : [route.onRequest].flat()
    route.onRequest = [guard(permission), ...own]
  })
}

export default fp(authorization, {
  name: 'rmq-authorization',
  fastify: '5.x',
  dependencies: ['rmq-context', 'rmq-authentication'],
})
