/**
 * The sync engine: forwards the outbox to the broker in compressed batches.
 * A library (no oclif): `rmq sync`, `rmq drain`, `--watch` and the Producer
 * API all call these functions with an open StorageDriver.
 *
 * Rules (docs/sync.md):
 * - A message is marked sent only after a verified acknowledgement of the
 *   batch that carried it. No outbox write transaction is open while a
 *   request is in flight.
 * - One sender at a time per store: the `sync` lease, renewed per batch.
 * - Failures (429, 5xx, network, timeout) set a persisted backoff with full
 *   jitter that later runs honour; a permanent refusal (other 4xx) stops the
 *   run loudly and leaves the messages pending.
 *
 * The parts live in ./sync/: types, run (SyncRun, syncOnce, drain), batches
 * (reading and encoding), settle (outcomes), stats, watch.
 */
export {
  SYNC_COUNTERS,
  SYNC_LEASE,
  type StopReason,
  type SyncDeps,
  type SyncOptions,
  type SyncProblem,
  type SyncProgress,
  type SyncResult,
  type SyncStats,
  type SyncStatus,
} from './sync/types.js'
export { readSyncStats } from './sync/stats.js'
export { clientFor, drain, syncOnce } from './sync/run.js'
export { watchSync, type WatchOptions, type WatchSummary } from './sync/watch.js'
export { toWireMessage } from './wire-message.js'
