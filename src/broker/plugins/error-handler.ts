/**
 * Plugin `rmq-errors`: one JSON shape for every error response
 * (`{ statusCode, code, error }`), 503 + Retry-After for a store that is
 * unavailable, and logging: 5xx with the error, anything else as one line
 * (failed authentication excepted: see ./auth-abuse.ts).
 */
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { HttpError } from '../http-error.js'
import { isSummarizedAuthFailure } from './auth-abuse.js'
import { StoreUnavailableError } from '../store/types.js'

const errorHandler: FastifyPluginAsync = async (app) => {
  const { limits } = app.broker.options
  app.setErrorHandler(
    (err: Error & { statusCode?: number; code?: string; validation?: unknown }, req, reply) => {
      let status = err.statusCode ?? 500
      let code = err.code ?? 'INTERNAL'
      let message = err.message
      if (err instanceof StoreUnavailableError) {
        status = 503
        code = err.code
        reply.header('retry-after', '1')
      } else if (err.validation) {
        status = 400
        code = 'INVALID_BODY'
      } else if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        code = 'BODY_TOO_LARGE'
        message = `request body exceeds the limit of ${limits.bodyBytes} bytes`
      }
      if (err instanceof HttpError) for (const [k, v] of Object.entries(err.headers)) reply.header(k, v)
      if (status >= 500) req.log.error({ err, url: req.url }, 'request failed')
      // Failed authentication is logged as a per-address summary (rmq-auth-abuse), not per request.
      else if (!isSummarizedAuthFailure(status, code))
        req.log.info({ status, code, url: req.url, node: req.authNode ?? undefined }, message)
      if (status === 500) message = 'internal error'
      void reply.code(status).send({ statusCode: status, code, error: message })
    },
  )
}

export default fp(errorHandler, { name: 'rmq-errors', fastify: '5.x', dependencies: ['rmq-context'] })
