/**
 * The main broker as a fastify application. `createBrokerApp` builds it
 * without binding a port (tests use `app.inject`); `startBroker` listens.
 *
 * It is built from named fastify plugins (./plugins/): `rmq-context` (the
 * shared `app.broker`: store, options, notifier, clock, background timers),
 * `rmq-errors`, `rmq-body-decoding`, `rmq-auth-abuse` (limits on failed
 * authentication, checked first), `rmq-authentication`, `rmq-authorization`
 * and `rmq-monitoring`. Routes live in ./routes/*.ts, one module per area,
 * listed in ./routes/index.ts; each declares the permission it needs
 * (`config: { permission }`), which rmq-authorization checks.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { ConfigError } from '../shared/errors.js'
import './context.js'
// Registers the built-in codecs (body decoding) with core's registry.
import '../plugins/builtins.js'
import { preparePrivateDataDir } from './admin.js'
import { checkCanListen, listenError } from './listen.js'
import { loggerOptions } from './logging.js'
import monitoring from './monitoring.js'
import { isLoopback, type BrokerOptions } from './options.js'
import { httpsOptions, loadServerTls } from './tls.js'
import authAbuse from './plugins/auth-abuse.js'
import authentication from './plugins/authentication.js'
import authorization from './plugins/authorization.js'
import bodyDecoding from './plugins/body-decoding.js'
import context from './plugins/context.js'
import errorHandler from './plugins/error-handler.js'
import { ROUTES } from './routes/index.js'
import { MAX_WAIT_MS } from './routes/messages.js'
import { openBrokerStore } from './store/index.js'
import { AJV_OPTIONS } from './schemas.js'

export interface CreateBrokerAppOptions extends BrokerOptions {
  /**
   * Extra plugins, registered after the built-in ones. Each route must declare
   * `config: { permission }` (src/broker/authorization.ts; 'public' for none).
   */
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
  checkTransportOptions(options)
  const https = options.tls ? httpsOptions(options.tls) : undefined
  const { default: Fastify, LogController } = await import('fastify')
  if (!options.storeInstance && options.store === 'sqlite') preparePrivateDataDir(options.dataDir)
  // The store opens before the logger exists: what it reports meanwhile (the PostgreSQL primary) waits.
  type StoreLogLine = [level: 'info' | 'warn', message: string, fields?: Record<string, unknown>]
  const early: StoreLogLine[] = []
  let storeLog = (...line: StoreLogLine): void => void early.push(line)
  const store =
    options.storeInstance ??
    (await openBrokerStore(options.store, {
      dataDir: options.dataDir,
      url: options.postgresUrl,
      writerThread: true,
      log: (...line) => storeLog(...line),
    }))
  // Slow or stalled clients (slow-loris) must not hold sockets for ever: the
  // whole request (headers and body) has to arrive within requestTimeout, the
  // headers within a quarter of it, checked every second or so. Idle sockets
  // are closed after the longest long-poll plus a margin.
  const requestTimeout = options.limits.requestTimeout || DEFAULT_REQUEST_TIMEOUT_MS
  const app = Fastify({
    ...(https ? { https } : {}),
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
    ajv: { customOptions: { ...AJV_OPTIONS } },
  })
  storeLog = (level, message, fields) => {
    app.log[level]({ store: store.kind, ...fields }, message)
  }
  for (const line of early.splice(0)) storeLog(...line)

  await app.register(context, { store, options })
  await app.register(errorHandler)
  await app.register(bodyDecoding)
  // Before authentication: its onRequest hook refuses addresses with too many failures first.
  await app.register(authAbuse)
  await app.register(authentication)
  await app.register(authorization)
  await app.register(monitoring)
  for (const route of ROUTES) await app.register(route)
  for (const plugin of options.plugins ?? []) await app.register(plugin)
  return app
}

/**
 * TLS settings that cannot work, and plain HTTP off loopback (the tokens and
 * every payload in clear), refused before anything is opened.
 */
function checkTransportOptions(options: BrokerOptions): void {
  const tls = options.tls
  if (tls && (!tls.cert || !tls.key))
    throw new ConfigError('broker.tls.cert and broker.tls.key go together: one of them is not set', {
      suggestion:
        'set both (RMQ_BROKER_TLS_CERT, RMQ_BROKER_TLS_KEY) to PEM files, e.g. made as docs/security.md shows',
    })
  if ((options.auth === 'mtls' || options.auth === 'token+mtls') && !tls?.clientCa)
    throw new ConfigError(
      `broker.auth=${options.auth} needs client certificates, but broker.tls.clientCa is not set`,
      {
        suggestion:
          'set broker.tls.cert, broker.tls.key and broker.tls.clientCa (RMQ_BROKER_TLS_CLIENT_CA) to the CA that signs node certificates',
      },
    )
  if (!tls && !isLoopback(options.host) && !options.insecure)
    throw new ConfigError(
      `refusing to listen on ${options.host} without TLS: tokens and payloads would cross the network in clear`,
      {
        suggestion:
          'set broker.tls.cert and broker.tls.key (RMQ_BROKER_TLS_CERT, RMQ_BROKER_TLS_KEY), ' +
          'listen on 127.0.0.1 behind a TLS proxy, or pass --insecure to force it',
      },
    )
}

export interface RunningBroker {
  app: FastifyInstance
  url: string
  close(): Promise<void>
  /**
   * Read broker.tls.* again and serve the new certificate to new connections;
   * open ones keep theirs (no connection is dropped). False without TLS.
   * Throws ConfigError (the old certificate stays) when a file cannot be read
   * or does not make a valid context.
   */
  reloadTls(): boolean
}

/** Create the app and listen on options.host:options.port (0 picks a free port). */
export async function startBroker(options: CreateBrokerAppOptions): Promise<RunningBroker> {
  // libuv reads this at the process's first listen. Set, a busy event loop accepts one pending
  // connection per iteration: another node's request waited behind every large batch that was
  // being parsed (docs/guarantees.md "Bounds"). An operator's own setting is kept.
  process.env.UV_TCP_SINGLE_ACCEPT ??= '0'
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
  const scheme = options.tls ? 'https' : 'http'
  const reloadTls = (): boolean => {
    if (!options.tls) return false
    const ctx = loadServerTls(options.tls)
    try {
      ;(app.server as import('node:https').Server).setSecureContext(ctx)
    } catch (err) {
      throw new ConfigError(`cannot use the new broker.tls files: ${(err as Error).message}`, {
        suggestion:
          'check that broker.tls.key is the key of broker.tls.cert; the old certificate is still served',
        cause: err,
      })
    }
    return true
  }
  return { app, url: `${scheme}://${host}:${port}`, close: () => app.close(), reloadTls }
}
