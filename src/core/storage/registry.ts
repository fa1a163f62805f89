/**
 * Storage driver registry: registered built-in names first (`sqlite`,
 * `memory`), then a module specifier whose default export is a StorageFactory.
 *
 * Core owns the contract and the lookup but not the implementations: it must
 * not import src/plugins/ (the layers point down, docs/architecture.md). The
 * built-ins register themselves, each as a lazy loader, in
 * src/plugins/builtins.ts, which every entry point (the library's index, the
 * CLI, the publish fast path, the broker) imports once. An unused driver
 * costs no start-up time: its module loads the first time it is chosen.
 */
import { resolvePlugin } from '../plugin-registry.js'
import type { StorageFactory } from './driver.js'

/** Built-in drivers by name, filled by registerStorageDriver (src/plugins/builtins.ts). */
export const BUILTIN_STORAGE_DRIVERS: Record<string, () => Promise<StorageFactory>> = {}

/** Make `name` a built-in `storage.driver`, loaded by `load` the first time it is chosen. */
export function registerStorageDriver(name: string, load: () => Promise<StorageFactory>): void {
  BUILTIN_STORAGE_DRIVERS[name] = load
}

/** The factory for `storage.driver`; unknown names fail with ConfigError (exit 78) listing the known ones. */
export function resolveStorageDriver(name: string, cwd = process.cwd()): Promise<StorageFactory> {
  return resolvePlugin<StorageFactory>('storage driver', 'storage.driver', name, BUILTIN_STORAGE_DRIVERS, cwd)
}
