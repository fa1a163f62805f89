/**
 * The edge outbox: open the configured StorageDriver, validate and build
 * messages, and store them. `rmq publish` and the Producer API both go
 * through publishRecords / publishLines, so validation and ids are the same
 * everywhere. Contracts: DESIGN §2, docs/storage.md.
 */
import fs from 'node:fs'
import path from 'node:path'
import { edgeNow } from '../shared/clock.js'
import type { RmqConfig } from './config/schema.js'
import { ensurePrivateDir } from '../shared/private-files.js'
import { ConfigError, ValidationError, isRmqError, type RmqError } from '../shared/errors.js'
import { HEADER_VALUE_MAX, HEADERS_MAX, MAX_TS, messageId, topicProblem } from '../protocol/batch.js'
import { formatBytes, parseDuration, parseTimestamp, DURATION_FORMS } from '../shared/units.js'
import { completeDriver, type CompleteDriver } from './storage/complete-driver.js'
import { recordNodeIdentity } from './identity.js'
import { resolveStorageDriver } from './storage/registry.js'
import type { NewMessage, StorageDriver, StorageOptions } from './storage/driver.js'

export const DEFAULT_PRIORITY = 4

/**
 * Open the outbox named by `storage.*`; relative paths resolve against `cwd`,
 * whose directory is created. The driver comes completed (completeDriver):
 * every fast path is there, the driver's own or a fallback.
 */
export async function openOutbox(
  config: RmqConfig,
  cwd = process.cwd(),
  overrides: Partial<StorageOptions> = {},
): Promise<CompleteDriver> {
  const factory = await resolveStorageDriver(config.storage.driver, cwd)
  const file = path.resolve(cwd, config.storage.path)
  if (config.storage.driver !== 'memory' && !overrides.readOnly) {
    try {
      // Owner-only: the outbox holds every payload (the database file itself: the sqlite driver).
      ensurePrivateDir(path.dirname(file))
      fs.mkdirSync(path.dirname(file), { recursive: true })
    } catch (err) {
      throw new ConfigError(
        `cannot create the outbox directory ${path.dirname(file)}: ${(err as Error).message}`,
        {
          suggestion: 'set storage.path to a writable location',
        },
      )
    }
  }
  const driver = await factory({
    path: file,
    maxBytes: config.storage.maxBytes,
    maxMessages: config.storage.maxMessages,
    overflow: config.storage.overflow,
    durability: config.storage.durability,
    ...overrides,
  })
  // The node this outbox stores for, recorded once (sync refuses to send it as another, core/identity.ts).
  if (!overrides.readOnly) await recordNodeIdentity(driver, config.nodeId)
  return completeDriver(driver)
}

/** One message as a caller gives it. Strings in `ts`/`ttl`/`priority` are parsed like CLI flags. */
export interface PublishRecord {
  topic: string
  /** Bytes, or a string stored as UTF-8. */
  payload: Uint8Array | string
  /** Original generation time: epoch ms, ISO-8601 string or Date; default: now. */
  ts?: number | string | Date
  /** Time to live from now: ms or a duration (`10m`); 0 never expires; default message.defaultTtl. */
  ttl?: number | string
  /** Absolute expiry (epoch ms); wins over ttl. */
  expiresAt?: number | null
  /** 0 (lowest) to 9 (highest); default 4. */
  priority?: number | string
  contentType?: string | null
  headers?: Record<string, string> | null
}

export interface PublishOptions {
  /** This edge node's id (config nodeId); first part of every message id. */
  nodeId: string
  /** message.maxBytes */
  maxBytes: number
  /** message.defaultTtl in ms (0: never). */
  defaultTtl: number
  now?: () => number
}

export interface PublishReceipt {
  id: string
  seq: number
  status: 'stored'
  topic: string
  ts: number
}

export interface PublishResult {
  receipts: PublishReceipt[]
  /** Oldest pending messages dropped to make room (storage.overflow=drop-oldest). */
  dropped: number
}

export function publishOptionsFrom(config: RmqConfig): PublishOptions {
  return { nodeId: config.nodeId, maxBytes: config.message.maxBytes, defaultTtl: config.message.defaultTtl }
}

/** Everything of a message except its payload, validated once (and reused for every --lines line). */
export interface MessageTemplate {
  topic: string
  ts: number | undefined
  expiresAt: number | null
  priority: number
  contentType: string | null
  headers: Record<string, string> | null
  /** Payloads must parse as JSON (content type application/json or *+json). */
  json: boolean
}

const JSON_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;.*)?$/i

