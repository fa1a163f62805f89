/**
 * The built-in plugins, registered with core's registries by name. Core owns
 * the contracts and the lookup (core/storage/registry.ts,
 * core/compression/registry.ts) and never imports this layer; every entry
 * point imports this module once instead (src/index.ts, the CLI's base
 * command, the publish fast path, the broker). Each loader is a dynamic
 * import() of a string literal, so an unused plugin costs no start-up time
 * and bundlers (scripts/build-fast-path.js) still follow it.
 */
import { registerCodec } from '../core/compression/registry.js'
import { registerStorageDriver } from '../core/storage/registry.js'

registerStorageDriver('sqlite', async () => (await import('./storage/sqlite/index.js')).createSqliteStorage)
registerStorageDriver('memory', async () => (await import('./storage/memory.js')).createMemoryStorage)

registerCodec('zstd', async () => (await import('./compression/zstd.js')).createZstdCodec)
registerCodec('gzip', async () => (await import('./compression/gzip.js')).createGzipCodec)
registerCodec('none', async () => (await import('./compression/none.js')).createNoneCodec)
