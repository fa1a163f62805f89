/**
 * Immediate forwarding for edge producers (forward=immediate): runs of the
 * sync engine on the producer's outbox, one at a time, coalesced: every
 * request made while a run is in progress is answered by the next run, so
 * a burst of sends costs a couple of runs, not one per message. Runs take
 * the `sync` lease like `rmq sync` and honour its persisted backoff, so a
 * concurrent `rmq sync` or a broker that is down make sends resolve
 * `stored` at once instead of waiting. Loaded only when needed (the HTTP client, codecs).
 */
import { brokerClientFromConfig, type BrokerClient } from './broker-client.js'
import type { ForwardOutcome, ProducerSettings } from './producer-base.js'
import { drain, syncOnce, type SyncResult } from './sync.js'
import { formatDuration } from '../shared/units.js'
import type { StorageDriver } from './storage/driver.js'

export class Forwarder {
  private waiters: Array<(o: ForwardOutcome) => void> = []
  private running: Promise<void> | undefined
  private client?: Promise<BrokerClient>

  constructor(
    private readonly driver: StorageDriver,
    private readonly settings: ProducerSettings,
  ) {}

  /** Answered by a run that starts after this call. Never rejects. */
  request(): Promise<ForwardOutcome> {
    const p = new Promise<ForwardOutcome>((resolve) => this.waiters.push(resolve))
    this.running ??= this.pump().finally(() => (this.running = undefined))
    return p
  }

  private async pump(): Promise<void> {
    while (this.waiters.length > 0) {
      const answered = this.waiters
      this.waiters = []
      const outcome = await this.once()
      for (const w of answered) w(outcome)
    }
  }

  private getClient(): Promise<BrokerClient> {
    const { config, cwd } = this.settings
    this.client ??= brokerClientFromConfig(config, cwd, {
      timeout: Math.min(config.sync.timeout, this.settings.forwardTimeout),
    })
    return this.client
  }

  private async once(): Promise<ForwardOutcome> {
    const { config, cwd, forwardTimeout } = this.settings
    try {
      const client = await this.getClient()
      const r = await syncOnce(
        { driver: this.driver, config, cwd, client },
        {
          heartbeat: false,
          deadline: Date.now() + forwardTimeout,
          signal: AbortSignal.timeout(forwardTimeout),
        },
      )
      if (r.status === 'ok' && r.stoppedBy === 'empty') return { sent: true }
      return { sent: false, reason: this.why(r) }
    } catch (err) {
      return { sent: false, reason: (err as Error).message }
    }
  }

  private why(r: SyncResult): string {
    if (r.status === 'locked') return 'another sync holds the outbox; it delivers the message'
    if (r.status === 'backoff') return r.message ?? 'backing off after failed attempts'
    switch (r.stoppedBy) {
      case 'deadline':
      case 'aborted':
        return `the broker did not acknowledge within ${formatDuration(this.settings.forwardTimeout)}`
      case 'budget':
        return 'sync.maxBytesPerRun was reached; sync delivers the rest'
      case 'lease-lost':
        return 'another sync took over the outbox'
      default:
        return `the forward run stopped (${r.stoppedBy ?? 'unknown'})`
    }
  }

  /** Wait for a run in progress, then forward the whole outbox (rmq drain). */
  async drain(timeout: number): Promise<SyncResult> {
    await this.running
    const { config, cwd } = this.settings
    return drain({ driver: this.driver, config, cwd, client: await this.getClient() }, { timeout })
  }

  close(): void {
    void this.client?.then((c) => c.close()).catch(() => {})
  }
}
