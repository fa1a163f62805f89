/**
 * The one HTTP client of the edge and the CLI: batches and heartbeats
 * (broker-client.ts), consumption and fleet status (brokerRequest below).
 * Every byte of an answer is treated as hostile: a response body is read up
 * to a cap and within the request's timeout (headers and body together), so
 * a broker that floods or stalls costs bounded memory and time.
 */
import http from 'node:http'
import https from 'node:https'
import { BrokerUnavailableError, ConfigError, RejectedError, ValidationError } from '../shared/errors.js'
import { checkTransport, loadTlsMaterial, tlsError, type TlsClientOptions } from './tls.js'

export type { TlsClientOptions } from './tls.js'

export interface HttpCall {
  method: 'GET' | 'POST'
  /** Path and query, relative to the client's base URL. */
  path: string
  headers?: Record<string, string>
  body?: Buffer
  /** The whole exchange (connect, upload, headers and body) must end within it, ms. */
  timeoutMs: number
  /** A larger response body fails the call with kind `too-large`, read no further. */
  maxResponseBytes: number
  signal?: AbortSignal
  /** Called once the request body has been handed to the socket. */
  onUploaded?: () => void
}

export interface HttpReply {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
}

export type HttpFailureKind =
  'timeout' | 'refused' | 'reset' | 'dns' | 'too-large' | 'aborted' | 'tls' | 'other'

/**
 * A call that got no complete answer; `message` says why in words for an
 * operator. Kind `tls` (an untrusted, expired or misnamed certificate, a
 * refused client certificate) carries the ConfigError to report: retrying
 * cannot fix it, a setting can.
 */
export class HttpFailure extends Error {
  constructor(
    readonly kind: HttpFailureKind,
    message: string,
    readonly code?: string,
    readonly error?: ConfigError,
  ) {
    super(message)
    this.name = 'HttpFailure'
  }
}

export interface HttpClientOptions {
  /** Connections kept per origin (keep-alive). */
  maxSockets?: number
  /** Private CA, client certificate, and whether plain http:// off loopback is allowed. */
  tls?: TlsClientOptions
}

export class HttpClient {
  readonly baseUrl: string
  private readonly agents: { http: http.Agent; https: https.Agent }

  /** Throws ConfigError for http:// off loopback (unless allowed) or unreadable PEM files: before any socket. */
  constructor(baseUrl: string, options: HttpClientOptions = {}) {
    this.baseUrl = baseUrl.endsWith('/') ? baseUrl : baseUrl + '/'
    checkTransport(new URL(this.baseUrl), options.tls)
    const agent = { keepAlive: true, maxSockets: options.maxSockets ?? Infinity }
    this.agents = {
      http: new http.Agent(agent),
      https: new https.Agent({ ...agent, ...loadTlsMaterial(options.tls) }),
    }
  }

  url(path: string): URL {
    return new URL(path.replace(/^\/+/, ''), this.baseUrl)
  }

  request(call: HttpCall): Promise<HttpReply> {
    const url = this.url(call.path)
    const secure = url.protocol === 'https:'
    const where = `${url.origin}${url.pathname}`
    return new Promise<HttpReply>((resolve, reject) => {
      let settled = false
      const fail = (err: HttpFailure) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        call.signal?.removeEventListener('abort', onAbort)
        req.destroy()
        reject(err)
      }
      const onAbort = () => fail(new HttpFailure('aborted', `the request to ${where} was aborted`))
      const timer = setTimeout(
        () => fail(new HttpFailure('timeout', `no answer from ${where} within ${call.timeoutMs} ms`)),
        call.timeoutMs,
      )
      const headers: Record<string, string> = { ...call.headers }
      if (call.body) headers['content-length'] = String(call.body.length)
      const req = (secure ? https : http).request(url, {
        method: call.method,
        agent: secure ? this.agents.https : this.agents.http,
        headers,
      })
      req.on('error', (err) => fail(networkFailure(err, where, url)))
      req.on('response', (res) => {
        const declared = Number(res.headers['content-length'])
        if (declared > call.maxResponseBytes)
          return fail(tooLarge(where, call.maxResponseBytes, `${declared} bytes announced`))
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (c: Buffer) => {
          size += c.length
          if (size > call.maxResponseBytes) fail(tooLarge(where, call.maxResponseBytes, 'more sent'))
          else chunks.push(c)
        })
        res.on('error', (err) => fail(networkFailure(err, where, url)))
        res.on('aborted', () => fail(new HttpFailure('reset', `the answer from ${where} was cut off`)))
        res.on('end', () => {
          if (settled) return
          settled = true
          clearTimeout(timer)
          call.signal?.removeEventListener('abort', onAbort)
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks, size) })
        })
      })
      if (call.signal?.aborted) return onAbort()
      call.signal?.addEventListener('abort', onAbort, { once: true })
      req.end(call.body, call.onUploaded)
    })
  }

  close(): void {
    this.agents.http.destroy()
    this.agents.https.destroy()
  }
}

