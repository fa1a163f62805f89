/**
 * A third-party-style driver without any fast path: the sqlite driver with
 * its optional methods (pendingRuns, wireJson, wireFrames, oldestPendingTs,
 * commitSent) taken away, only the basic methods left. Core completes it
 * with the fallbacks of completeDriver; the conformance suite and the sync
 * tests check that it then behaves like the built-ins. Its default export is
 * the factory, so `storage.driver` can name this file.
 */
import { FAST_PATHS } from '../../src/core/storage/complete-driver.js'
import type { StorageDriver, StorageFactory } from '../../src/core/storage/driver.js'
import { createSqliteStorage } from '../../src/plugins/storage/sqlite/index.js'

/** `factory`'s drivers as plain objects with the basic methods only. */
export function withoutFastPaths(factory: StorageFactory): StorageFactory {
  return async (options) => {
    const d = await factory(options)
    const basic: Record<string, unknown> = {
      name: `${d.name}-basic`,
      capabilities: d.capabilities,
      epoch: d.epoch,
    }
    for (const key of Object.getOwnPropertyNames(Object.getPrototypeOf(d))) {
      const v = (d as unknown as Record<string, unknown>)[key]
      if (
        key !== 'constructor' &&
        typeof v === 'function' &&
        !(FAST_PATHS as readonly string[]).includes(key)
      )
        basic[key] = v.bind(d)
    }
    return basic as unknown as StorageDriver
  }
}

export const createBasicSqliteStorage = withoutFastPaths(createSqliteStorage)
export default createBasicSqliteStorage
