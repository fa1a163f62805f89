/**
 * Storage driver registry: built-in names first (`sqlite`, `memory`, loaded
 * lazily), then a module specifier whose default export is a StorageFactory.
 */
import { resolvePlugin } from '../registry.js'
import type { StorageFactory } from './types.js'

export const BUILTIN_STORAGE_DRIVERS: Record<string, () => Promise<StorageFactory>> = {
  sqlite: async () => (await import('./sqlite.js')).createSqliteStorage,
  memory: async () => (await import('./memory.js')).createMemoryStorage,
}

/** The factory for `storage.driver`; unknown names fail with ConfigError (exit 78) listing the known ones. */
export function resolveStorageDriver(name: string, cwd = process.cwd()): Promise<StorageFactory> {
  return resolvePlugin<StorageFactory>('storage driver', 'storage.driver', name, BUILTIN_STORAGE_DRIVERS, cwd)
}

export { accountedSize, MESSAGE_OVERHEAD_BYTES } from './common.js'
export type * from './types.js'
