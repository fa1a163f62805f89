/**
 * What a batch body must be before it is stored, in one place for the two
 * threads that take batches apart: the event loop (routes/batches.ts) and
 * the threaded SQLite store's writer thread, which parses large JSON bodies
 * itself (store/sqlite-worker.ts) so that the event loop only ever holds
 * their bytes. Every refusal is an HttpError, so both give the same answer.
 */
import { isUtf8 } from 'node:buffer'
import { createRequire } from 'node:module'
import { BROKER_FEATURES, topicProblem, type BatchAck, type BatchBody } from '../protocol/batch.js'
import { boundEventTime, type EventTimeBound } from './event-time.js'
import { HttpError } from './http-error.js'
import { compactStats } from './node-stats.js'
import { AJV_OPTIONS, BASE64_RE, batchBodySchema, STATS_MAX_BYTES } from './schemas.js'

/** What the checks need to know of the request and the broker. */
export interface BatchCheckOptions {
  /** broker.limits.messageBytes. */
  messageBytes: number
  /** The node the credential names (null: no authentication) and what named it. */
  authNode: string | null
  authBy?: string | null
  /** Broker time for the event-time bound (ms). */
  now: number
  futureSkew: EventTimeBound
}

/** The acknowledgement of DESIGN.md §4 for a stored batch. */
export type BatchReply = BatchAck & { batch: string; count: number; features: string[] }

export function batchReply(ack: BatchAck, body: BatchBody): BatchReply {
  return { ...ack, batch: body.batch, count: body.messages.length, features: [...BROKER_FEATURES] }
}

/** A JSON body not parsed yet, as its decoded bytes (plugins/body-decoding.ts LARGE_JSON_BYTES). */
export class JsonBytes {
  constructor(readonly bytes: Buffer) {}
}

/** A JSON body's text: strict UTF-8 (JSON.parse would store invalid bytes as U+FFFD; frames refuse them too). */
export function jsonText(bytes: Uint8Array): string {
  if (!isUtf8(bytes)) throw new HttpError(400, 'INVALID_UTF8', 'the JSON body is not valid UTF-8')
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')
}

export function parseJsonText(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new HttpError(400, 'MALFORMED_JSON', `the body is not valid JSON: ${(err as Error).message}`)
  }
}

export function parseJsonBody(bytes: Uint8Array): unknown {
  return parseJsonText(jsonText(bytes))
}

type Validator = ((data: unknown) => boolean) & {
  errors?: { instancePath?: string; message?: string }[] | null
}
let validator: Validator | undefined

/**
 * The batch schema, compiled by the compiler Fastify uses with the broker's
 * options (app.ts), and its refusal worded as Fastify words it
 * (`body/messages/0/seq must be integer`).
 */
export function validateBatchBody(data: unknown): BatchBody {
  const validate = compileBatchValidator()
  if (!validate(data)) {
    const text = (validate.errors ?? []).map((e) => `body${e.instancePath ?? ''} ${e.message}`).join(', ')
    throw new HttpError(400, 'INVALID_BODY', text)
  }
  return data as BatchBody
}

/** The compiled batch schema (compiled once per thread, on first use). */
export function compileBatchValidator(): Validator {
  if (!validator) {
    const require = createRequire(import.meta.url)
    const { AjvCompiler } = require('@fastify/ajv-compiler') as {
      AjvCompiler: () => (
        external: object,
        options: { customOptions: object },
      ) => (route: { schema: object; method: string; url: string; httpPart: string }) => Validator
    }
    validator = AjvCompiler()({}, { customOptions: AJV_OPTIONS })({
      schema: batchBodySchema,
      method: 'POST',
      url: '/v1/batches',
      httpPart: 'body',
    })
  }
  return validator
}

/** Decoded size of a payload as sent (a UTF-8 text or base64). */
function payloadBytes(payload: string, enc: 'utf8' | 'base64'): number {
  if (enc === 'utf8') return Buffer.byteLength(payload, 'utf8')
  const pad = payload.endsWith('==') ? 2 : payload.endsWith('=') ? 1 : 0
  return (payload.length / 4) * 3 - pad
}

/** The credential's node must be the batch's node (403). */
export function checkBatchNode(body: BatchBody, authNode: string | null, authBy?: string | null): void {
  if (authNode !== null && body.node !== authNode)
    throw new HttpError(
      403,
      'WRONG_NODE',
      `this ${authBy === 'certificate' ? 'client certificate' : 'token'} belongs to node ${authNode}, not ${body.node}`,
    )
}

/**
 * Everything a schema-valid batch must also be: from the credential's node,
 * each seq once, valid topics and base64, payloads within messageBytes,
 * stats within their size (then kept as their fixed fields only), and event
 * time within the bound (which may clamp timestamps). Changes `body` in place.
 */
export function checkBatch(body: BatchBody, o: BatchCheckOptions): void {
  checkBatchNode(body, o.authNode, o.authBy)
  const { messageBytes } = o
  // A batch repeats a few topics thousands of times: each is checked once.
  const checkedTopics = new Set<string>()
  // A seq appears once per batch. Batches are mostly ascending, so a Set is built only after a step down.
  let lastSeq = 0
  let seen: Set<number> | undefined
  for (let i = 0; i < body.messages.length; i++) {
    const m = body.messages[i]
    if (m.seq <= lastSeq || seen) {
      seen ??= new Set(body.messages.slice(0, i).map((x) => x.seq))
      if (seen.has(m.seq))
        throw new HttpError(
          400,
          'DUPLICATE_SEQ',
          `body/messages/${i}/seq: seq ${m.seq} appears twice in this batch; each message is sent once per batch`,
        )
      seen.add(m.seq)
    }
    lastSeq = m.seq
    if (!checkedTopics.has(m.topic)) {
      const problem = topicProblem(m.topic, { forPublish: true })
      if (problem) throw new HttpError(400, 'INVALID_BODY', `body/messages/${i}/topic: ${problem}`)
      checkedTopics.add(m.topic)
    }
    if (m.enc === 'base64' && (m.payload.length % 4 !== 0 || !BASE64_RE.test(m.payload)))
      throw new HttpError(400, 'INVALID_BODY', `body/messages/${i}/payload: not valid base64`)
    // UTF-8 takes at most 3 bytes per UTF-16 unit, base64 decodes to 3/4: most payloads need no count.
    if (m.payload.length * 3 > messageBytes) {
      const size = payloadBytes(m.payload, m.enc)
      if (size > messageBytes)
        throw new HttpError(
          413,
          'MESSAGE_TOO_LARGE',
          `body/messages/${i}: message seq ${m.seq} on topic ${JSON.stringify(m.topic)} has a payload of ` +
            `${size} bytes, over broker.limits.messageBytes (${messageBytes}); nothing of this batch was stored`,
        )
    }
  }
  // The schema bounds every part of stats; this bounds the whole the store keeps and every status read parses.
  if (body.stats !== undefined) {
    const size = Buffer.byteLength(JSON.stringify(body.stats))
    if (size > STATS_MAX_BYTES)
      throw new HttpError(
        413,
        'STATS_TOO_LARGE',
        `body/stats: ${size} bytes serialised, over the limit of ${STATS_MAX_BYTES}; send the counters rmq sends (docs/protocol.md)`,
      )
    // Kept as the fixed fields the status API, alerts and /metrics read, not as sent.
    body.stats = compactStats(body.stats)
  }
  boundEventTime(body, o.now, o.futureSkew)
}
