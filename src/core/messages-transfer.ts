/**
 * Moving stored messages between outboxes (`rmq messages export` / `import`,
 * docs/operations.md "Moving a backlog off a dying device"): export writes
 * one JSON object per message and line (NDJSON) from a read-only open;
 * import re-publishes each line through the Producer, the path of `rmq
 * publish` and the library, with its original topic, timestamp, expiry,
 * priority, content type and headers. The imported messages are new
 * messages of the importing node (its node id, epoch and seqs).
 */
import type { LoadedConfig } from './config/load.js'
import type { BrowsedMessage, BrowseQuery } from './storage/driver.js'
import { UsageError, ValidationError, isRmqError, type RmqError } from '../shared/errors.js'
import { edgeNow } from '../shared/clock.js'
import { formatBytes } from '../shared/units.js'
import { MESSAGE_STATUSES, browseQuery, payloadText, type ListMessagesOptions } from './messages.js'
import { buildMessage, openOutbox, publishOptionsFrom, withContext } from './outbox.js'
import { openProducer, type ProducerRecord, type SendStatus } from './producer.js'

/** One line of an export. */
export interface ExportRecord {
  seq: number
  topic: string
  /** UTF-8 text, or base64 when `encoding` is `base64` (a payload that is not printable UTF-8). */
  payload: string
  encoding?: 'base64'
  contentType: string | null
  headers: Record<string, string> | null
  /** Event time, epoch ms (and as ISO 8601 in tsIso, for people; import reads ts). */
  ts: number
  tsIso: string
  expiresAt: number | null
  priority: number
  status: BrowsedMessage['status']
}

export type TransferFilter = Omit<ListMessagesOptions, 'limit' | 'order'>

/** Messages read per page of an export. */
const PAGE = 1000

export function exportRecord(m: BrowsedMessage): ExportRecord {
  const text = payloadText(m.payload)
  return {
    seq: m.seq,
    topic: m.topic,
    ...(text.enc === 'utf8'
      ? { payload: text.text }
      : { payload: m.payload.toString('base64'), encoding: 'base64' as const }),
    contentType: m.contentType,
    headers: m.headers,
    ts: m.ts,
    tsIso: new Date(m.ts).toISOString(),
    expiresAt: m.expiresAt,
    priority: m.priority,
    status: m.status,
  }
}

export interface ExportResult {
  exported: number
  firstSeq: number | null
  lastSeq: number | null
}

/**
 * Write every stored message that passes `filter` (default all statuses), by
 * seq, one NDJSON line each, to `write` (awaited, so a slow file or pipe
 * holds the reading back). The outbox is opened read-only.
 */
export async function exportMessages(
  loaded: LoadedConfig,
  filter: TransferFilter,
  write: (line: string) => Promise<void> | void,
  onProgress?: (exported: number) => void,
): Promise<ExportResult> {
  const base = browseQuery({ ...filter, limit: PAGE, order: 'asc' })
  const driver = await openOutbox(loaded.config, loaded.cwd, { readOnly: true })
  const res: ExportResult = { exported: 0, firstSeq: null, lastSeq: null }
  try {
    let after: number | undefined
    for (;;) {
      const q: BrowseQuery = { ...base, now: edgeNow(), ...(after !== undefined ? { afterSeq: after } : {}) }
      const page = await driver.browse(q)
      for (const m of page) {
        await write(JSON.stringify(exportRecord(m)) + '\n')
        res.firstSeq ??= m.seq
        res.lastSeq = m.seq
        res.exported++
      }
      onProgress?.(res.exported)
      if (page.length < PAGE) return res
      after = page[page.length - 1].seq
    }
  } finally {
    await driver.close()
  }
}

export interface ImportOptions {
  /** Which exported statuses to import: default `pending` (the broker has the sent ones already). */
  status?: BrowseQuery['status']
  topic?: string
  since?: string
  until?: string
  /** Every 1,000 lines. */
  onProgress?: (lines: number, imported: number) => void
}

