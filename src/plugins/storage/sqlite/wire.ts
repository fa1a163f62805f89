/**
 * The wire form of outbox messages built by SQLite (json_object and
 * group_concat over rowid ranges), so that sync makes no string or object
 * per message it forwards: wireJson, and wireFrames for the broker's
 * `frames` feature.
 */
import { isUtf8 } from 'node:buffer'
import { toFrame } from '../../../protocol/batch.js'
import { toWireMessage } from '../../../core/wire-message.js'
import type { WireFrames, WireJson } from '../../../core/storage/driver.js'
import type { SqliteConnection } from './connection.js'
import { MESSAGE_COLUMNS, toStored, type Row } from './rows.js'

/**
 * A message's wire form, built by SQLite (json_object), in the key order of
 * toWireMessage. The payload is read as text; wireJson checks the result is
 * valid UTF-8 and builds rows whose payload is not in JS instead (base64).
 */
const WIRE_FIELDS =
  "'seq', seq, 'topic', topic, 'ts', ts, 'payload', CAST(payload AS TEXT), 'enc', 'utf8', " +
  "'expiresAt', expires_at, 'priority', priority, 'contentType', content_type"
const WIRE_JSON = `CASE WHEN headers IS NULL THEN json_object(${WIRE_FIELDS})
  ELSE json_object(${WIRE_FIELDS}, 'headers', json(headers)) END`
/**
 * The wire form of a run of consecutive seqs as one UTF-8 blob, in seq order.
 * Ascending: the aggregate takes the rows in the order of the rowid range
 * scan, the only plan for it (unless the test-only PRAGMA
 * reverse_unordered_selects is set), about a third cheaper than through an
 * ordered subquery. Descending: the subquery's ORDER BY holds, as SQLite
 * never flattens an ordered subquery into an aggregate (flattening rule 16).
 */
const wireRunSql = (dir: 'ASC' | 'DESC') =>
  `SELECT CAST(group_concat(${WIRE_JSON}, ',') AS BLOB) AS json, count(*) AS n FROM ` +
  (dir === 'ASC'
    ? 'messages WHERE seq BETWEEN ? AND ?'
    : '(SELECT * FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq DESC)')

const FRAME_FIELDS = WIRE_FIELDS.replace(
  "'payload', CAST(payload AS TEXT)",
  "'size', length(CAST(payload AS BLOB))",
)
const FRAME_JSON = `CASE WHEN headers IS NULL THEN json_object(${FRAME_FIELDS})
  ELSE json_object(${FRAME_FIELDS}, 'headers', json(headers)) END`
/** wireRunSql's frames: the payloads are concatenated as they are stored. */
const frameRunSql = (dir: 'ASC' | 'DESC') =>
  `SELECT CAST(group_concat(${FRAME_JSON}, ',') AS BLOB) AS json, ` +
  `CAST(group_concat(payload, '') AS BLOB) AS payloads, count(*) AS n FROM ` +
  (dir === 'ASC'
    ? 'messages WHERE seq BETWEEN ? AND ?'
    : '(SELECT * FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq DESC)')

/** Runs of consecutive seqs in the order given: ascending runs [first, last], descending ones [last, first]. */
function runsInOrder(seqs: number[]): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (let i = 0; i < seqs.length;) {
    let j = i
    const step = seqs[i + 1] - seqs[i]
    if (step === 1 || step === -1) while (j + 1 < seqs.length && seqs[j + 1] - seqs[j] === step) j++
    out.push([seqs[i], seqs[j]])
    i = j + 1
  }
  return out
}

/**
 * The wire JSON of `seqs` in their order: one aggregate query per run of
 * consecutive seqs (a sync batch is a few runs), each returning one UTF-8
 * blob, so no string or object is made per message. A run whose blob is
 * not valid UTF-8 (a binary payload read as text) is built row by row.
 */
export async function wireJson(c: SqliteConnection, seqs: number[]): Promise<WireJson> {
  return c.guard(() => {
    const parts: Buffer[] = []
    let count = 0
    const comma = Buffer.from(',')
    for (const [a, b] of runsInOrder(seqs)) {
      const desc = b < a
      const r = c.stmt(wireRunSql(desc ? 'DESC' : 'ASC')).get(desc ? b : a, desc ? a : b) as {
        json: Buffer | null
        n: number
      }
      if (r.n === 0 || !r.json) continue
      if (parts.length > 0) parts.push(comma)
      count += r.n
      if (isUtf8(r.json)) {
        parts.push(r.json)
        continue
      }
      const rows = c
        .stmt(
          `SELECT seq, CAST(${WIRE_JSON} AS BLOB) AS json FROM messages WHERE seq BETWEEN ? AND ? ORDER BY seq ${desc ? 'DESC' : 'ASC'}`,
        )
        .raw()
      const list = rows.all(desc ? b : a, desc ? a : b) as Array<[number, Buffer]>
      list.forEach(([seq, json], i) => {
        if (i > 0) parts.push(comma)
        parts.push(isUtf8(json) ? json : Buffer.from(wireJsonOf(c, seq)))
      })
    }
    return { json: Buffer.concat(parts), count }
  })
}

/**
 * wireJson as frames. A run whose payloads are not all valid UTF-8 is
 * built row by row through toWireMessage (those payloads go as base64).
 */
export async function wireFrames(c: SqliteConnection, seqs: number[]): Promise<WireFrames> {
  return c.guard(() => {
    const json: Buffer[] = []
    const payloads: Buffer[] = []
    let count = 0
    const comma = Buffer.from(',')
    for (const [a, b] of runsInOrder(seqs)) {
      const desc = b < a
      const lo = desc ? b : a
      const hi = desc ? a : b
      const r = c.stmt(frameRunSql(desc ? 'DESC' : 'ASC')).get(lo, hi) as {
        json: Buffer | null
        payloads: Buffer | null
        n: number
      }
      if (r.n === 0 || !r.json) continue
      if (json.length > 0) json.push(comma)
      count += r.n
      if (!r.payloads || isUtf8(r.payloads)) {
        json.push(r.json)
        if (r.payloads) payloads.push(r.payloads)
        continue
      }
      const rows = c
        .stmt(
          `SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.seq BETWEEN ? AND ? ORDER BY m.seq ${desc ? 'DESC' : 'ASC'}`,
        )
        .all(lo, hi) as Row[]
      rows.forEach((row, i) => {
        const f = toFrame(toWireMessage(toStored(row)))
        json.push(Buffer.from(i > 0 ? `,${f.json}` : f.json))
        payloads.push(f.payload)
      })
    }
    return { json: Buffer.concat(json), payloads: Buffer.concat(payloads), count }
  })
}

/** One message's wire JSON built in JS (the same shape as WIRE_JSON, payload checked byte for byte). */
export function wireJsonOf(c: SqliteConnection, seq: number): string {
  const r = c.stmt(`SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.seq = ?`).get(seq) as Row
  return JSON.stringify(toWireMessage(toStored(r)))
}
