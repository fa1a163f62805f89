/**
 * The rmq library: everything the CLI does is available here without oclif.
 * See README "Library" and docs/ for the contracts.
 */
export * from './core/errors.js'
export { loadConfig, type LoadedConfig, type LoadConfigOptions } from './core/config/load.js'
export { CONFIG_KEYS, envVarFor, type RmqConfig } from './core/config/schema.js'
export * from './core/protocol.js'
export type * from './plugins/storage/types.js'
export type * from './plugins/compression/types.js'
export { DecompressLimitError, CorruptInputError } from './plugins/compression/types.js'
