/**
 * The rmq library: everything the CLI does is available here without oclif.
 * See README "Library" and docs/ for the contracts.
 */
// Registers the built-in storage drivers and codecs with core's registries.
import './plugins/builtins.js'

export * from './shared/errors.js'
export { loadConfig, type LoadedConfig, type LoadConfigOptions } from './core/config/load.js'
export { CONFIG_KEYS, envVarFor, type RmqConfig } from './core/config/schema.js'
export * from './protocol/batch.js'
export type * from './core/storage/driver.js'
export {
  resolveStorageDriver,
  registerStorageDriver,
  BUILTIN_STORAGE_DRIVERS,
} from './core/storage/registry.js'
export { accountedSize, MESSAGE_OVERHEAD_BYTES } from './core/storage/size.js'
export { createSqliteStorage } from './plugins/storage/sqlite/index.js'
export { createMemoryStorage } from './plugins/storage/memory.js'
export {
  openOutbox,
  publishRecords,
  publishLines,
  publishOptionsFrom,
  buildMessage,
  buildTemplate,
  DEFAULT_PRIORITY,
  type PublishRecord,
  type PublishOptions,
  type PublishReceipt,
  type PublishResult,
  type LinesOptions,
  type LinesResult,
  type LinesCommit,
  type MessageTemplate,
} from './core/outbox.js'
export {
  createProducer,
  openProducer,
  type Producer,
  type ProducerMode,
  type ProducerOptions,
  type ProducerExtras,
  type ProducerRecord,
  type ConfigInput,
  type SendOptions,
  type SendReceipt,
  type SendStatus,
  type DrainResult,
} from './core/producer.js'
export type * from './core/compression/codec.js'
export { DecompressLimitError, CorruptInputError } from './core/compression/codec.js'
export { resolveCodec, registerCodec, codecForEncoding, BUILTIN_CODECS } from './core/compression/registry.js'
export {
  syncOnce,
  drain,
  watchSync,
  readSyncStats,
  toWireMessage,
  type SyncDeps,
  type SyncOptions,
  type SyncResult,
  type SyncStats,
  type SyncProgress,
  type SyncProblem,
  type WatchOptions,
  type WatchSummary,
} from './core/sync.js'
export {
  BrokerClient,
  type BrokerClientOptions,
  type PostOutcome,
  type EncodedBatch,
} from './core/broker-client.js'
export { backoffDelay, readBackoff, type BackoffPolicy, type BackoffState } from './core/backoff.js'
