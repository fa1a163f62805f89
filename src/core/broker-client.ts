/**
 * One HTTP client for `POST /v1/batches`, shared by the sync engine and the
 * direct-mode producer: JSON encoding, compression, a keep-alive connection
 * reused across batches, and the classification of every outcome the wire
 * protocol defines (DESIGN §4). got is imported on first use only.
 */
import http from 'node:http'
import https from 'node:https'
import type { Codec } from './compression/codec.js'
import type { RmqConfig } from './config/schema.js'
import { FRAMES_CONTENT_TYPE, type BatchAck, type BatchBody } from './protocol.js'

export interface BrokerClientOptions {
  brokerUrl: string
  /** Bearer token; empty for brokers run with broker.auth=none. */
  token: string
  codec: Codec
  level: number
  /** Timeout of one request, ms. */
  timeout: number
}

/** A batch encoded and compressed, ready to send (and to measure against a budget). */
export interface EncodedBatch {
  body: BatchBody
  wire: Buffer
  rawBytes: number
  wireBytes: number
  /** Messages on the wire, when they are not in body.messages (encode with messagesJson). */
  count?: number
  /** application/json, or FRAMES_CONTENT_TYPE when encoded with payloads. */
  contentType: string
}

export type PostOutcome =
  | { kind: 'ok'; status: number; ack: BatchAck }
  /** 429, 5xx, network error or timeout: try again later. */
  | { kind: 'retry'; status?: number; reason: string; retryAfterMs?: number }
  /** 401/403: the token is missing, wrong, or bound to another node. */
  | { kind: 'auth'; status: number; reason: string }
  /** 413: the body or its decompressed size is over the broker's limit. */
  | { kind: 'too-large'; status: number; reason: string }
  /** Any other 4xx: the broker refuses this batch as it is. */
  | { kind: 'rejected'; status: number; reason: string }
  /** The caller's signal aborted the request (the batch may or may not have been committed). */
  | { kind: 'aborted' }

type Got = typeof import('got').default

let gotPromise: Promise<Got> | undefined
/** got, loaded on first use: the build's one-file bundle of it (dist/vendor/got.js), else the package. */
function loadGot(): Promise<Got> {
  gotPromise ??= (import(new URL('../vendor/got.js', import.meta.url).href) as Promise<{ default: Got }>)
    .catch(() => import('got'))
    .then((m) => m.default)
  return gotPromise
}

export class BrokerClient {
  readonly url: string
  private readonly agent: { http: http.Agent; https: https.Agent }

  constructor(private readonly options: BrokerClientOptions) {
    this.url = `${options.brokerUrl.replace(/\/+$/, '')}/v1/batches`
    this.agent = {
      http: new http.Agent({ keepAlive: true, maxSockets: 2 }),
      https: new https.Agent({ keepAlive: true, maxSockets: 2 }),
    }
  }

  get codec(): Codec {
    return this.options.codec
  }

  /**
   * JSON-encode and compress a batch. `messagesJson`, when given, are the
   * messages already serialised and go on the wire in place of
   * body.messages, which must then be empty: each WireMessage's JSON, or
   * (as the sync engine gets them from the outbox) all of them joined by `,`
   * as UTF-8 bytes, which are copied once and never decoded. `count` is the
   * number of messages then (the broker's ack falls back on it). With
   * `payloads`, the messages are frames (WireFrames) and so is the body.
   */
  async encode(
    body: BatchBody,
    messagesJson?: string[] | Buffer,
    count?: number,
    payloads?: Buffer,
  ): Promise<EncodedBatch> {
    let raw: Buffer
    const json = JSON.stringify(body)
    if (messagesJson) {
      const tail = '"messages":[]}'
      if (body.messages.length > 0 || !json.endsWith(tail))
        throw new Error('encode: with messagesJson, body.messages must be empty and its last key')
      const head = json.slice(0, -2)
      raw = Buffer.isBuffer(messagesJson)
        ? Buffer.concat([
            Buffer.from(head),
            messagesJson,
            Buffer.from(payloads ? ']}\n' : ']}'),
            ...(payloads ? [payloads] : []),
          ])
        : Buffer.from(`${head}${messagesJson.join(',')}]}`)
    } else raw = Buffer.from(json)
    const wire = await this.options.codec.compress(raw, { level: this.options.level })
    const n = count ?? (Array.isArray(messagesJson) ? messagesJson.length : body.messages.length)
    const contentType = payloads && Buffer.isBuffer(messagesJson) ? FRAMES_CONTENT_TYPE : 'application/json'
    return { body, wire, rawBytes: raw.length, wireBytes: wire.length, count: n, contentType }
  }

