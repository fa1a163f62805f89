import { isUtf8 } from 'node:buffer'

/**
 * Wire protocol v1 between edge and broker (docs/protocol.md). Shared by the
 * sync engine, the direct-mode producer, the broker and the tests.
 */
export const PROTOCOL_VERSION = 1

export interface WireMessage {
  seq: number
  topic: string
  /** Original generation time, epoch ms (node clock). */
  ts: number
  payload: string
  enc: 'utf8' | 'base64'
  expiresAt: number | null
  priority: number
  contentType: string | null
  headers?: Record<string, string> | null
}

export interface Backlog {
  /** Messages still pending on the node after this batch. */
  pending: number
  bytes: number
  /** Oldest `ts` still pending after this batch, or null when none. */
  oldestTs: number | null
  /**
   * A batch sent before this one and not yet acknowledged when this one was
   * sent (pipelining, docs/protocol.md): `oldestTs` above leaves its messages
   * out. The broker uses `oldestTs` only if that batch is already committed,
   * else the lower of the two.
   */
  unacked?: { batch: string; oldestTs: number }
}

export interface BatchBody {
  node: string
  epoch: string
  /** Unique id of this request, for logs and tracing. */
  batch: string
  /** The node's clock when it sent the batch, epoch ms. */
  clock: number
  /**
   * Direct-mode producers hold nothing back, so they never hold the
   * broker's watermark back either (DESIGN §3 refinement, docs/ordering.md).
   */
  direct?: boolean
  backlog: Backlog
  stats?: Record<string, unknown>
  messages: WireMessage[]
}

export interface BatchAck {
  accepted: number
  duplicates: number
  /** Accepted messages whose ts was already below the watermark. */
  late: number
  watermark: number | null
  /** What this broker supports beyond protocol v1's JSON batches, one at a time (BROKER_FEATURES). */
  features?: string[]
  /**
   * The batch id and message count the ack is for, echoed by the broker in
   * every ack it sends (stores leave them out); the edge takes an answer as
   * an ack only when both match what it sent (verifyAck).
   */
  batch?: string
  count?: number
}

/**
 * Broker features a node may use once an ack lists them (docs/protocol.md):
 * `pipeline`, the broker honours `backlog.unacked`, so a node may send a
 * batch before the previous one is acknowledged; `frames`, the broker takes
 * bodies of FRAMES_CONTENT_TYPE.
 */
export const BROKER_FEATURES = ['pipeline', 'frames'] as const

/**
 * A batch as frames: the batch's JSON, in which each message has `size`
 * (the byte length of its payload's UTF-8 text) in place of `payload`, a
 * line feed, then the payloads back to back. Payloads are not JSON-escaped
 * on the edge or unescaped at the broker, which is about a third of the
 * CPU time of a batch of JSON telemetry on each side.
 */
export const FRAMES_CONTENT_TYPE = 'application/vnd.rmq.frames'

/** One message as frames: its JSON with `size` in place of `payload`, and the payload's bytes. */
export function toFrame(w: WireMessage): { json: string; payload: Buffer } {
  const { payload, ...rest } = w
  const bytes = Buffer.from(payload, 'utf8')
  return { json: JSON.stringify({ ...rest, size: bytes.length }), payload: bytes }
}

/** A batch as a frames body, before compression (the sync engine builds the same bytes in SQL). */
export function encodeFrames(body: BatchBody): Buffer {
  const frames = body.messages.map(toFrame)
  const head = JSON.stringify({ ...body, messages: undefined }).slice(0, -1)
  return Buffer.concat([
    Buffer.from(`${head},"messages":[${frames.map((f) => f.json).join(',')}]}\n`),
    ...frames.map((f) => f.payload),
  ])
}

/** Why a frames body cannot be read (the broker answers 400). */
export class MalformedFramesError extends Error {}

/**
 * The batch in a frames body, with each message's `payload` cut from the
 * payload section. Only the framing is checked here; the batch is then
 * validated like a JSON one.
 */
export function decodeFrames(buf: Buffer): BatchBody {
  const nl = buf.indexOf(10)
  if (nl < 0) throw new MalformedFramesError('no line feed after the batch JSON')
  let body: BatchBody
  try {
    body = JSON.parse(buf.toString('utf8', 0, nl)) as BatchBody
  } catch (err) {
    throw new MalformedFramesError(`the batch JSON is not valid: ${(err as Error).message}`)
  }
  const messages = body?.messages
  if (!Array.isArray(messages)) throw new MalformedFramesError('the batch JSON has no messages array')
  const end = buf.length
  if (!isUtf8(buf.subarray(nl + 1))) throw new MalformedFramesError('the payloads are not valid UTF-8')
  let off = nl + 1
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i] as WireMessage & { size?: unknown }
    const size = m?.size
    if (typeof size !== 'number' || !Number.isInteger(size) || size < 0 || off + size > end)
      throw new MalformedFramesError(`messages/${i}/size: not a byte count within the payloads`)
    // A payload must start and end on a character boundary (UTF-8 continuation bytes are 10xxxxxx).
    if (size > 0 && (buf[off] & 0xc0) === 0x80)
      throw new MalformedFramesError(`messages/${i}/size: the payload starts inside a UTF-8 character`)
    m.payload = buf.toString('utf8', off, off + size)
    off += size
  }
  if (off !== end)
    throw new MalformedFramesError(`the payloads are ${end - off} byte(s) longer than the sizes add up to`)
  return body
}

/** Limits a topic must respect (validated by publish and by the broker). */
export const TOPIC_MAX_BYTES = 1024
/**
 * Limits of the other message fields, the same at publish and at the broker:
 * what the edge accepts the broker must accept too, or it would sit in the
 * outbox for ever as a batch the broker refuses (docs/guarantees.md).
 * MAX_TS is 9999-12-31T23:59:59.999Z, the latest instant dates handle sanely.
 */
export const MAX_TS = 253_402_300_799_999
export const HEADERS_MAX = 64
export const HEADER_VALUE_MAX = 4096

export function encodePayload(buf: Uint8Array): { payload: string; enc: 'utf8' | 'base64' } {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  // A fatal decoder rejects invalid UTF-8, so `utf8` always round-trips byte for byte.
  try {
    return { payload: utf8Strict.decode(b), enc: 'utf8' }
  } catch {
    return { payload: b.toString('base64'), enc: 'base64' }
  }
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

export function decodePayload(payload: string, enc: 'utf8' | 'base64'): Buffer {
  return enc === 'base64' ? Buffer.from(payload, 'base64') : Buffer.from(payload, 'utf8')
}

/** Global message id: node:epoch:seq. */
export function messageId(node: string, epoch: string, seq: number): string {
  return `${node}:${epoch}:${seq}`
}

/** Why a topic is invalid, or undefined when it is fine. */
export function topicProblem(topic: string, { forPublish }: { forPublish: boolean }): string | undefined {
  if (typeof topic !== 'string' || topic.length === 0) return 'the topic is empty'
  if (Buffer.byteLength(topic, 'utf8') > TOPIC_MAX_BYTES)
    return `the topic is longer than ${TOPIC_MAX_BYTES} bytes`
  if (topic.includes('\u0000')) return 'the topic contains a NUL character'
  if (/[\uD800-\uDFFF]/.test(topic.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, '')))
    return 'the topic is not valid UTF-8 (lone surrogate)'
  if (forPublish && /[+#]/.test(topic))
    return 'the topic contains a wildcard (+ or #), which only filters may use'
  return undefined
}
