/**
 * rmq/testing: the conformance suites every plugin must pass, for drivers and
 * stores written outside this project. They are vitest suites (describe/it/
 * expect from 'vitest', an optional peer dependency): call one at the top
 * level of a test file and run `vitest run`.
 *
 *   import { storageConformance } from 'rmq/testing'
 *   storageConformance({ name: 'mine', factory: createMyStorage, durable: false, fastPaths: [] })
 *
 * docs/storage.md shows a whole example.
 */
export { storageConformance, type ConformanceOptions } from './storage-conformance.js'
export { codecConformance, type CodecConformanceOptions } from './codec-conformance.js'
export { brokerStoreConformance, batchOf, wireMessage, type StoreHandle } from './broker-store-conformance.js'
export { withoutFastPaths } from './without-fast-paths.js'
export {
  completeDriver,
  FAST_PATHS,
  type CompleteDriver,
  type FastPath,
} from '../core/storage/complete-driver.js'
export { startMosquitto, mosquittoAvailability, type Mosquitto, type MosquittoOptions } from './mosquitto.js'