  /** POST a batch; `onUploaded` is called once the whole body has been written to the socket. */
  async post(batch: EncodedBatch, signal?: AbortSignal, onUploaded?: () => void): Promise<PostOutcome> {
    const got = await loadGot()
    const headers: Record<string, string> = {
      'content-type': batch.contentType,
      'content-encoding': this.options.codec.encoding,
      'user-agent': 'rmq/1',
    }
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`
    let res
    try {
      const req = got.post(this.url, {
        body: batch.wire,
        headers,
        agent: this.agent,
        timeout: { request: this.options.timeout },
        retry: { limit: 0 },
        throwHttpErrors: false,
        decompress: false,
        followRedirect: false,
        responseType: 'text',
        signal,
      })
      if (onUploaded) req.on('uploadProgress', (p) => p.percent === 1 && onUploaded())
      res = await req
    } catch (err) {
      if (signal?.aborted) return { kind: 'aborted' }
      return { kind: 'retry', reason: networkReason(err, this.options.timeout, this.url) }
    }
    const status = res.statusCode
    const text = res.body
    if (status >= 200 && status < 300) {
      let ack: BatchAck
      try {
        ack = JSON.parse(text) as BatchAck
      } catch {
        ack = { accepted: batch.count ?? batch.body.messages.length, duplicates: 0, late: 0, watermark: null }
      }
      return { kind: 'ok', status, ack }
    }
    const reason = brokerReason(status, text)
    if (status === 429 || status >= 500) {
      return { kind: 'retry', status, reason, retryAfterMs: parseRetryAfter(res.headers['retry-after']) }
    }
    if (status === 401 || status === 403) return { kind: 'auth', status, reason }
    if (status === 413) return { kind: 'too-large', status, reason }
    return { kind: 'rejected', status, reason }
  }

  close(): void {
    this.agent.http.destroy()
    this.agent.https.destroy()
  }
}

/** The broker's own words for a refusal: `{ error: { message } }`, `{ error }`, `{ reason }` or the text. */
export function brokerReason(status: number, text: string): string {
  let reason = text.trim()
  try {
    const j = JSON.parse(text) as Record<string, any>
    const e = j.error
    reason =
      (typeof e === 'object' && e !== null ? (e.message ?? e.reason) : e) ?? j.reason ?? j.message ?? reason
  } catch {
    // not JSON: keep the text
  }
  reason = String(reason).slice(0, 500)
  return `HTTP ${status}${reason ? `: ${reason}` : ''}`
}

function networkReason(err: unknown, timeout: number, url: string): string {
  const e = err as { code?: string; name?: string; message?: string }
  if (e.name === 'TimeoutError' || e.code === 'ETIMEDOUT') return `no answer from ${url} within ${timeout} ms`
  if (e.code === 'ECONNREFUSED') return `connection refused by ${url} (is the broker running?)`
  if (e.code === 'ECONNRESET' || e.code === 'EPIPE') return `connection to ${url} was reset mid-request`
  if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') return `cannot resolve the broker host of ${url}`
  return `${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}`
}

/** Retry-After: delta seconds or an HTTP date; ms from now, or undefined. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value
  if (!v) return undefined
  if (/^\s*\d+(\.\d+)?\s*$/.test(v)) return Math.round(Number(v) * 1000)
  const t = Date.parse(v)
  return Number.isNaN(t) ? undefined : Math.max(0, t - now)
}

/** A client for the configured broker, token and codec (resolved lazily unless given). */
export async function brokerClientFromConfig(
  config: RmqConfig,
  cwd?: string,
  options: { codec?: Codec; timeout?: number } = {},
): Promise<BrokerClient> {
  const codec =
    options.codec ??
    (await (await import('./compression/registry.js')).resolveCodec(config.compression.codec, cwd))
  return new BrokerClient({
    brokerUrl: config.brokerUrl,
    token: config.token,
    codec,
    level: config.compression.level,
    timeout: options.timeout ?? config.sync.timeout,
  })
}
