/**
 * The Producer API: one interface for both modes (docs/producer.md).
 *
 *   const producer = await createProducer({ mode: 'direct' })   // or 'edge' (default), or RMQ_MODE
 *   const r = await producer.send('plant/line1/temp', '{"c":21.5}', { contentType: 'application/json' })
 *   r.status // 'sent' (the broker acknowledged it) or 'stored' (durably in the outbox, sync delivers it)
 *   await producer.close()
 *
 * Every record is validated by the outbox rules (buildMessage) before it is
 * queued, so a bad record rejects only its own call. Valid sends arriving in
 * the same event-loop turn are committed together: one outbox transaction
 * (edge) or one broker batch (direct), each caller getting its own receipt.
 *
 * This module stays lean for `rmq publish`: the edge path loads no network
 * code; the direct producer and the immediate forwarder (HTTP client, codecs, sync
 * engine) are imported only when the configuration asks for them.
 */
import { loadConfig, flattenConfig, type LoadedConfig } from './config/load.js'
import type { RmqConfig } from './config/schema.js'
import { ConfigError } from '../shared/errors.js'
import { openOutbox, publishOptionsFrom } from './outbox.js'
import { messageId } from '../protocol/batch.js'
import { parseDuration } from '../shared/units.js'
import type { NewMessage, StorageDriver } from './storage/driver.js'
import {
  BaseProducer,
  type DrainResult,
  type Entry,
  type ForwardOutcome,
  type Producer,
  type ProducerSettings,
  type SendReceipt,
} from './producer-base.js'

export * from './producer-base.js'

/** Configuration values for createProducer, in the nested shape of a config file; strings like `5s` allowed. */
export type ConfigInput<T> = {
  [K in keyof T]?: T[K] extends number
    ? number | string
    : T[K] extends readonly unknown[]
      ? T[K]
      : T[K] extends object
        ? ConfigInput<T[K]>
        : T[K]
}

/** Options that are not configuration keys. */
export interface ProducerExtras {
  /** Directory for the config file search, .env and relative storage.path (default process.cwd()). */
  cwd?: string
  /** Config file to use (like --config / RMQ_CONFIG). */
  configPath?: string
  /** Environment to read RMQ_* from (default process.env). */
  env?: NodeJS.ProcessEnv
  /** Read `.env` in cwd (default true). */
  dotenv?: boolean
  /** Edge mode: use this open outbox instead of opening storage.*; the caller closes it. */
  driver?: StorageDriver
  /** Edge + forward=immediate: how long a send waits for the broker before resolving `stored` (default sync.timeout). */
  forwardTimeout?: number | string
  /** Direct mode: retries of a retryable failure (network, timeout, 429, 5xx), same ids each time (default 3). */
  retries?: number
}

/**
 * Configuration keys (nested like a config file, e.g. `{ mode: 'direct', sync: { timeout: '5s' } }`)
 * plus the producer-only options of ProducerExtras. Explicit options win over
 * env, .env, the config file and defaults.
 */
export type ProducerOptions = ConfigInput<RmqConfig> & ProducerExtras

const EXTRA_KEYS = ['cwd', 'configPath', 'env', 'dotenv', 'driver', 'forwardTimeout', 'retries'] as const

/** Create a producer configured like the CLI: options > env > .env > config file > defaults. */
export async function createProducer(options: ProducerOptions = {}): Promise<Producer> {
  const rest: Record<string, unknown> = { ...options }
  for (const k of EXTRA_KEYS) delete rest[k]
  const flat = Object.fromEntries(flattenConfig(rest, { kind: 'option', detail: 'createProducer()' }))
  const loaded = await loadConfig({
    cwd: options.cwd,
    configPath: options.configPath,
    env: options.env,
    dotenv: options.dotenv,
    options: flat,
  })
  return openProducer(loaded, options)
}

/** A producer from an already loaded configuration (what `rmq publish` uses). */
export async function openProducer(loaded: LoadedConfig, extras: ProducerExtras = {}): Promise<Producer> {
  const settings = producerSettings(loaded, extras)
  if (loaded.config.mode === 'direct') {
    const { DirectProducer } = await import('./producer-direct.js')
    return new DirectProducer(settings)
  }
  const driver = extras.driver ?? (await openOutbox(loaded.config, loaded.cwd))
  return new EdgeProducer(settings, driver, !extras.driver)
}

