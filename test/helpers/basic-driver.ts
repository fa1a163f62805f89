/**
 * A third-party-style driver without any fast path: the sqlite driver with
 * its optional methods (pendingRuns, wireJson, wireFrames, oldestPendingTs,
 * commitSent) taken away, only the basic methods left. Core completes it
 * with the fallbacks of completeDriver; the conformance suite and the sync
 * tests check that it then behaves like the built-ins. Its default export is
 * the factory, so `storage.driver` can name this file.
 */
import { createSqliteStorage } from '../../src/plugins/storage/sqlite/index.js'
import { withoutFastPaths } from '../../src/testing/without-fast-paths.js'

export { withoutFastPaths }
export const createBasicSqliteStorage = withoutFastPaths(createSqliteStorage)
export default createBasicSqliteStorage
