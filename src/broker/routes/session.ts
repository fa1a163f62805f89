import type { FastifyPluginAsync } from 'fastify'
import { HttpError } from '../http-error.js'
import { cookieValue, SESSION_COOKIE, SESSION_TTL_MS, sessionCookie } from '../sessions.js'
import { authenticate, hashToken, tokenRefusal } from '../tokens.js'

/** The roles that may sign in to the dashboard. */
const DASHBOARD_ROLES = new Set(['monitor', 'admin'])

/**
 * The dashboard's sign-in. POST /dashboard/session with `{"token": "..."}`
 * (a monitor or admin token) answers with a session cookie (../sessions.ts):
 * the dashboard's reads then carry the cookie, never the token, and no token
 * is ever in a URL. DELETE /dashboard/session signs out. Both are public
 * routes: the sign-in checks the token itself (401 unknown, expired or
 * rotated out; 403 for a role that may not see the dashboard).
 */
const session: FastifyPluginAsync = async (app) => {
  const { options, store, now } = app.broker
  const secure = options.tls !== undefined
  app.post<{ Body: { token: string } }>(
    '/dashboard/session',
    {
      config: { permission: 'public' },
      // A token is at most 512 characters: a sign-in body is small and never compressed.
      bodyLimit: 4096,
      onRequest: async (req) => {
        const enc = req.headers['content-encoding']
        if (enc !== undefined && enc !== 'identity')
          throw new HttpError(415, 'UNSUPPORTED_ENCODING', 'a sign-in body is sent uncompressed')
      },
      schema: {
        body: {
          type: 'object',
          required: ['token'],
          properties: { token: { type: 'string', minLength: 1, maxLength: 512 } },
        },
      },
    },
    async (req, reply) => {
      if (options.auth === 'none') return { name: null, role: null, auth: 'none' }
      if (options.auth === 'mtls')
        throw new HttpError(
          400,
          'NO_TOKENS',
          'this broker authenticates by client certificate only (broker.auth=mtls): there are no tokens to sign in with',
        )
      const rec = await authenticate(store, req.body.token.trim())
      if (!rec) throw new HttpError(401, 'UNAUTHORIZED', 'invalid or revoked token')
      const refusal = tokenRefusal(rec, now())
      if (refusal) throw new HttpError(401, refusal.code, refusal.message)
      if (!DASHBOARD_ROLES.has(rec.role))
        throw new HttpError(
          403,
          'FORBIDDEN',
          `the dashboard needs a monitor or admin token; ${JSON.stringify(rec.name)} is role ${rec.role} ` +
            '(make one with `rmq broker token create NAME --role monitor`)',
        )
      const id = app.sessions.create(hashToken(req.body.token.trim()), now())
      void reply.header('set-cookie', sessionCookie(id, { secure, maxAgeMs: SESSION_TTL_MS }))
      req.log.info({ credential: rec.name, role: rec.role }, 'dashboard sign-in')
      return { name: rec.name, role: rec.role, auth: options.auth }
    },
  )

  app.delete('/dashboard/session', { config: { permission: 'public' } }, async (req, reply) => {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE)
    if (id) app.sessions.delete(id)
    void reply.header('set-cookie', sessionCookie('', { secure, maxAgeMs: 0 }))
    return { signedOut: true }
  })
}
export default session
