/**
 * JSON schemas of the wire protocol (docs/protocol.md), compiled by fastify's
 * ajv with type coercion and property removal turned off: a request either
 * is valid as sent or is refused with 400 and nothing is stored.
 */
import { HEADER_VALUE_MAX, HEADERS_MAX, MAX_TS, TOPIC_MAX_BYTES } from '../protocol/batch.js'
import { NODE_ID_MAX, NODE_ID_PATTERN } from '../protocol/node-id.js'

export { MAX_TS }
export { NODE_ID_MAX, NODE_ID_PATTERN }
export const MAX_MESSAGES_PER_BATCH = 100_000

// Epoch milliseconds are whole numbers: the edge stores only those, so a fraction is a forged or broken body.
const timestamp = { type: 'integer', minimum: 0, maximum: MAX_TS } as const
const count = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } as const

export const nodeIdSchema = {
  type: 'string',
  minLength: 1,
  maxLength: NODE_ID_MAX,
  pattern: NODE_ID_PATTERN,
} as const

export const wireMessageSchema = {
  type: 'object',
  required: ['seq', 'topic', 'ts', 'payload', 'enc'],
  properties: {
    seq: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
    // Byte length, lone surrogates and wildcards are checked again in code (topicProblem).
    topic: { type: 'string', minLength: 1, maxLength: TOPIC_MAX_BYTES, pattern: '^[^\\u0000+#]+$' },
    ts: timestamp,
    payload: { type: 'string' },
    enc: { type: 'string', enum: ['utf8', 'base64'] },
    expiresAt: { anyOf: [timestamp, { type: 'null' }] },
    priority: { type: 'integer', minimum: 0, maximum: 9 },
    contentType: { anyOf: [{ type: 'string', maxLength: 255 }, { type: 'null' }] },
    headers: {
      anyOf: [
        {
          type: 'object',
          maxProperties: HEADERS_MAX,
          additionalProperties: { type: 'string', maxLength: HEADER_VALUE_MAX },
        },
        { type: 'null' },
      ],
    },
  },
} as const

/** The name of one stat: short (the values are bounded too, so the whole object is). */
const statName = { maxLength: 64 } as const

/** A counter or a short text: what a node's stats are made of. */
const statValue = {
  anyOf: [{ type: 'number' }, { type: 'string', maxLength: 500 }, { type: 'boolean' }, { type: 'null' }],
} as const

/**
 * A node's reported stats (docs/protocol.md): two groups of scalar values,
 * `sync` (with `backoff`, one more level) and `storage`. The shape is fixed
 * and small, so a node cannot make the broker store, re-serialise and scrape
 * megabytes of it, or nest it deeply enough to exhaust a stack.
 */
export const statsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    sync: {
      type: 'object',
      maxProperties: 32,
      propertyNames: statName,
      properties: {
        backoff: {
          anyOf: [
            { type: 'object', maxProperties: 16, propertyNames: statName, additionalProperties: statValue },
            { type: 'null' },
          ],
        },
      },
      additionalProperties: statValue,
    },
    storage: { type: 'object', maxProperties: 32, propertyNames: statName, additionalProperties: statValue },
  },
} as const

/** Serialised size a valid `stats` may have at most (413 STATS_TOO_LARGE): a few times what an edge sends. */
export const STATS_MAX_BYTES = 16 * 1024

export const batchBodySchema = {
  type: 'object',
  required: ['node', 'epoch', 'batch', 'clock', 'backlog', 'messages'],
  properties: {
    node: nodeIdSchema,
    epoch: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[\\x21-\\x7e]+$' },
    batch: { type: 'string', minLength: 1, maxLength: 128 },
    clock: timestamp,
    direct: { type: 'boolean' },
    backlog: {
      type: 'object',
      required: ['pending', 'bytes', 'oldestTs'],
      properties: {
        pending: count,
        bytes: count,
        oldestTs: { anyOf: [timestamp, { type: 'null' }] },
        unacked: {
          type: 'object',
          required: ['batch', 'oldestTs'],
          properties: { batch: { type: 'string', minLength: 1, maxLength: 128 }, oldestTs: timestamp },
        },
      },
    },
    stats: statsSchema,
    messages: { type: 'array', maxItems: MAX_MESSAGES_PER_BATCH, items: wireMessageSchema },
  },
} as const

export const batchAckSchema = {
  type: 'object',
  properties: {
    accepted: { type: 'integer' },
    duplicates: { type: 'integer' },
    late: { type: 'integer' },
    watermark: { type: ['number', 'null'] },
    features: { type: 'array', items: { type: 'string' } },
    batch: { type: 'string' },
    count: { type: 'integer' },
  },
} as const

/** The options of the schema compiler (Fastify's Ajv), for the routes and for batch-checks.ts alike. */
export const AJV_OPTIONS = {
  coerceTypes: false,
  removeAdditional: false,
  useDefaults: false,
  allErrors: false,
} as const

export const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/
