/**
 * Plugin `rmq-authentication`: decorates the app with `authenticate`, the
 * onRequest hook of the protected routes (createBrokerApp registers the /v1
 * routes in a context that has it; /healthz, /metrics and the dashboard's
 * static files are outside it). It runs before the body is read, so an
 * unauthenticated sender costs no decompression.
 */
import type { TLSSocket } from 'node:tls'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { HttpError } from '../http-error.js'
import { certificateIdentities, certificateNode } from '../tls.js'
import { authenticate, bearerToken } from '../tokens.js'

/** How often a token's last-used time is written (per node): not on every request. */
const TOUCH_EVERY_MS = 60_000

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook: sets req.authNode from the bearer token or client certificate, or answers 401/403. */
    authenticate(req: FastifyRequest): Promise<void>
  }
  interface FastifyRequest {
    /** What named req.authNode: a bearer token or a client certificate. */
    authBy: 'token' | 'certificate' | null
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

const authentication: FastifyPluginAsync = async (app) => {
  const { store, options, now } = app.broker
  const touched = new Map<string, number>()
  app.decorateRequest('authBy', null)
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
      req.authNode = node
      req.authBy = 'certificate'
      return
    }
    const token = bearerToken(req.headers.authorization)
    if (!token)
      throw new HttpError(401, 'UNAUTHORIZED', 'missing bearer token', { 'www-authenticate': 'Bearer' })
    const rec = await authenticate(store, token)
    if (!rec)
      throw new HttpError(401, 'UNAUTHORIZED', 'invalid or revoked token', { 'www-authenticate': 'Bearer' })
    if (options.auth === 'token+mtls' && !(certIds ?? []).includes(rec.node))
      throw new HttpError(
        403,
        'WRONG_NODE',
        `the token belongs to node ${rec.node}, but the client certificate names ${
          certificateNode(certIds ?? []) ?? 'no node'
        }`,
      )
    req.authNode = rec.node
    req.authBy = 'token'
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