export interface ImportResult {
  lines: number
  imported: number
  /** Lines whose record the filters left out (status, topic, time). */
  skipped: number
  blank: number
  /** Seqs the importing outbox gave them (null when none was imported). */
  firstSeq: number | null
  lastSeq: number | null
  /** `stored`, or `sent` when a producer (mode=direct, forward=immediate) had every one acknowledged. */
  status: SendStatus
}

/** Records per transaction of an import. */
const CHUNK = 1000
const CHUNK_BYTES = 4 * 1024 * 1024

/**
 * Re-publish an export. `open` returns the input; when `rereadable` (a
 * file), every line is checked first and a bad one fails the import before
 * anything is stored. From a pipe lines are checked as they come, each chunk
 * is one transaction, and a bad line fails it with what was imported before.
 * Errors name the line (ValidationError, exit 65).
 */
export async function importMessages(
  loaded: LoadedConfig,
  open: () => AsyncIterable<Uint8Array>,
  rereadable: boolean,
  o: ImportOptions = {},
): Promise<ImportResult> {
  const q = browseQuery({ status: o.status ?? 'pending', topic: o.topic, since: o.since, until: o.until })
  const opts = publishOptionsFrom(loaded.config)
  const maxLine = Math.ceil((opts.maxBytes * 4) / 3) + 256 * 1024
  const parse = (line: string, n: number): ProducerRecord | undefined => {
    let rec: ProducerRecord | undefined
    try {
      rec = recordOf(line, q)
      // The checks of `rmq publish`, now, so the error names the line.
      if (rec) buildMessage({ ...rec, ts: rec.timestamp as number }, opts)
    } catch (err) {
      if (!isRmqError(err)) throw err
      throw withContext(err as RmqError, `line ${n}: `, '', { line: n })
    }
    return rec
  }
  if (rereadable)
    try {
      for await (const [line, n] of lines(open(), maxLine)) if (line.trim()) parse(line, n)
    } catch (err) {
      if (!isRmqError(err)) throw err
      throw withContext(err as RmqError, '', '; nothing was imported', { imported: 0 })
    }

  const producer = await openProducer(loaded)
  const res: ImportResult = {
    lines: 0,
    imported: 0,
    skipped: 0,
    blank: 0,
    firstSeq: null,
    lastSeq: null,
    status: 'sent',
  }
  let batch: ProducerRecord[] = []
  let batchBytes = 0
  const commit = async () => {
    if (batch.length === 0) return
    const receipts = await producer.sendMany(batch)
    res.firstSeq ??= receipts[0].seq
    res.lastSeq = receipts[receipts.length - 1].seq
    res.imported += receipts.length
    if (receipts.some((r) => r.status === 'stored')) res.status = 'stored'
    batch = []
    batchBytes = 0
  }
  try {
    for await (const [line, n] of lines(open(), maxLine)) {
      res.lines = n
      if (!line.trim()) {
        res.blank++
        continue
      }
      let rec: ProducerRecord | undefined
      try {
        rec = parse(line, n)
      } catch (err) {
        await commit()
        const e = err as RmqError
        throw withContext(
          e,
          '',
          res.imported === 0
            ? '; nothing was imported'
            : `; the ${res.imported} message(s) of lines 1-${n - 1} were imported ` +
                `(seqs ${res.firstSeq}..${res.lastSeq}), nothing from line ${n} on`,
          {
            imported: res.imported,
            importedLines: n - 1,
            firstSeq: res.firstSeq,
            lastSeq: res.lastSeq,
          },
        )
      }
      if (!rec) res.skipped++
      else {
        batch.push(rec)
        batchBytes += line.length
      }
      if (batch.length >= CHUNK || batchBytes >= CHUNK_BYTES) await commit()
      if (n % 1000 === 0) o.onProgress?.(n, res.imported + batch.length)
    }
    await commit()
  } finally {
    await producer.close()
  }
  if (res.imported === 0) res.status = 'stored'
  return res
}

