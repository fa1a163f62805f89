/**
 * The main broker as a fastify application. `createBrokerApp` builds it
 * without binding a port (tests use `app.inject`); `startBroker` listens.
 *
 * It is built from named fastify plugins (./plugins/): `rmq-context` (the
 * shared `app.broker`: store, options, notifier, clock, background timers),
 * `rmq-errors`, `rmq-body-decoding`, `rmq-authentication` and
 * `rmq-monitoring`. Routes live in ./routes/*.ts, one module per area, listed
 * in ./routes/index.ts as public or protected; the protected ones share one
 * context whose onRequest hook is `app.authenticate`.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { ConfigError } from '../shared/errors.js'
import './context.js'
// Registers the built-in codecs (body decoding) with core's registry.
import '../plugins/builtins.js'
import { checkCanListen, listenError } from './listen.js'
import { loggerOptions } from './logging.js'
import monitoring from './monitoring.js'
import { isLoopback, type BrokerOptions } from './options.js'
import authentication from './plugins/authentication.js'
import bodyDecoding from './plugins/body-decoding.js'
import context from './plugins/context.js'
import errorHandler from './plugins/error-handler.js'
import { PROTECTED_ROUTES, PUBLIC_ROUTES } from './routes/index.js'
import { MAX_WAIT_MS } from './routes/messages.js'
import { openBrokerStore } from './store/index.js'

export interface CreateBrokerAppOptions extends BrokerOptions {
  /** Extra plugins, registered after the built-in ones (protect a route with `onRequest: app.authenticate`). */
  plugins?: FastifyPluginAsync[]
}

const DEFAULT_REQUEST_TIMEOUT_MS = 60_000

export async function createBrokerApp(options: CreateBrokerAppOptions): Promise<FastifyInstance> {
  if (options.auth === 'none' && !isLoopback(options.host) && !options.insecure) {
    throw new ConfigError(`refusing to listen on ${options.host} without authentication (broker.auth=none)`, {
      suggestion:
        'create node tokens with `rmq broker token create NODE` and set broker.auth=token, ' +
        'listen on 127.0.0.1, or pass --insecure to force it',
    })
  }
  const { default: Fastify, LogController } = await import('fastify')
  const store =
    options.storeInstance ??
    (await openBrokerStore(options.store, {
      dataDir: options.dataDir,
      url: options.postgresUrl,
      writerThread: true,
    }))
  // Slow or stalled clients (slow-loris) must not hold sockets for ever: the
  // whole request (headers and body) has to arrive within requestTimeout, the
  // headers within a quarter of it, checked every second or so. Idle sockets
  // are closed after the longest long-poll plus a margin.
  const requestTimeout = options.limits.requestTimeout || DEFAULT_REQUEST_TIMEOUT_MS
  const app = Fastify({
    logger: loggerOptions(options.logFormat ?? 'silent', options.logLevel),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: options.limits.bodyBytes,
    requestTimeout,
    connectionTimeout: MAX_WAIT_MS + 60_000,
    http: {
      headersTimeout: Math.max(1000, Math.min(requestTimeout, Math.ceil(requestTimeout / 4), 15_000)),
      connectionsCheckingInterval: Math.max(250, Math.min(1000, Math.floor(requestTimeout / 4))),
    },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: {
      customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false },
    },
  })

  await app.register(context, { store, options })
  await app.register(errorHandler)
  await app.register(bodyDecoding)
  await app.register(authentication)
  await app.register(monitoring)
  for (const route of PUBLIC_ROUTES) await app.register(route)
  // The protected routes: one context whose every request passes the authentication hook.
  await app.register(async (v1) => {
    v1.addHook('onRequest', v1.authenticate)
    for (const route of PROTECTED_ROUTES) await v1.register(route)
  })
  for (const plugin of options.plugins ?? []) await app.register(plugin)
  return app
}

export interface RunningBroker {
  app: FastifyInstance
  url: string
  close(): Promise<void>
}

/** Create the app and listen on options.host:options.port (0 picks a free port). */
export async function startBroker(options: CreateBrokerAppOptions): Promise<RunningBroker> {
  // Before the store: a port in use must not leave a new data directory and broker.db behind.
  await checkCanListen(options.host, options.port)
  const app = await createBrokerApp(options)
  try {
    await app.listen({ host: options.host, port: options.port })
  } catch (err) {
    await app.close().catch(() => {})
    throw listenError(err, options.host, options.port) ?? err
  }
  const addr = app.server.address()
  const port = typeof addr === 'object' && addr ? addr.port : options.port
  const host = options.host.includes(':') ? `[${options.host}]` : options.host
  return { app, url: `http://${host}:${port}`, close: () => app.close() }
}
