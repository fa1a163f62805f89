/**
 * Storage driver registry: built-in names first (`sqlite`, `memory`), then a
 * module specifier whose default export is a StorageFactory.
 *
 * Each built-in is a module specifier loaded by a dynamic import() the first
 * time it is chosen (unstorage's builtinDrivers style): core names the
 * implementations without importing them, so it never loads src/plugins/
 * up front and an unused driver costs no start-up time. The specifiers are
 * string literals so that bundlers (the `rmq publish` fast path,
 * scripts/build-fast-path.js) and test runners follow them.
 */
import { resolvePlugin } from '../plugin-registry.js'
import type { StorageFactory } from './driver.js'

export const BUILTIN_STORAGE_DRIVERS: Record<string, () => Promise<StorageFactory>> = {
  sqlite: async () => (await import('../../plugins/storage/sqlite/index.js')).createSqliteStorage,
  memory: async () => (await import('../../plugins/storage/memory.js')).createMemoryStorage,
}

/** The factory for `storage.driver`; unknown names fail with ConfigError (exit 78) listing the known ones. */
export function resolveStorageDriver(name: string, cwd = process.cwd()): Promise<StorageFactory> {
  return resolvePlugin<StorageFactory>('storage driver', 'storage.driver', name, BUILTIN_STORAGE_DRIVERS, cwd)
}