function tooLarge(where: string, cap: number, what: string): HttpFailure {
  return new HttpFailure(
    'too-large',
    `the answer from ${where} is larger than the cap of ${cap} bytes (${what})`,
  )
}

function networkFailure(err: Error & { code?: string }, where: string, url: URL): HttpFailure {
  const tls = url.protocol === 'https:' ? tlsError(err, url) : undefined
  if (tls) return new HttpFailure('tls', tls.message, err.code, tls)
  switch (err.code) {
    case 'ECONNREFUSED':
      return new HttpFailure('refused', `connection refused by ${where} (is the broker running?)`, err.code)
    case 'ECONNRESET':
    case 'EPIPE':
      return new HttpFailure('reset', `connection to ${where} was reset mid-request`, err.code)
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new HttpFailure('dns', `cannot resolve the broker host of ${where}`, err.code)
    default:
      return new HttpFailure('other', `${err.code ? `${err.code}: ` : ''}${err.message}`, err.code)
  }
}

// ---- JSON requests of the CLI and the consumer API ----

export interface RequestResult {
  status: number
  headers: http.IncomingHttpHeaders
  body: unknown
}

/** Default cap of a JSON answer (a consume page of 10,000 messages fits; see broker.limits). */
export const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024

const clients = new Map<string, HttpClient>()
function clientFor(baseUrl: string, tls: TlsClientOptions = {}): HttpClient {
  const key = JSON.stringify([baseUrl, tls.ca, tls.cert, tls.key, tls.allowInsecureHttp === true])
  let c = clients.get(key)
  if (!c) clients.set(key, (c = new HttpClient(baseUrl, { tls })))
  return c
}

/** One JSON request to the broker. Network failures become BrokerUnavailableError. */
export async function brokerRequest(
  baseUrl: string,
  method: 'GET' | 'POST',
  pathAndQuery: string,
  options: {
    token?: string
    /** TLS settings of the edge (tls.*, allowInsecureHttp). */
    tls?: TlsClientOptions
    body?: unknown
    timeoutMs?: number
    signal?: AbortSignal
    maxResponseBytes?: number
  } = {},
): Promise<RequestResult> {
  const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body))
  let reply: HttpReply
  // Outside the try: refusing http:// or an unreadable tls.* file is a ConfigError, not "unavailable".
  const client = clientFor(baseUrl, options.tls)
  try {
    reply = await client.request({
      method,
      path: pathAndQuery,
      headers: {
        accept: 'application/json',
        ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
        ...(payload ? { 'content-type': 'application/json' } : {}),
      },
      body: payload,
      timeoutMs: options.timeoutMs ?? 30_000,
      maxResponseBytes: options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
      signal: options.signal,
    })
  } catch (err) {
    throw unavailable(baseUrl, err as Error)
  }
  const text = reply.body.toString('utf8')
  let body: unknown = text
  try {
    body = text ? JSON.parse(text) : undefined
  } catch {
    // not JSON: keep the text
  }
  return { status: reply.status, headers: reply.headers, body }
}

function unavailable(baseUrl: string, err: Error): Error {
  if (err instanceof HttpFailure && err.kind === 'aborted')
    return Object.assign(new Error(err.message), { name: 'AbortError' })
  if (err instanceof HttpFailure && err.error) return err.error
  return new BrokerUnavailableError(`cannot reach the broker at ${baseUrl}: ${err.message}`, {
    suggestion: 'check brokerUrl (RMQ_BROKER_URL) and that `rmq broker start` is running there',
    cause: err,
  })
}

/** Turn a non-2xx answer into the matching error class. */
export function brokerError(res: RequestResult, what: string): Error {
  const b = res.body as { error?: string; code?: string } | undefined
  const reason = typeof b === 'object' && b?.error ? b.error : `HTTP ${res.status}`
  if (res.status === 401)
    return new ConfigError(`the broker rejected the token (${reason})`, {
      suggestion: 'set token (RMQ_TOKEN) to a token from `rmq broker token create NODE`',
    })
  // The credential's role or grants do not cover this (docs/security.md#roles-and-authorization).
  if (res.status === 403 && b?.code === 'FORBIDDEN')
    return new ConfigError(`${what}: the broker refused it (${reason})`, {
      suggestion:
        'use a token whose role allows it: rmq consume needs a consumer token whose --topics cover the filter ' +
        "(`rmq broker token create NAME --role consumer --topics 'plant/#'`), rmq status --broker a monitor one (--role monitor)",
    })
  if (res.status === 400) return new ValidationError(`${what}: ${reason}`)
  if (res.status === 429 || res.status >= 500)
    return new BrokerUnavailableError(`${what}: broker answered ${res.status} (${reason})`, {
      suggestion: 'retry later',
      details: { status: res.status },
    })
  return new RejectedError(`${what}: broker answered ${res.status} (${reason})`, {
    details: { status: res.status },
  })
}
