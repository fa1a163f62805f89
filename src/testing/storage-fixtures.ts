/**
 * What the parts of the storage conformance suite share: the options a
 * driver's test gives, the context each part's cases run in, and the
 * messages they append.
 */
import type { FastPath } from '../core/storage/complete-driver.js'
import type { NewMessage, StorageDriver, StorageFactory, StorageOptions } from '../core/storage/driver.js'

export interface ConformanceOptions {
  name: string
  factory: StorageFactory
  /** The driver keeps data across close/reopen of the same path: run the reopen tests. */
  durable: boolean
  /** For the two-process test: module URL whose default export is the factory, and node flags to load it. */
  childModule?: { url: string; nodeArgs?: string[] }
  /** The optional methods (fast paths) the driver offers itself; checked against the driver. */
  fastPaths: readonly FastPath[]
}

/** One test's view of the suite: its driver factory, fake clock and temporary directory. */
export interface SuiteContext {
  readonly opts: ConformanceOptions
  /** Opens a driver on the test's directory (closed after the test). */
  make(o?: Partial<StorageOptions>): Promise<StorageDriver>
  /** The driver offers this fast path itself. */
  own(k: FastPath): boolean
  /** The time the driver's clock reads now. */
  readonly clock: number
  /** The test's temporary directory. */
  readonly dir: string
}

export function msg(i: number, extra: Partial<NewMessage> = {}): NewMessage {
  return { topic: `t/${i}`, payload: Buffer.from(`payload-${i}`), ts: 1_000_000 + i, ...extra }
}