export function buildTemplate(
  r: Omit<PublishRecord, 'payload'>,
  opts: PublishOptions,
  now = (opts.now ?? edgeNow)(),
): MessageTemplate {
  const problem = topicProblem(r.topic, { forPublish: true })
  if (problem)
    throw new ValidationError(`invalid topic ${JSON.stringify(r.topic)}: ${problem}`, {
      suggestion: 'use levels separated by /, e.g. plant/line1/temp; + and # are for consumer filters only',
      details: { field: 'topic' },
    })
  let ts: number | undefined
  if (r.ts !== undefined) {
    const t = r.ts instanceof Date ? r.ts.getTime() : typeof r.ts === 'number' ? r.ts : parseTimestamp(r.ts)
    if (t === undefined || !Number.isSafeInteger(t) || t < 0 || t > MAX_TS)
      throw new ValidationError(`invalid timestamp ${JSON.stringify(String(r.ts))}`, {
        suggestion:
          'give an ISO-8601 date (2025-11-26T10:00:00Z) or epoch milliseconds (1764151200000), ' +
          'between 1970 and 9999',
        details: { field: 'ts' },
      })
    ts = t
  }
  let expiresAt: number | null = null
  if (r.expiresAt !== undefined && r.expiresAt !== null) {
    if (!Number.isSafeInteger(r.expiresAt) || r.expiresAt < 0 || r.expiresAt > MAX_TS)
      throw new ValidationError(`invalid expiresAt ${JSON.stringify(r.expiresAt)}`, {
        suggestion: 'give epoch milliseconds before the year 10000',
        details: { field: 'expiresAt' },
      })
    expiresAt = r.expiresAt
  } else {
    const ttl = r.ttl === undefined ? opts.defaultTtl : parseDuration(r.ttl)
    if (ttl === undefined)
      throw new ValidationError(`invalid TTL ${JSON.stringify(r.ttl)}`, {
        suggestion: `use ${DURATION_FORMS}; 0 means never expire`,
        details: { field: 'ttl' },
      })
    expiresAt = ttl > 0 ? now + ttl : null
    if (expiresAt !== null && expiresAt > MAX_TS)
      throw new ValidationError(`TTL ${JSON.stringify(r.ttl ?? opts.defaultTtl)} ends after the year 9999`, {
        suggestion: 'give a shorter TTL, or 0 to never expire',
        details: { field: 'ttl' },
      })
  }
  const priority = r.priority === undefined ? DEFAULT_PRIORITY : Number(r.priority)
  if (
    !Number.isInteger(priority) ||
    priority < 0 ||
    priority > 9 ||
    (typeof r.priority === 'string' && !/^\d$/.test(r.priority.trim()))
  )
    throw new ValidationError(`invalid priority ${JSON.stringify(r.priority)}`, {
      suggestion: 'use an integer from 0 (lowest) to 9 (highest); the default is 4',
      details: { field: 'priority' },
    })
  const contentType = r.contentType ?? null
  if (
    contentType !== null &&
    (contentType.length === 0 || contentType.length > 255 || hasControlChar(contentType))
  )
    throw new ValidationError(`invalid content type ${JSON.stringify(contentType)}`, {
      suggestion: 'give a MIME type such as application/json or text/plain (at most 255 characters)',
      details: { field: 'contentType' },
    })
  const headers = r.headers ?? null
  if (headers !== null) {
    const entries = Object.entries(headers)
    if (entries.length > HEADERS_MAX)
      throw new ValidationError(`${entries.length} headers, more than the ${HEADERS_MAX} allowed`, {
        suggestion: 'put the extra fields in the payload',
        details: { field: 'headers' },
      })
    for (const [k, v] of entries)
      if (typeof v !== 'string' || v.length > HEADER_VALUE_MAX)
        throw new ValidationError(
          `header ${JSON.stringify(k)} ${typeof v !== 'string' ? 'is not a string' : `is longer than ${HEADER_VALUE_MAX} characters`}`,
          {
            suggestion: `headers map names to string values of at most ${HEADER_VALUE_MAX} characters`,
            details: { field: 'headers' },
          },
        )
  }
  return {
    topic: r.topic,
    ts,
    expiresAt,
    priority,
    contentType,
    headers,
    json: contentType !== null && JSON_TYPE.test(contentType),
  }
}

