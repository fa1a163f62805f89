/**
 * The main broker as a fastify application. `createBrokerApp` builds it
 * without binding a port (tests use `app.inject`); `startBroker` listens.
 *
 * Routes live in ./routes/*.ts, one module per area, listed in
 * ./routes/index.ts. A route module is a fastify plugin that reads the shared
 * state from `app.broker` (store, options, notifier, clock).
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify'
import { ConfigError } from '../core/errors.js'
import { decodeFrames, FRAMES_CONTENT_TYPE, MalformedFramesError } from '../core/protocol.js'
import { loggerOptions } from './logging.js'
import { Notifier } from './notifier.js'
import { isLoopback, type BrokerOptions } from './options.js'
import { RateLimiter } from './rate-limit.js'
import { ROUTES } from './routes/index.js'
import { MAX_WAIT_MS } from './routes/messages.js'
import { openBrokerStore } from './store/index.js'
import { StoreUnavailableError, type BrokerStore } from './store/types.js'
import { Repeater } from './timers.js'
import { authenticate, bearerToken } from './tokens.js'

export interface BrokerContext {
  store: BrokerStore
  options: BrokerOptions
  notifier: Notifier
  rateLimiter: RateLimiter
  now: () => number
  /** Recompute the watermark and release held messages now. */
  release(): Promise<void>
  /** Run retention once; returns the number of messages deleted. */
  purge(): Promise<number>
}

declare module 'fastify' {
  interface FastifyInstance {
    broker: BrokerContext
  }
  interface FastifyRequest {
    /** The node of the bearer token; null when broker.auth=none. */
    authNode: string | null
  }
}

/** An error fastify turns into a JSON response with this status. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
  }
}

export interface CreateBrokerAppOptions extends BrokerOptions {
  /** Extra route plugins (registered after the built-in ones). */
  plugins?: FastifyPluginAsync[]
}

