/**
 * `rmq sync --watch`: the bounded run repeated in one process.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { edgeNow } from '../../shared/clock.js'
import { SyncFailedError } from '../../shared/errors.js'
import { clientFor, syncOnce } from './run.js'
import type { SyncDeps, SyncOptions, SyncResult } from './types.js'

export interface WatchOptions extends Omit<SyncOptions, 'deadline' | 'persistent'> {
  /** Pause between runs (sync.interval), ms. */
  interval: number
  signal: AbortSignal
  /** After each run: its result, or the retryable error it failed with. */
  onRun?: (outcome: { result?: SyncResult; error?: SyncFailedError }) => void
}

export interface WatchSummary {
  runs: number
  failures: number
  messages: number
  bytesRaw: number
  bytesWire: number
  pending: number
}

/**
 * `rmq sync --watch`: the same bounded run, repeated every `interval` in one
 * process until the signal aborts. A failed run waits for the persisted
 * backoff instead of the interval. Permanent refusals and configuration
 * errors end the loop (they need a person).
 */
export async function watchSync(deps: SyncDeps, options: WatchOptions): Promise<WatchSummary> {
  const { interval, signal, onRun, ...runOptions } = options
  const now = options.now ?? edgeNow
  const sum: WatchSummary = { runs: 0, failures: 0, messages: 0, bytesRaw: 0, bytesWire: 0, pending: 0 }
  const client = await clientFor(deps)
  try {
    let force = runOptions.force
    while (!signal.aborted) {
      let wakeAt = now() + interval
      try {
        const result = await syncOnce({ ...deps, client }, { ...runOptions, force, signal })
        force = false
        sum.runs++
        sum.messages += result.messages
        sum.bytesRaw += result.bytesRaw
        sum.bytesWire += result.bytesWire
        sum.pending = result.pending
        if (result.status === 'backoff' && result.nextAttemptAt) wakeAt = result.nextAttemptAt
        onRun?.({ result })
      } catch (err) {
        if (!(err instanceof SyncFailedError)) throw err
        sum.runs++
        sum.failures++
        const next = (err.details?.result as SyncResult | undefined)?.nextAttemptAt
        if (next) wakeAt = next
        onRun?.({ error: err })
      }
      const wait = wakeAt - now()
      if (wait > 0) await sleep(wait, undefined, { signal }).catch(() => {})
    }
  } finally {
    if (!deps.client) client.close()
  }
  return sum
}
