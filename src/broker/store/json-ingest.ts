/**
 * A large JSON batch body from its decoded bytes to a checked batch, as the
 * route would take it (batch-checks.ts: strict UTF-8, JSON, the schema, the
 * batch checks), on the threaded SQLite store's writer thread
 * (sqlite-worker.ts), so that the event loop never parses it. The bytes are
 * let go as soon as they are text and `collect` (a full collection of the
 * thread's small heap, a few ms) frees them before the parse makes the
 * objects: V8 would otherwise keep several bodies' worth of dead bytes,
 * text and objects until its heap had grown by hundreds of MB, and the
 * broker's resident memory with it.
 */
import {
  batchReply,
  checkBatch,
  jsonText,
  parseJsonText,
  validateBatchBody,
  type BatchCheckOptions,
  type BatchReply,
} from '../batch-checks.js'
import type { BatchBody } from '../../protocol/batch.js'
import type { BrokerStore, IngestContext } from './types.js'

/** Where the bytes are held: emptied once they are text. */
export interface JsonHolder {
  bytes: Uint8Array | null
}

export function decodeJsonBatch(
  holder: JsonHolder,
  checks: BatchCheckOptions,
  collect: () => void,
): BatchBody {
  const text = takeText(holder)
  // Nothing refers to the bytes any more (this frame never held them).
  collect()
  const body = validateBatchBody(parseJsonText(text))
  checkBatch(body, checks)
  return body
}

function takeText(holder: JsonHolder): string {
  const bytes = holder.bytes
  if (!bytes) throw new Error('ingestJson: the body bytes were taken already')
  holder.bytes = null
  return jsonText(bytes)
}

/** The same on this thread, into `store` (the threaded store once its thread has stopped). */
export async function ingestJsonHere(
  store: Pick<BrokerStore, 'ingest'>,
  bytes: Uint8Array,
  checks: BatchCheckOptions,
  ctx: IngestContext,
): Promise<BatchReply> {
  const body = decodeJsonBatch({ bytes }, checks, () => {})
  return batchReply(await store.ingest(body, ctx), body)
}