const PURGE_CHUNK = 10_000
const DEFAULT_REQUEST_TIMEOUT_MS = 60_000
const TOUCH_EVERY_MS = 60_000

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

  const now = options.now ?? Date.now
  const notifier = new Notifier()
  // Stores shared by several brokers signal commits made by the others too.
  const unsubscribe = store.subscribe?.(() => notifier.notify())
  const ctx: BrokerContext = {
    store,
    options,
    notifier,
    rateLimiter: new RateLimiter(options.limits.ratePerNode),
    now,
    async release() {
      const r = await store.release({ now: now(), maxLateness: options.maxLateness })
      if (r.released > 0) notifier.notify()
    },
    async purge() {
      if (!options.retention) return 0
      let total = 0
      for (;;) {
        const n = await store.purge({ receivedBefore: now() - options.retention, limit: PURGE_CHUNK })
        total += n
        if (n < PURGE_CHUNK) return total
        await new Promise((r) => setImmediate(r))
      }
    },
  }
  app.decorate('broker', ctx)
  app.decorateRequest('authNode', null)

  // Bodies: raw bytes up to bodyLimit, then Content-Encoding via the codec plugins with the decompressed cap.
  // The module is imported once: an import() per request, even of a module already loaded, goes
  // through the ES module loader again (V8's map log showed it setting up new prototypes each time).
  let compression: Promise<typeof import('../core/compression/registry.js')> | undefined
  const decompressBody = async (req: FastifyRequest, raw: Buffer): Promise<Buffer> => {
    const { codecForEncoding, CorruptInputError, DecompressLimitError } = await (compression ??=
      import('../core/compression/registry.js'))
    const encoding = req.headers['content-encoding']
    let codec
    try {
      codec = await codecForEncoding(Array.isArray(encoding) ? encoding.join(',') : encoding)
    } catch {
      throw new HttpError(
        415,
        'UNSUPPORTED_ENCODING',
        `unsupported Content-Encoding ${JSON.stringify(encoding)}`,
      )
    }
    try {
      return await codec.decompress(raw, { maxOutputBytes: options.limits.decompressedBytes })
    } catch (err) {
      if (err instanceof DecompressLimitError)
        throw new HttpError(
          413,
          'DECOMPRESSED_TOO_LARGE',
          `decompressed body exceeds the limit of ${options.limits.decompressedBytes} bytes`,
        )
      if (err instanceof CorruptInputError) throw new HttpError(400, 'CORRUPT_BODY', (err as Error).message)
      throw err
    }
  }
  app.removeContentTypeParser(['application/json'])
  app.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer' },
    async (req: FastifyRequest, raw: Buffer) => {
      const text = await decompressBody(req, raw)
      try {
        return JSON.parse(text.toString('utf8'))
      } catch (err) {
        throw new HttpError(400, 'MALFORMED_JSON', `the body is not valid JSON: ${(err as Error).message}`)
      }
    },
  )
  // A batch as frames (docs/protocol.md): validated like a JSON one once its payloads are cut out.
  app.addContentTypeParser(
    FRAMES_CONTENT_TYPE,
    { parseAs: 'buffer' },
    async (req: FastifyRequest, raw: Buffer) => {
      const buf = await decompressBody(req, raw)
      try {
        return decodeFrames(buf)
      } catch (err) {
        if (err instanceof MalformedFramesError)
          throw new HttpError(400, 'MALFORMED_FRAMES', `the frames body is not valid: ${err.message}`)
        throw err
      }
    },
  )

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
        message = `request body exceeds the limit of ${options.limits.bodyBytes} bytes`
      }
      if (err instanceof HttpError) for (const [k, v] of Object.entries(err.headers)) reply.header(k, v)
      if (status >= 500) req.log.error({ err, url: req.url }, 'request failed')
      else req.log.info({ status, code, url: req.url, node: req.authNode ?? undefined }, message)
      if (status === 500) message = 'internal error'
      void reply.code(status).send({ statusCode: status, code, error: message })
    },
  )

  // Authentication before the body is read: an unauthenticated sender costs no decompression.
  const touched = new Map<string, number>()
  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?', 1)[0]
    if (!path.startsWith('/v1/')) return
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

  for (const route of ROUTES) await app.register(route)
  for (const plugin of options.plugins ?? []) await app.register(plugin)

  // Background work: timers are unref'd; the watermark also moves on every ingest.
  const repeater = new Repeater(app.log)
  const every = repeater.every.bind(repeater)
  app.addHook('onReady', async () => {
    // Load the codecs (zstd's native binding) now rather than in the first batch's request.
    const { codecForEncoding } = await import('../core/compression/registry.js')
    await Promise.all(['zstd', 'gzip'].map((encoding) => codecForEncoding(encoding)))
    every(options.releaseIntervalMs ?? 1000, 'release', () => ctx.release())
    if (options.retention > 0)
      every(
        options.retentionIntervalMs ?? Math.min(60_000, Math.max(1000, options.retention / 10)),
        'retention',
        () => ctx.purge(),
      )
  })
  app.addHook('preClose', async () => {
    repeater.stop()
    unsubscribe?.()
    notifier.close()
  })
  app.addHook('onClose', async () => {
    await store.close()
  })
  return app
}

export interface RunningBroker {
  app: FastifyInstance
  url: string
  close(): Promise<void>
}

/** Create the app and listen on options.host:options.port (0 picks a free port). */
export async function startBroker(options: CreateBrokerAppOptions): Promise<RunningBroker> {
  const app = await createBrokerApp(options)
  try {
    await app.listen({ host: options.host, port: options.port })
  } catch (err) {
    await app.close().catch(() => {})
    const e = err as NodeJS.ErrnoException
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL')
      throw new ConfigError(`cannot listen on ${options.host}:${options.port}: ${e.code}`, {
        suggestion: 'choose another --port / --host (broker.port, broker.host) or stop the process using it',
      })
    throw err
  }
  const addr = app.server.address()
  const port = typeof addr === 'object' && addr ? addr.port : options.port
  const host = options.host.includes(':') ? `[${options.host}]` : options.host
  return { app, url: `http://${host}:${port}`, close: () => app.close() }
}