/** Lines of the input with their numbers, each at most `maxLine` bytes. */
async function* lines(input: AsyncIterable<Uint8Array>, maxLine: number): AsyncGenerator<[string, number]> {
  let rest = Buffer.alloc(0)
  let n = 0
  for await (const chunk of input) {
    let buf = rest.length ? Buffer.concat([rest, Buffer.from(chunk)]) : Buffer.from(chunk)
    let start = 0
    for (let nl = buf.indexOf(10); nl >= 0; nl = buf.indexOf(10, start)) {
      yield [buf.toString('utf8', start, nl > start && buf[nl - 1] === 13 ? nl - 1 : nl), ++n]
      start = nl + 1
    }
    rest = buf.subarray(start)
    buf = rest
    if (rest.length > maxLine)
      throw new ValidationError(`line ${n + 1}: longer than ${formatBytes(maxLine)}`, {
        suggestion: 'the file is not an export of `rmq messages export`, or message.maxBytes is lower here',
        details: { line: n + 1 },
      })
  }
  if (rest.length) yield [rest.toString('utf8'), ++n]
}

const STATUSES = new Set<string>(MESSAGE_STATUSES.filter((s) => s !== 'all'))

/** The record of one export line, or undefined when the filters leave it out. */
function recordOf(line: string, q: BrowseQuery): ProducerRecord | undefined {
  let v: unknown
  try {
    v = JSON.parse(line)
  } catch (err) {
    throw new ValidationError(`not JSON (${(err as Error).message})`, {
      suggestion: 'each line must be one JSON object, as `rmq messages export` writes them',
    })
  }
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw new ValidationError('not a JSON object', {
      suggestion: 'each line must be one JSON object, as `rmq messages export` writes them',
    })
  const r = v as Record<string, unknown>
  const bad = (field: string, want: string) =>
    new ValidationError(`"${field}" must be ${want}, got ${JSON.stringify(r[field]) ?? 'nothing'}`, {
      suggestion: 'fix the line, or export it again with `rmq messages export`',
      details: { field },
    })
  if (typeof r.topic !== 'string') throw bad('topic', 'a string')
  if (typeof r.payload !== 'string') throw bad('payload', 'a string')
  if (r.encoding !== undefined && r.encoding !== 'base64' && r.encoding !== 'utf8')
    throw bad('encoding', '"base64" or absent')
  if (typeof r.ts !== 'number') throw bad('ts', 'epoch milliseconds')
  if (r.expiresAt !== undefined && r.expiresAt !== null && typeof r.expiresAt !== 'number')
    throw bad('expiresAt', 'epoch milliseconds or null')
  if (r.priority !== undefined && typeof r.priority !== 'number') throw bad('priority', 'an integer 0-9')
  if (r.contentType !== undefined && r.contentType !== null && typeof r.contentType !== 'string')
    throw bad('contentType', 'a string or null')
  if (
    r.headers !== undefined &&
    r.headers !== null &&
    (typeof r.headers !== 'object' || Array.isArray(r.headers))
  )
    throw bad('headers', 'an object of strings or null')
  const status = r.status === undefined ? 'pending' : r.status
  if (typeof status !== 'string' || !STATUSES.has(status)) throw bad('status', 'pending, sent or expired')
  if (r.encoding === 'base64' && !/^[A-Za-z0-9+/]*={0,2}$/.test(r.payload)) throw bad('payload', 'base64')

  if (q.status !== 'all' && status !== q.status) return undefined
  if (q.since !== undefined && r.ts < q.since) return undefined
  if (q.until !== undefined && r.ts >= q.until) return undefined
  if (q.match && !q.match(r.topic)) return undefined
  return {
    topic: r.topic,
    payload: r.encoding === 'base64' ? Buffer.from(r.payload, 'base64') : r.payload,
    timestamp: r.ts,
    // The original expiry, absolute; none means never (not this node's default TTL).
    ...(typeof r.expiresAt === 'number' ? { expiresAt: r.expiresAt } : { ttl: 0 }),
    priority: (r.priority as number | undefined) ?? undefined,
    contentType: (r.contentType as string | null | undefined) ?? null,
    headers: (r.headers as Record<string, string> | null | undefined) ?? null,
  }
}

/** `--json` with `-` would mix the result into the export on stdout. */
export function exportJsonProblem(file: string, json: boolean): UsageError | undefined {
  return file === '-' && json
    ? new UsageError('--json and FILE - both write to stdout', {
        suggestion: 'give a FILE to export to with --json, or leave --json out (the summary goes to stderr)',
      })
    : undefined
}
