/**
 * Plugin `rmq-authentication`: decorates the app with `authenticate`, which
 * finds who made a request (req.credential; req.authNode for a node) from a
 * bearer token, a client certificate or a dashboard session cookie, or
 * answers 401. The `rmq-authorization` plugin runs it as the first onRequest
 * hook of every route that is not public, before the body is read, so an
 * unauthenticated sender costs no decompression. It also holds the
 * dashboard's sessions (`app.sessions`, ../sessions.ts).
 */
import type { TLSSocket } from 'node:tls'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Credential } from '../authorization.js'
import { HttpError } from '../http-error.js'
import { cookieValue, SESSION_COOKIE, SessionStore } from '../sessions.js'
import type { FoundToken, TokenRecord } from '../store/types.js'
import { certificateIdentities, certificateNode } from '../tls.js'
import { authenticate, bearerToken, tokenRefusal } from '../tokens.js'

/** How often a token's last-used time is written (per credential): not on every request. */
const TOUCH_EVERY_MS = 60_000
/** With broker.auth=mtls, how long a change of a certificate name's role takes to apply. */
const ROLES_TTL_MS = 5000

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Sets req.credential (and req.authNode for a node) from the bearer token, client certificate
     * or dashboard session, or answers 401/403. With broker.auth=none it sets nothing.
     */
    authenticate(req: FastifyRequest): Promise<void>
    /** The dashboard's sign-in sessions. */
    sessions: SessionStore
  }
  interface FastifyRequest {
    /** What named req.authNode: a bearer token or a client certificate. */
    authBy: 'token' | 'certificate' | 'session' | null
    /** Who made the request; null when broker.auth=none (everything is allowed then). */
    credential: Credential | null
  }
}

/**
 * With broker.tls.clientCa: the identities of the verified client certificate
 * of this connection, or a 401 saying what is wrong with it.
 */
function verifiedCertificate(req: FastifyRequest): string[] {
  const socket = req.raw.socket as TLSSocket
  const cert = typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate() : undefined
  if (!cert || Object.keys(cert).length === 0)
    throw new HttpError(
      401,
      'CERTIFICATE_REQUIRED',
      'a client certificate signed by the broker.tls.clientCa of this broker is required (none was presented)',
    )
  if (!socket.authorized)
    throw new HttpError(
      401,
      'CERTIFICATE_REJECTED',
      `the client certificate is not accepted: ${String(socket.authorizationError ?? 'not verified')}`,
    )
  return certificateIdentities(cert)
}

const unauthorized = (code: string, message: string) =>
  new HttpError(401, code, message, { 'www-authenticate': 'Bearer' })

const authentication: FastifyPluginAsync = async (app) => {
  const { store, options, now } = app.broker
  const touched = new Map<string, number>()
  const sessions = new SessionStore()
  app.decorate('sessions', sessions)
  app.decorateRequest('authBy', null)
  app.decorateRequest('credential', null)

  /** The credential of a token (or session) digest lookup, refused when expired or rotated out. */
  const accept = (rec: FoundToken | undefined, missing: string): FoundToken => {
    if (!rec) throw unauthorized('UNAUTHORIZED', missing)
    const refusal = tokenRefusal(rec, now())
    if (refusal) throw unauthorized(refusal.code, refusal.message)
    return rec
  }

  // broker.auth=mtls: the credentials by name, read at most every ROLES_TTL_MS (not on every request).
  let rolesCache: { at: number; byName: Promise<Map<string, TokenRecord>> } | undefined
  const roles = (): Promise<Map<string, TokenRecord>> => {
    const t = now()
    if (!rolesCache || t - rolesCache.at >= ROLES_TTL_MS || t < rolesCache.at) {
      const byName = store.listTokens().then((list) => new Map(list.map((r) => [r.name, r])))
      rolesCache = { at: t, byName }
      byName.catch(() => (rolesCache = undefined))
    }
    return rolesCache.byName
  }

  app.decorate('authenticate', async (req: FastifyRequest) => {
    if (options.auth === 'none') return
    const certIds = options.tls?.clientCa ? verifiedCertificate(req) : undefined
    if (options.auth === 'mtls') {
      const node = certificateNode(certIds ?? [])
      if (!node)
        throw new HttpError(
          401,
          'CERTIFICATE_NO_NODE',
          `the client certificate names no valid node id (CN or a DNS/URI subjectAltName; it names ${JSON.stringify(
            certIds ?? [],
          ).slice(0, 200)})`,
        )
      req.authBy = 'certificate'
      // A certificate names a node, unless a consumer, monitor or admin credential of that name gives it a role.
      const rec = (await roles()).get(node)
      if (rec && rec.role !== 'node') {
        const refusal = tokenRefusal({ ...rec, previous: false }, now())
        if (refusal) throw unauthorized(refusal.code, refusal.message)
        req.credential = {
          name: node,
          role: rec.role,
          topics: rec.topics,
          groups: rec.groups,
          by: 'certificate',
        }
        return
      }
      req.authNode = node
      req.credential = { name: node, role: 'node', topics: [], groups: [], by: 'certificate' }
      return
    }
    const token = bearerToken(req.headers.authorization)
    let rec: FoundToken
    let by: 'token' | 'session' = 'token'
    if (token) rec = accept(await authenticate(store, token), 'invalid or revoked token')
    else {
      // The dashboard's session cookie, for reads only: SameSite=Strict and GET keep it from acting elsewhere.
      const session = cookieValue(req.headers.cookie, SESSION_COOKIE)
      const read = req.method === 'GET' || req.method === 'HEAD'
      const digest = session && read ? sessions.digestOf(session, now()) : undefined
      if (!digest)
        throw unauthorized(
          'UNAUTHORIZED',
          !session
            ? 'missing bearer token'
            : read
              ? 'the dashboard session has ended: sign in again'
              : 'a dashboard session is good for reads only: send a bearer token',
        )
      rec = accept(
        await store.findToken(digest),
        'the token of this dashboard session was revoked: sign in again',
      )
      by = 'session'
    }
    if (options.auth === 'token+mtls' && !(certIds ?? []).includes(rec.name))
      throw new HttpError(
        403,
        'WRONG_NODE',
        `the token belongs to ${rec.role === 'node' ? 'node' : rec.role} ${rec.name}, but the client certificate names ${
          certificateNode(certIds ?? []) ?? 'no node'
        }`,
      )
    if (rec.role === 'node') req.authNode = rec.name
    req.authBy = by
    req.credential = { name: rec.name, role: rec.role, topics: rec.topics, groups: rec.groups, by }
    const t = now()
    if ((touched.get(rec.name) ?? 0) + TOUCH_EVERY_MS <= t) {
      touched.set(rec.name, t)
      await store.touchToken(rec.name, t).catch(() => {})
    }
  })
}

export default fp(authentication, {
  name: 'rmq-authentication',
  fastify: '5.x',
  dependencies: ['rmq-context'],
})
