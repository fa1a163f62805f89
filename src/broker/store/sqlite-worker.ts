/**
 * The writer thread of the threaded SQLite store (sqlite-threaded.ts): one
 * SqliteBrokerStore whose commits (and their fsyncs) run here, off the
 * broker's event loop. Requests are `{ id, method, args }`: a BrokerStore
 * write the threaded store routes here (THREAD_METHODS), or `ingestColumns`
 * for a batch handed over as columns (batch-columns.ts), or `ingestJson` for
 * a large JSON body handed over as bytes (json-ingest.ts). It also
 * checkpoints the WAL on a timer.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { openSqliteBrokerStore, type SqliteBrokerStore } from './sqlite.js'
import {
  BACKSTOP_CHECKPOINT_PAGES,
  CHECKPOINT_EVERY_MS,
  THREAD_METHODS,
  toWorkerError,
  type WorkerReply,
  type WorkerRequest,
} from './sqlite-threaded.js'
import { fromColumns, type BatchColumns } from './batch-columns.js'
import { decodeJsonBatch } from './json-ingest.js'
import { batchReply, compileBatchValidator, type BatchCheckOptions } from '../batch-checks.js'
import { collector } from './collect.js'
import type { BrokerStoreOptions, IngestContext } from './types.js'

const port = parentPort!
const collect = collector()
let store: SqliteBrokerStore | undefined
try {
  store = await openSqliteBrokerStore(workerData as BrokerStoreOptions)
} catch (err) {
  // The opener rejects with this; the thread then ends (nothing keeps it alive).
  port.postMessage({ fatal: toWorkerError(err) })
  port.close()
}

if (store) serve(store)

function serve(store: SqliteBrokerStore): void {
  // Checkpoints run here, between this thread's commits, and never on the event loop's connection.
  store.setAutoCheckpoint(BACKSTOP_CHECKPOINT_PAGES)
  const checkpoints = setInterval(() => store.checkpoint(), CHECKPOINT_EVERY_MS)
  port.on('message', (req: WorkerRequest) => {
    if (req.method === 'close') clearInterval(checkpoints)
    let pending: Promise<unknown>
    let afterReply: (() => void) | undefined
    try {
      if (!THREAD_METHODS.has(req.method))
        throw new Error(`the broker store thread does not run ${req.method}`)
      if (req.method === 'ingestColumns')
        pending = store.ingest(fromColumns(req.args[0] as BatchColumns), req.args[1] as IngestContext)
      else if (req.method === 'ingestJson') {
        // The request lets go of the bytes: decodeJsonBatch frees them once they are text.
        const holder = { bytes: req.args[0] as Uint8Array }
        req.args[0] = null
        // The objects are garbage once this batch is answered (or refused), and its pages in the cache.
        afterReply = () => {
          store.shrinkMemory()
          collect()
        }
        const body = decodeJsonBatch(holder, req.args[1] as BatchCheckOptions, collect)
        // And the text now.
        collect()
        pending = store.ingest(body, req.args[2] as IngestContext).then((ack) => batchReply(ack, body))
      } else {
        const fn = (store as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[req.method]
        pending = fn.apply(store, req.args)
      }
    } catch (err) {
      pending = Promise.reject(err)
    }
    pending.then(
      (value) => {
        port.postMessage({ id: req.id, value } satisfies WorkerReply)
        if (req.method === 'close') port.close()
        afterReply?.()
      },
      (err: unknown) => {
        port.postMessage({ id: req.id, error: toWorkerError(err) } satisfies WorkerReply)
        afterReply?.()
      },
    )
  })
  port.postMessage({ ready: true })
  // The batch schema is compiled now, between requests, rather than in the first large body's.
  setImmediate(compileBatchValidator)
}
