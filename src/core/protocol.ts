import type { StoredMessage } from '../plugins/storage/types.js'

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

/** One wire message from an outbox row. */
export function toWireMessage(m: StoredMessage): WireMessage {
  const { payload, enc } = encodePayload(m.payload)
  const w: WireMessage = {
    seq: m.seq,
    topic: m.topic,
    ts: m.ts,
    payload,
    enc,
    expiresAt: m.expiresAt,
    priority: m.priority,
    contentType: m.contentType,
  }
  if (m.headers) w.headers = m.headers
  return w
}
