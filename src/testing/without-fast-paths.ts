/**
 * A driver with its fast paths taken away: only the basic methods of the
 * StorageDriver contract left, as a minimal third-party driver has them.
 * Core completes such a driver with the fallbacks of completeDriver; running
 * the conformance suite on both forms checks that they behave alike.
 */
import { FAST_PATHS } from '../core/storage/complete-driver.js'
import type { StorageDriver, StorageFactory } from '../core/storage/driver.js'

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