/** Why a payload cannot be stored under `t`, or undefined. */
export function payloadProblem(
  payload: Uint8Array,
  t: MessageTemplate,
  maxBytes: number,
): string | undefined {
  if (payload.byteLength > maxBytes)
    return `the payload is ${formatBytes(payload.byteLength)} (${payload.byteLength} bytes), over message.maxBytes ${formatBytes(maxBytes)}`
  if (t.json) {
    try {
      JSON.parse(utf8.decode(payload))
    } catch (err) {
      return `the payload is not valid JSON (${(err as Error).message}) but the content type is ${t.contentType}`
    }
  }
  return undefined
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

function payloadError(problem: string, t: MessageTemplate): ValidationError {
  return new ValidationError(problem, {
    suggestion: t.json
      ? 'fix the JSON, or give another --content-type (e.g. text/plain)'
      : 'split the payload, or raise message.maxBytes',
    details: { field: 'payload' },
  })
}

/** Validate one record and turn it into what the driver stores. Throws ValidationError (exit 65). */
export function buildMessage(
  r: PublishRecord,
  opts: PublishOptions,
  now = (opts.now ?? edgeNow)(),
): NewMessage {
  const t = buildTemplate(r, opts, now)
  const payload = typeof r.payload === 'string' ? Buffer.from(r.payload, 'utf8') : r.payload
  if (!(payload instanceof Uint8Array))
    throw new ValidationError('the payload must be bytes (Uint8Array/Buffer) or a string', {
      details: { field: 'payload' },
    })
  const problem = payloadProblem(payload, t, opts.maxBytes)
  if (problem) throw payloadError(problem, t)
  return fromTemplate(t, payload, now)
}

function fromTemplate(t: MessageTemplate, payload: Uint8Array, now: number): NewMessage {
  return {
    topic: t.topic,
    payload,
    ts: t.ts ?? now,
    contentType: t.contentType,
    expiresAt: t.expiresAt,
    priority: t.priority,
    headers: t.headers,
  }
}

/**
 * Validate every record, then store them all in one atomic append: either
 * all are stored or none (a bad record, a full store or a full disk throw).
 */
export async function publishRecords(
  outbox: StorageDriver,
  records: PublishRecord[],
  opts: PublishOptions,
): Promise<PublishResult> {
  const now = (opts.now ?? edgeNow)()
  const messages = records.map((r, i) => {
    try {
      return buildMessage(r, opts, now)
    } catch (err) {
      if (records.length > 1 && isRmqError(err))
        throw withContext(err, `record ${i + 1} of ${records.length}: `, '; nothing was stored', { index: i })
      throw err
    }
  })
  const { seqs, dropped } = await outbox.append(messages)
  return {
    receipts: seqs.map((seq, i) => ({
      id: messageId(opts.nodeId, outbox.epoch, seq),
      seq,
      status: 'stored',
      topic: messages[i].topic,
      ts: messages[i].ts,
    })),
    dropped,
  }
}

/** The same error with more context in its message and details. */
export function withContext<E extends RmqError>(
  err: E,
  prefix: string,
  suffix: string,
  details: Record<string, unknown>,
): E {
  const Ctor = err.constructor as new (m: string, o: object) => E
  return new Ctor(prefix + err.message + suffix, {
    suggestion: err.suggestion,
    details: { ...err.details, ...details },
    cause: err,
  })
}

export interface LinesCommit {
  firstLine: number
  lastLine: number
  count: number
  firstSeq: number
  lastSeq: number
  /** Messages stored so far, this commit included. */
  stored: number
  /** False for the commit at the end of the input. */
  more: boolean
}

export interface LinesResult {
  stored: number
  /** Lines read, blank ones included. */
  lines: number
  blank: number
  dropped: number
  ranges: Array<{ firstLine: number; lastLine: number; firstSeq: number; lastSeq: number }>
  node: string
  epoch: string
  firstId: string | null
  lastId: string | null
}

export interface LinesOptions extends PublishOptions {
  /** Commit after this many messages (default 10,000). */
  chunkMessages?: number
  /** ... or this many payload bytes (default 8 MiB). */
  chunkBytes?: number
  onCommit?: (c: LinesCommit) => void
  /** Called every 1,000 lines read. */
  onProgress?: (linesRead: number, stored: number) => void
}

/**
 * Store each line of `input` as one message (bulk NDJSON), committing in
 * large transactions. Blank lines are skipped; a trailing CR is removed. On a
 * bad line every line before it is stored and nothing from it on; the error
 * says so exactly (details: line, storedLines, stored). `outbox` may be any
 * sink with an epoch and an append (the CLI passes a Producer-backed one in
 * direct mode and with forward=immediate).
 */
export async function publishLines(
  outbox: Pick<StorageDriver, 'epoch' | 'append'>,
  input: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  record: Omit<PublishRecord, 'payload'>,
  opts: LinesOptions,
): Promise<LinesResult> {
  const clock = opts.now ?? edgeNow
  const t = buildTemplate(record, opts, clock())
  const chunkMessages = opts.chunkMessages ?? 10_000
  const chunkBytes = opts.chunkBytes ?? 8 * 1024 * 1024
  const res: LinesResult = {
    stored: 0,
    lines: 0,
    blank: 0,
    dropped: 0,
    ranges: [],
    node: opts.nodeId,
    epoch: outbox.epoch,
    firstId: null,
    lastId: null,
  }
  let batch: NewMessage[] = []
  let batchBytes = 0
  let batchFirstLine = 0
  let lastFullLine = 0 // last line number whose fate (stored or blank) is settled

  /** Store the open batch, which holds lines up to `lastLine`. */
  const commit = async (lastLine: number, more: boolean) => {
    if (batch.length === 0) {
      lastFullLine = lastLine
      return
    }
    const firstLine = batchFirstLine
    let out
    try {
      out = await outbox.append(batch)
    } catch (err) {
      if (isRmqError(err)) throw failure(err, firstLine, `lines ${firstLine}-${lastLine}`)
      throw err
    }
    const { seqs, dropped } = out
    res.stored += seqs.length
    res.dropped += dropped
    const range = { firstLine, lastLine, firstSeq: seqs[0], lastSeq: seqs[seqs.length - 1] }
    const prev = res.ranges[res.ranges.length - 1]
    if (prev && prev.lastSeq + 1 === range.firstSeq && prev.lastLine + 1 >= range.firstLine) {
      prev.lastLine = range.lastLine
      prev.lastSeq = range.lastSeq
    } else res.ranges.push(range)
    res.firstId ??= messageId(opts.nodeId, outbox.epoch, seqs[0])
    res.lastId = messageId(opts.nodeId, outbox.epoch, seqs[seqs.length - 1])
    lastFullLine = lastLine
    batch = []
    batchBytes = 0
    opts.onCommit?.({ ...range, count: seqs.length, stored: res.stored, more })
  }

  /** Wrap an error at `line` with exactly what was stored. */
  const failure = (err: RmqError, line: number, what: string) => {
    const before = res.stored
    const storedPart =
      before === 0
        ? 'nothing was stored'
        : `the ${before} message(s) from lines 1-${lastFullLine} were stored (ids ${res.firstId} .. ${res.lastId}); ` +
          `nothing from line ${line} on was stored`
    return withContext(err, `${what}: `, `; ${storedPart}`, {
      line,
      storedLines: lastFullLine,
      stored: before,
      firstId: res.firstId,
      lastId: res.lastId,
    })
  }

  /** Add one line to the open batch (synchronous: no promise per line); returns why it is bad, if it is. */
  const take = (line: Uint8Array): string | undefined => {
    res.lines++
    let end = line.byteLength
    if (end > 0 && line[end - 1] === 13) end--
    if (end === 0 || isBlank(line, end)) {
      res.blank++
      if (batch.length === 0) lastFullLine = res.lines
      return undefined
    }
    const payload = end === line.byteLength ? line : line.subarray(0, end)
    const problem = payloadProblem(payload, t, opts.maxBytes)
    if (problem) return problem
    if (batch.length === 0) batchFirstLine = res.lines
    batch.push(fromTemplate(t, payload, t.ts ?? clock()))
    batchBytes += payload.byteLength
    if (res.lines % 1000 === 0) opts.onProgress?.(res.lines, res.stored + batch.length)
    return undefined
  }
  const full = () => batch.length >= chunkMessages || batchBytes >= chunkBytes
  /** After take(): on a bad line store everything before it and fail; commit a full batch. */
  const settle = async (problem: string | undefined) => {
    if (problem !== undefined) {
      await commit(res.lines - 1, false)
      throw failure(payloadError(problem, t), res.lines, `line ${res.lines}`)
    }
    if (full()) await commit(res.lines, true)
  }

  let rest: Buffer | null = null
  for await (const chunk of input as AsyncIterable<Uint8Array>) {
    let buf: Buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)
    let start = 0
    if (rest) {
      // Copy only the line split across chunks, not the whole chunk.
      const nl = buf.indexOf(10)
      const head = Buffer.concat([rest, nl < 0 ? buf : buf.subarray(0, nl)])
      rest = null
      if (nl < 0)
        buf = head // still no end of line: all of it carries over below
      else {
        const problem = take(head)
        start = nl + 1
        if (problem !== undefined || full()) await settle(problem)
      }
    }
    for (;;) {
      const nl = buf.indexOf(10, start)
      if (nl < 0) break
      const problem = take(buf.subarray(start, nl))
      start = nl + 1
      // The common case (a good line, batch not full) stays synchronous: no promise per line.
      if (problem !== undefined || full()) await settle(problem)
    }
    if (start < buf.length) {
      rest = buf.subarray(start)
      if (rest.length > opts.maxBytes + 1) {
        await commit(res.lines, false)
        throw failure(
          payloadError(`the line is longer than message.maxBytes ${formatBytes(opts.maxBytes)}`, t),
          res.lines + 1,
          `line ${res.lines + 1}`,
        )
      }
    }
  }
  if (rest && rest.length > 0) await settle(take(rest))
  await commit(res.lines, false)
  return res
}

function isBlank(line: Uint8Array, end: number): boolean {
  for (let i = 0; i < end; i++) {
    const c = line[i]
    if (c !== 32 && c !== 9) return false
  }
  return true
}

function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 32 || c === 127) return true
  }
  return false
}
