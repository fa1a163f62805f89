/**
 * The group commits of `rmq mqtt forward` (forward.ts): the consumer group's
 * position moves to the acknowledged frontier, one commit in flight at a
 * time, paced, with failures retried. Every message published past the
 * committed position counts against the window (`uncommitted`): it is what a
 * SIGKILL can make a restart re-send, acknowledged or not.
 */
import { BrokerUnavailableError, RmqError } from '../../shared/errors.js'

/** Commits start at most this often (ms) while they would free less than a quarter of the window. */
export const COMMIT_EVERY_MS = 50

/** What the commits need from the forwarder. */
export interface CommitHost {
  /** Position up to which every message is acknowledged (what may be committed). */
  frontier(): number | undefined
  /** Commit the group position; resolves with the position the broker keeps. */
  commit(position: number): Promise<number>
  /** After each successful commit. */
  committed(position: number): void
  notice(text: string): void
  /** A commit that keeps failing, or a refused token: the run's failure. */
  fail(err: RmqError): void
  /** A commit finished: whoever waits for room in the window looks again. */
  wake(): void
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export class GroupCommits {
  /** Positions published and not yet below the committed position, in publish order. */
  uncommitted: number[] = []
  private committedTarget: number | undefined
  private committing: Promise<void> | undefined
  private failure: unknown
  private failures = 0
  private retry: NodeJS.Timeout | undefined
  /** The paced commit waiting for its turn. */
  private pace: NodeJS.Timeout | undefined
  /** When the last commit started (performance.now()). */
  private lastAt = -Infinity

  constructor(
    private readonly host: CommitHost,
    private readonly window: number,
    /** --until-idle: give up after a few failed commits instead of retrying for as long as it takes. */
    private readonly untilIdle: boolean,
  ) {}

  /** A new connection: what was published and not committed on the old one is re-read from the frontier. */
  reset(): void {
    this.uncommitted = []
  }

  published(position: number): void {
    this.uncommitted.push(position)
  }

  /**
   * One commit in flight at a time, of the latest frontier; failures are
   * retried by the next call. Paced: a commit starts at most every
   * COMMIT_EVERY_MS unless it would free a quarter of the window (or `now`),
   * so a fast stream costs about twenty commits a second, not one per PUBACK
   * round; a crash still re-sends at most the window.
   */
  schedule(now = false): void {
    if (this.committing) return
    const target = this.host.frontier()
    if (target === undefined || target === this.committedTarget) return
    const wait = this.lastAt + COMMIT_EVERY_MS - performance.now()
    if (!now && wait > 0 && this.committable(target) < this.window / 4) {
      this.pace ??= setTimeout(() => {
        this.pace = undefined
        this.schedule()
      }, wait)
      this.pace.unref()
      return
    }
    clearTimeout(this.pace)
    this.pace = undefined
    this.lastAt = performance.now()
    this.committing = (async () => {
      try {
        const done = await this.host.commit(target)
        this.committedTarget = target
        this.failure = undefined
        this.failures = 0
        this.uncommitted.splice(0, this.committable(target))
        this.host.committed(done)
      } catch (err) {
        if (this.failure === undefined)
          this.host.notice(
            `rmq mqtt forward: committing position ${target}: ${(err as Error).message}; retrying`,
          )
        this.failure = err
        this.failures++
      } finally {
        this.committing = undefined
      }
      this.host.wake()
      if (this.failure === undefined) return this.schedule()
      // A full window waits for this commit: retry it with backoff (resident), give up after a few (--until-idle).
      const failure = this.failure
      const refused = failure instanceof RmqError && failure.exitCode === 78
      if (refused || (this.untilIdle && this.failures >= 6))
        return this.host.fail(
          failure instanceof RmqError
            ? failure
            : new BrokerUnavailableError(
                `committing the group position failed: ${(failure as Error).message}`,
              ),
        )
      clearTimeout(this.retry)
      this.retry = setTimeout(() => this.schedule(), Math.min(5000, 100 * 2 ** Math.min(this.failures, 6)))
      this.retry.unref()
    })()
  }

  /** Commit the frontier now; a commit that keeps failing (or a refused token) throws. */
  async flush(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      while (this.committing) await this.committing
      const frontier = this.host.frontier()
      if (frontier === undefined || frontier === this.committedTarget) return
      const failure = this.failure as RmqError | undefined
      if (attempt >= 6 || (attempt > 0 && failure?.exitCode === 78))
        throw failure ?? new BrokerUnavailableError(`committing position ${frontier} did not complete`)
      if (attempt > 0) await sleep(200 * attempt)
      this.schedule(true)
    }
  }

  close(): void {
    clearTimeout(this.retry)
    clearTimeout(this.pace)
  }

  /** How many of the uncommitted messages a commit of `target` frees (they are in position order). */
  private committable(target: number): number {
    const u = this.uncommitted
    let lo = 0
    let hi = u.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (u[mid] <= target) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}
