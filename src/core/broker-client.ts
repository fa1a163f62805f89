/**
 * One HTTP client for `POST /v1/batches`, shared by the sync engine and the
 * direct-mode producer: JSON encoding, compression, a keep-alive connection
 * reused across batches, and the classification of every outcome the wire
 * protocol defines (DESIGN §4), over the one HTTP client (http-client.ts, node:http).
 */
import type { Codec } from './compression/codec.js'
import type { RmqConfig } from './config/schema.js'
import { HttpClient, HttpFailure } from './http-client.js'
import { tlsFromConfig, type TlsClientOptions } from './tls.js'
import type { ConfigError } from '../shared/errors.js'
import { FRAMES_CONTENT_TYPE, type BatchAck, type BatchBody } from '../protocol/batch.js'

export interface BrokerClientOptions {
  brokerUrl: string
  /** Bearer token; empty for brokers run with broker.auth=none. */
  token: string
  codec: Codec
  level: number
  /** Timeout of one request, ms. */
  timeout: number
  /** Private CA, client certificate, allowInsecureHttp. */
  tls?: TlsClientOptions
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
  /**
   * 429, 5xx, network error or timeout: try again later. `protocol`: a 2xx
   * that is not the acknowledgement of this batch (nothing counts as stored).
   */
  | { kind: 'retry'; status?: number; reason: string; retryAfterMs?: number; protocol?: boolean }
  /** 401/403: the token is missing, wrong, or bound to another node. */
  | { kind: 'auth'; status: number; reason: string }
  /** 413: the body or its decompressed size is over the broker's limit. */
  | { kind: 'too-large'; status: number; reason: string }
  /** Any other 4xx: the broker refuses this batch as it is. */
  | { kind: 'rejected'; status: number; reason: string }
  /** The caller's signal aborted the request (the batch may or may not have been committed). */
  | { kind: 'aborted' }
  /** The broker's certificate is not trusted (or ours refused): a setting to fix, nothing was stored. */
  | { kind: 'tls'; reason: string; error: ConfigError }

/** An acknowledgement is a small JSON object; anything larger is not one. */
export const MAX_ACK_BYTES = 64 * 1024

export class BrokerClient {
  readonly url: string
  private readonly http: HttpClient

  constructor(private readonly options: BrokerClientOptions) {
    // Two connections: the sync engine keeps at most two batches in flight.
    this.http = new HttpClient(options.brokerUrl, { maxSockets: 2, tls: options.tls })
    this.url = this.http.url('v1/batches').href
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
    const headers: Record<string, string> = {
      'content-type': batch.contentType,
      'content-encoding': this.options.codec.encoding,
      'user-agent': 'rmq/1',
    }
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`
    let res
    try {
      res = await this.http.request({
        method: 'POST',
        path: 'v1/batches',
        headers,
        body: batch.wire,
        timeoutMs: this.options.timeout,
        maxResponseBytes: MAX_ACK_BYTES,
        signal,
        onUploaded,
      })
    } catch (err) {
      if (signal?.aborted) return { kind: 'aborted' }
      if (err instanceof HttpFailure && err.error)
        return { kind: 'tls', reason: err.message, error: err.error }
      return { kind: 'retry', reason: (err as Error).message }
    }
    const status = res.status
    const text = res.body.toString('utf8')
    if (status >= 200 && status < 300) {
      const sent = batch.count ?? batch.body.messages.length
      const verdict = verifyAck(status, res.headers['content-type'], text, batch.body.batch, sent)
      if (typeof verdict === 'string') return { kind: 'retry', status, reason: verdict, protocol: true }
      return { kind: 'ok', status, ack: verdict }
    }
    if (status >= 300 && status < 400) {
      const to = res.headers.location ? ` to ${res.headers.location}` : ''
      const reason = `broker answered ${status} (a redirect${to}) for batch ${batch.body.batch}: rmq does not follow redirects; set brokerUrl to the broker's own URL`
      return { kind: 'retry', status, reason, protocol: true }
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
    this.http.close()
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
    tls: tlsFromConfig(config, cwd),
  })
}

/**
 * The acknowledgement of batch `batchId` carrying `sent` messages, or why the
 * answer is not one (DESIGN §4, docs/protocol.md "What the edge takes as an
 * ack"): status 200, a JSON content type, a JSON object that echoes the batch
 * id and the count, whole non-negative counters, and accepted + duplicates
 * equal to what was sent. A broker that answers anything else has stored
 * nothing that the edge may forget.
 */
export function verifyAck(
  status: number,
  contentType: string | undefined,
  text: string,
  batchId: string,
  sent: number,
): BatchAck | string {
  const no = (why: string) =>
    `broker answered ${status} without an acknowledgement for batch ${batchId}: ${why}`
  if (status !== 200) return no(`status ${status}, expected 200`)
  if (!/^application\/json\b/i.test(contentType ?? ''))
    return no(`content type ${JSON.stringify(contentType ?? '')}, expected application/json`)
  let ack: Record<string, unknown>
  try {
    ack = JSON.parse(text)
  } catch {
    return no(`the body is not JSON (${JSON.stringify(text.slice(0, 60))})`)
  }
  if (typeof ack !== 'object' || ack === null || Array.isArray(ack))
    return no('the body is not a JSON object')
  if (ack.batch !== batchId) return no(`it acknowledges batch ${JSON.stringify(ack.batch)}`)
  const count = (k: string) => Number.isSafeInteger(ack[k]) && (ack[k] as number) >= 0
  for (const k of ['accepted', 'duplicates', 'late', 'count'])
    if (!count(k)) return no(`${k} is ${JSON.stringify(ack[k])}, expected a whole number >= 0`)
  if (ack.count !== sent) return no(`it counts ${ack.count as number} messages, ${sent} were sent`)
  if ((ack.accepted as number) + (ack.duplicates as number) !== sent)
    return no(
      `accepted ${ack.accepted as number} + duplicates ${ack.duplicates as number} is not the ${sent} sent`,
    )
  if ((ack.late as number) > (ack.accepted as number)) return no('more messages late than accepted')
  if (ack.watermark !== null && !Number.isSafeInteger(ack.watermark))
    return no(`watermark is ${JSON.stringify(ack.watermark)}`)
  if (
    ack.features !== undefined &&
    !(Array.isArray(ack.features) && ack.features.every((f) => typeof f === 'string'))
  )
    return no('features is not a list of names')
  return ack as unknown as BatchAck
}
