/**
 * A named lease in the outbox (StorageDriver.acquireLease), as sync and
 * cleanup hold theirs: so that overlapping `rmq sync` runs never send the
 * same batch at once, and overlapping cleanups do not compete for the write
 * lock. The holder's `host:pid:id` is kept in the state key
 * `<name>.leaseOwner`, so that a lease left behind by a process that was
 * killed is taken over at once (same host) instead of after its TTL.
 */
import { randomUUID } from 'node:crypto'
import os from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import type { StorageDriver } from './storage/driver.js'

/** Longest pause between two attempts while waiting for a lease held by another run. */
const POLL_MS = 500

export interface LeaseOptions {
  /** How long the lease stays valid without a renewal, ms. */
  ttlMs: number
  /** Clock for the lease's expiry (default Date.now). */
  now?: () => number
  /** Default: a new `host:pid:id`. */
  owner?: string
}

export interface TakeOptions {
  /** Keep trying until this time (epoch ms); default 0: one attempt. */
  until?: number
  /** Stop waiting when it aborts. */
  signal?: AbortSignal
}

/** A lease owner id: `host:pid:id`, so that holderIsGone() can tell a dead holder on this host. */
export function newLeaseOwner(): string {
  return `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`
}

/** A lease owner `host:pid:id` whose process no longer exists on this host. */
export function holderIsGone(owner: string): boolean {
  const [host, pidText] = owner.split(':')
  const pid = Number(pidText)
  if (host !== os.hostname() || !Number.isInteger(pid) || pid <= 0) return false
  if (pid === process.pid) return false
  try {
    process.kill(pid, 0)
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
}

export class Lease {
  readonly owner: string
  private readonly ttlMs: number
  private readonly now: () => number
  private readonly ownerKey: string
  private renewedAt = 0

  constructor(
    private readonly driver: StorageDriver,
    readonly name: string,
    options: LeaseOptions,
  ) {
    this.ttlMs = options.ttlMs
    this.now = options.now ?? Date.now
    this.owner = options.owner ?? newLeaseOwner()
    this.ownerKey = `${name}.leaseOwner`
  }

  /**
   * Take the lease if it is free or expired, taking over one whose holder
   * process is gone (same host); with `until`, wait for a live holder to let
   * go until then. True when this owner holds it.
   */
  async take(options: TakeOptions = {}): Promise<boolean> {
    const until = options.until ?? 0
    for (;;) {
      if (await this.driver.acquireLease(this.name, this.owner, this.ttlMs, this.now())) {
        this.renewedAt = this.now()
        await this.driver.setState(this.ownerKey, this.owner)
        return true
      }
      const holder = await this.driver.getState(this.ownerKey)
      if (holder && holderIsGone(holder)) {
        await this.driver.releaseLease(this.name, holder)
        continue
      }
      if (this.now() >= until || options.signal?.aborted) return false
      await sleep(Math.min(POLL_MS, Math.max(0, until - this.now())), undefined, {
        signal: options.signal,
      }).catch(() => {})
    }
  }

  /**
   * Extend the lease once a third of its TTL has passed since it was last
   * taken or renewed (cheap to call per step). False when another owner took
   * it meanwhile (it expired).
   */
  async renew(): Promise<boolean> {
    if (this.now() - this.renewedAt < this.ttlMs / 3) return true
    const ok = await this.driver.acquireLease(this.name, this.owner, this.ttlMs, this.now())
    if (ok) this.renewedAt = this.now()
    return ok
  }

  async release(): Promise<void> {
    await this.driver.releaseLease(this.name, this.owner)
  }
}