function producerSettings(loaded: LoadedConfig, extras: ProducerExtras): ProducerSettings {
  const forwardTimeout =
    extras.forwardTimeout === undefined ? loaded.config.sync.timeout : parseDuration(extras.forwardTimeout)
  if (forwardTimeout === undefined || forwardTimeout <= 0)
    throw new ConfigError(`invalid forwardTimeout ${JSON.stringify(extras.forwardTimeout)}`, {
      suggestion: 'give a duration such as 5s or a number of milliseconds',
    })
  const retries = extras.retries ?? 3
  if (!Number.isInteger(retries) || retries < 0)
    throw new ConfigError(`invalid retries ${JSON.stringify(extras.retries)}`, {
      suggestion: 'give a whole number of retries (0: no retry)',
    })
  return {
    config: loaded.config,
    cwd: loaded.cwd,
    publish: publishOptionsFrom(loaded.config),
    forwardTimeout,
    retries,
  }
}

/**
 * Edge mode: each group is one outbox append (one durable transaction).
 * forward=immediate then asks the forwarder (the sync engine, loaded on
 * demand) to deliver everything pending; the receipts say `sent` only when
 * that run emptied the outbox, which proves these messages were acknowledged.
 */
export class EdgeProducer extends BaseProducer {
  readonly mode = 'edge' as const
  readonly epoch: string
  private forwarder?: Promise<import('./producer-forward.js').Forwarder>

  constructor(
    settings: ProducerSettings,
    private readonly driver: StorageDriver,
    private readonly ownsDriver: boolean,
  ) {
    super(settings)
    this.epoch = driver.epoch
  }

  protected async commit(group: Entry[]): Promise<void> {
    const stored: Array<{ entry: Entry; receipts: SendReceipt[] }> = []
    const appendEntries = async (entries: Entry[]) => {
      const all = entries.length === 1 ? entries[0].messages : entries.flatMap((e) => e.messages)
      const { seqs, dropped } = await this.driver.append(all)
      let i = 0
      for (const entry of entries) {
        const receipts = entry.messages.map((m) => this.receipt(m, seqs[i++], dropped))
        stored.push({ entry, receipts })
      }
    }
    try {
      await appendEntries(group)
    } catch (err) {
      if (group.length === 1) throw err
      // One shared transaction failed (full store, full disk): give each caller its own outcome.
      for (const entry of group) await appendEntries([entry]).catch((e) => entry.reject(e))
    }
    if (this.forward !== 'immediate') {
      for (const s of stored) s.entry.resolve(s.receipts)
      return
    }
    void this.forwardNow().then((outcome) => {
      for (const s of stored)
        s.entry.resolve(
          s.receipts.map((r) =>
            outcome.sent ? { ...r, status: 'sent' } : { ...r, reason: outcome.reason ?? 'not forwarded' },
          ),
        )
    })
  }

  private receipt(m: NewMessage, seq: number, dropped: number): SendReceipt {
    const r: SendReceipt = {
      id: messageId(this.node, this.driver.epoch, seq),
      status: 'stored',
      topic: m.topic,
      ts: m.ts,
      seq,
    }
    if (dropped > 0) r.dropped = dropped
    return r
  }

  private getForwarder() {
    this.forwarder ??= import('./producer-forward.js').then(
      (m) => new m.Forwarder(this.driver, this.settings),
    )
    return this.forwarder
  }

  /** Try to deliver everything pending now (coalesced with other sends). Never rejects. */
  private async forwardNow(): Promise<ForwardOutcome> {
    try {
      return await (await this.getForwarder()).request()
    } catch (err) {
      return { sent: false, reason: (err as Error).message }
    }
  }

  protected async deliverAll(timeout: number): Promise<Omit<DrainResult, 'durationMs'>> {
    await this.flush()
    const r = await (await this.getForwarder()).drain(timeout)
    return { sent: r.messages, pending: r.pending }
  }

  protected async release(): Promise<void> {
    if (this.forwarder) (await this.forwarder.catch(() => undefined))?.close()
    if (this.ownsDriver) await this.driver.close()
  }
}
