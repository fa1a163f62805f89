/**
 * Cleanups registered during a test, run after it in reverse order (brokers
 * before the directories they use), whether it passed or not.
 */
import { afterEach } from 'vitest'

/** Call in a describe block; returns `add(...fns)` for the tests in it. */
export function cleanupAfterEach(): (...fns: Array<() => unknown>) => void {
  const cleanups: Array<() => unknown> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })
  return (...fns) => void cleanups.push(...fns)
}
