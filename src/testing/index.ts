/**
 * `rmq/testing`: the conformance suites every plugin of rmq passes, shipped
 * so that a third-party storage driver, codec or broker store can run them
 * too (docs/storage.md "Writing a driver"). They are vitest suites: install
 * vitest (an optional peer dependency) and call one from a test file:
 *
 *   import { storageConformance } from 'rmq/testing'
 *   import { createMyStorage } from './my-driver.js'
 *   storageConformance({ name: 'mine', factory: createMyStorage, durable: false, fastPaths: [] })
 */
// A suite run from the package resolves the built-in plugins it compares with, as `rmq` does.
import '../plugins/builtins.js'

export { storageConformance } from './storage-conformance.js'
export type { ConformanceOptions } from './storage-helpers.js'
export { codecConformance } from './codec-conformance.js'
export { brokerStoreConformance } from './broker-store-conformance.js'
export { batchOf, wireMessage, type StoreHandle } from './broker-store-helpers.js'
export {
  completeDriver,
  FAST_PATHS,
  type CompleteDriver,
  type FastPath,
} from '../core/storage/complete-driver.js'
