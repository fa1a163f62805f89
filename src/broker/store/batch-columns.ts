/**
 * A batch as columns, for handing it to the store's writer thread: seqs and
 * timestamps in typed arrays (transferred, not copied), topics and payloads
 * as string arrays, and the rarely varying fields (encoding, content type,
 * priority, expiry, headers) once per distinct combination. Cloning this
 * costs about a third of cloning the message objects or parsing the JSON
 * again, and the thread rebuilds the messages cheaply.
 */
import type { BatchBody, WireMessage } from '../../protocol/batch.js'
import { sameShape, shapeOf, type MessageShape } from './message-shape.js'

export interface BatchColumns {
  envelope: Omit<BatchBody, 'messages'>
  seq: Float64Array
  ts: Float64Array
  topic: string[]
  payload: string[]
  shapes: MessageShape[]
  /** Index into shapes, per message. */
  shape: Uint32Array
}

export function toColumns(batch: BatchBody): BatchColumns {
  const { messages, ...envelope } = batch
  const n = messages.length
  const cols: BatchColumns = {
    envelope,
    seq: new Float64Array(n),
    ts: new Float64Array(n),
    topic: new Array<string>(n),
    payload: new Array<string>(n),
    shapes: [],
    shape: new Uint32Array(n),
  }
  let last = -1
  for (let i = 0; i < n; i++) {
    const m = messages[i]
    cols.seq[i] = m.seq
    cols.ts[i] = m.ts
    cols.topic[i] = m.topic
    cols.payload[i] = m.payload
    if (last < 0 || !sameShape(cols.shapes[last], m)) {
      last = cols.shapes.findIndex((s) => sameShape(s, m))
      if (last < 0) last = cols.shapes.push(shapeOf(m)) - 1
    }
    cols.shape[i] = last
  }
  return cols
}

export function fromColumns(cols: BatchColumns): BatchBody {
  const n = cols.seq.length
  const messages = new Array<WireMessage>(n)
  for (let i = 0; i < n; i++) {
    const s = cols.shapes[cols.shape[i]]
    messages[i] = {
      seq: cols.seq[i],
      topic: cols.topic[i],
      ts: cols.ts[i],
      payload: cols.payload[i],
      enc: s.enc,
      expiresAt: s.expiresAt,
      priority: s.priority,
      contentType: s.contentType,
      headers: s.headers,
    }
  }
  return { ...cols.envelope, messages }
}

/** The buffers of `cols` that can be transferred instead of copied. */
export function transferList(cols: BatchColumns): ArrayBuffer[] {
  return [cols.seq.buffer as ArrayBuffer, cols.ts.buffer as ArrayBuffer, cols.shape.buffer as ArrayBuffer]
}
