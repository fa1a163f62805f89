/**
 * Retry delays for sync: exponential growth with full jitter, persisted in
 * the outbox state so that the next short-lived run (cron, systemd timer)
 * honours a delay decided by the previous one.
 */
import type { StorageDriver } from './storage/driver.js'

export interface BackoffPolicy {
  /** First delay after a failure, ms. */
  initial: number
  /** Longest delay, ms. */
  max: number
  multiplier: number
}

export interface BackoffState {
  /** Consecutive failed attempts. */
  failures: number
  /** Epoch ms before which runs do not try again (unless forced). */
  nextAttemptAt: number
  delayMs: number
  /** Why the last attempt failed. */
  reason: string
  /** When the first of these consecutive failures happened. */
  since: number
}

export const BACKOFF_STATE_KEY = 'sync.backoff'

/**
 * Delay before the next attempt after `failures` consecutive failures. Full
 * jitter: uniform in [0, cap] with cap = initial * multiplier^(failures-1)
 * bounded by max, but never below `initial`, so the first retry waits exactly
 * `initial` and a run of failures cannot collapse into a retry storm.
 */
export function backoffDelay(
  policy: BackoffPolicy,
  failures: number,
  random: () => number = Math.random,
): number {
  const floor = Math.min(policy.initial, policy.max)
  const cap = Math.min(policy.max, policy.initial * policy.multiplier ** Math.max(0, failures - 1))
  return Math.round(Math.max(floor, random() * cap))
}

export async function readBackoff(driver: StorageDriver): Promise<BackoffState | undefined> {
  const raw = await driver.getState(BACKOFF_STATE_KEY)
  if (!raw) return undefined
  try {
    const s = JSON.parse(raw) as BackoffState
    return typeof s.nextAttemptAt === 'number' && typeof s.failures === 'number' ? s : undefined
  } catch {
    return undefined
  }
}

/** Record one more failure and return the delay now in force. `retryAfterMs` (429/503) is a floor. */
export async function recordFailure(
  driver: StorageDriver,
  policy: BackoffPolicy,
  now: number,
  reason: string,
  options: { retryAfterMs?: number; random?: () => number } = {},
): Promise<BackoffState> {
  const prev = await readBackoff(driver)
  const failures = (prev?.failures ?? 0) + 1
  const delayMs = Math.max(backoffDelay(policy, failures, options.random), options.retryAfterMs ?? 0)
  const state: BackoffState = {
    failures,
    nextAttemptAt: now + delayMs,
    delayMs,
    reason,
    since: prev?.since ?? now,
  }
  await driver.setState(BACKOFF_STATE_KEY, JSON.stringify(state))
  return state
}

export async function clearBackoff(driver: StorageDriver): Promise<void> {
  await driver.setState(BACKOFF_STATE_KEY, undefined)
}
