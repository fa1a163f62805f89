/**
 * Acting on a request's outcome: an acknowledged batch is marked sent with
 * its statistics in one commit; a failure is counted and backed off (or
 * waited out in a drain); a refusal ends the run with an error that names
 * the cause and the fix.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { ConfigError, RejectedError, SyncFailedError } from '../../shared/errors.js'
import { failpoint } from '../../shared/failpoints.js'
import { formatDuration } from '../../shared/units.js'
import { BACKOFF_STATE_KEY, backoffDelay, recordFailure } from '../backoff.js'
import type { PostOutcome } from '../broker-client.js'
import { readLast } from './stats.js'
import {
  LAST_KEY,
  SYNC_COUNTERS,
  type LastState,
  type Prepared,
  type RunState,
  type Settled,
  type SyncProblem,
} from './types.js'

export class Settler {
  constructor(private readonly s: RunState) {}

  /**
   * Act on a request's outcome. 'ok': accepted and marked sent; 'failed':
   * failed and (persistent mode) waited out; 'split': too large, retry
   * smaller. Throws for everything that ends the run.
   */
  async settle(p: Prepared, outcome: PostOutcome, waitOnFailure: boolean): Promise<Settled> {
    const { seqs, encoded: batch } = p
    const at = this.s.now()
    if (outcome.kind === 'aborted') {
      this.s.res.stoppedBy = 'aborted'
      return 'failed'
    }
    if (outcome.kind === 'ok') {
      if (seqs.length > 0) await failpoint('sync.after-post-before-mark-sent')
      const counters = {
        [SYNC_COUNTERS.attempts]: 1,
        [SYNC_COUNTERS.successes]: 1,
        [seqs.length > 0 ? SYNC_COUNTERS.batches : SYNC_COUNTERS.heartbeats]: 1,
        [SYNC_COUNTERS.messagesSent]: seqs.length,
        [SYNC_COUNTERS.bytesRaw]: batch.rawBytes,
        [SYNC_COUNTERS.bytesWire]: batch.wireBytes,
      }
      const last = await this.patchLast({ lastAttemptAt: at, lastSuccessAt: this.s.now() })
      // Sent marks, statistics, sync.last and the end of any backoff: one transaction, one commit
      // (drivers without commitSent: the same writes one after the other).
      await this.s.driver.commitSent(seqs, this.s.now(), {
        counters,
        state: { [LAST_KEY]: last, [BACKOFF_STATE_KEY]: undefined },
      })
      if (seqs.length > 0) await failpoint('sync.after-mark-sent')
      this.s.res.backoff = undefined
      this.s.res.nextAttemptAt = undefined
      // An ack without features (an older broker behind the same URL) turns both off again.
      this.s.features = Array.isArray(outcome.ack.features) ? outcome.ack.features : []
      if (seqs.length > 0) this.s.res.batches++
      this.s.res.messages += seqs.length
      this.s.res.duplicates += outcome.ack.duplicates ?? 0
      this.s.res.bytesRaw += batch.rawBytes
      this.s.res.bytesWire += batch.wireBytes
      this.s.res.watermark = outcome.ack.watermark ?? this.s.res.watermark
      this.s.res.pending = batch.body.backlog.pending
      this.s.opts.onProgress?.({
        batches: this.s.res.batches,
        messages: this.s.res.messages,
        bytesRaw: this.s.res.bytesRaw,
        bytesWire: this.s.res.bytesWire,
        pending: this.s.res.pending,
      })
      return 'ok'
    }

    await this.s.driver.addCounters({ [SYNC_COUNTERS.attempts]: 1, [SYNC_COUNTERS.failures]: 1 })
    if (seqs.length > 0) await this.s.driver.recordAttempt(seqs)
    await this.writeLast({ lastAttemptAt: at, lastError: outcome.reason, lastErrorAt: this.s.now() })

    if (outcome.kind === 'too-large' && seqs.length > 1) return 'split'
    // An untrusted certificate: nothing reached the broker, everything stays pending.
    if (outcome.kind === 'tls') throw outcome.error
    if (outcome.kind === 'auth') {
      const cert = /certificate/i.test(outcome.reason)
      const problem: SyncProblem = cert
        ? 'certificate-refused'
        : outcome.status === 401
          ? 'token-refused'
          : 'token-other-node'
      throw new ConfigError(
        `the broker refused this node's ${cert ? 'client certificate' : 'token'} (${outcome.reason})`,
        {
          details: { problem, status: outcome.status, node: this.s.node, brokerUrl: this.s.config.brokerUrl },
        },
      )
    }
    if (outcome.kind === 'rejected' || outcome.kind === 'too-large') {
      const first = seqs[0]
      const last = seqs[seqs.length - 1]
      throw new RejectedError(
        `the broker permanently rejected a batch of ${seqs.length} message(s)` +
          (seqs.length > 0 ? ` (seq ${first}..${last})` : '') +
          `: ${outcome.reason}; the messages stay pending and nothing was deleted`,
        {
          details: {
            problem: (outcome.kind === 'too-large'
              ? 'message-too-large'
              : 'batch-rejected') satisfies SyncProblem,
            status: outcome.status,
            reason: outcome.reason,
            seqs: seqs.length > 0 ? [first, last] : [],
          },
        },
      )
    }

    // Retryable: back off (persisted) and either fail the run or wait it out.
    const b = await recordFailure(this.s.driver, this.s.config.sync.backoff, this.s.now(), outcome.reason, {
      retryAfterMs: outcome.retryAfterMs,
      random: this.s.opts.random,
    })
    this.s.res.backoff = b
    this.s.res.nextAttemptAt = b.nextAttemptAt
    if (this.s.opts.persistent) {
      if (!waitOnFailure) return 'failed'
      // Retries inside a drain back off from its own first failure (not from
      // the failures of earlier cron runs), and Retry-After is still a floor.
      this.s.res.retries++
      const own = Math.max(
        backoffDelay(this.s.config.sync.backoff, this.s.res.retries, this.s.opts.random),
        outcome.retryAfterMs ?? 0,
      )
      const deadline = this.s.opts.deadline ?? Infinity
      const wait = Math.min(this.s.now() + own, deadline) - this.s.now()
      if (wait > 0) await sleep(wait, undefined, { signal: this.s.opts.signal }).catch(() => {})
      return 'failed'
    }
    throw new SyncFailedError(
      `sync failed: ${outcome.reason}` +
        (this.s.res.messages > 0 ? ` (after ${this.s.res.messages} message(s) were sent)` : '') +
        `; next attempt in ${formatDuration(b.delayMs)} (at ${new Date(b.nextAttemptAt).toISOString()})`,
      {
        details: {
          problem: 'attempt-failed' satisfies SyncProblem,
          status: outcome.status ?? null,
          reason: outcome.reason,
        },
      },
    )
  }

  /** sync.last with `patch` applied, as JSON to store (read from the store once per run). */
  async patchLast(patch: Partial<LastState>): Promise<string> {
    this.s.last = { ...(this.s.last ?? (await readLast(this.s.driver))), ...patch }
    return JSON.stringify(this.s.last)
  }

  async writeLast(patch: Partial<LastState>): Promise<void> {
    await this.s.driver.setState(LAST_KEY, await this.patchLast(patch))
  }
}
