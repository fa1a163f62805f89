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
 * code; the direct producer and the immediate forwarder (got, codecs, sync
 * engine) are imported only when the configuration asks for them.
 */
import { edgeNow } from './clock.js'
import { loadConfig, flattenConfig, type LoadedConfig } from './config/load.js'
import type { RmqConfig } from './config/schema.js'
import { ConfigError, TimeoutError, UsageError, isRmqError } from './errors.js'
import {
  buildMessage,
  openOutbox,
  publishOptionsFrom,
  withContext,
  type PublishOptions,
  type PublishRecord,
} from './outbox.js'
import { messageId } from './protocol.js'
import { formatDuration, parseDuration } from './units.js'
import type { NewMessage, StorageDriver } from './storage/driver.js'

export type ProducerMode = 'edge' | 'direct'
export type SendStatus = 'sent' | 'stored'

/** Per-message options of `send` (the flags of `rmq publish`). */
export interface SendOptions {
  /** Time to live from now: ms or a duration (`10m`); 0 never expires; default message.defaultTtl. */
  ttl?: number | string
  /** 0 (lowest) to 9 (highest); default 4. A string is parsed like the CLI flag. */
  priority?: number | string
  /** Original generation time: epoch ms, ISO-8601 string or Date; default now. */
  timestamp?: number | string | Date
  /** MIME type; a JSON type (application/json, *+json) requires a payload that parses. */
  contentType?: string | null
  headers?: Record<string, string> | null
  /** Absolute expiry (epoch ms); wins over ttl. */
  expiresAt?: number | null
}

/** One message of `sendMany`. */
export interface ProducerRecord extends SendOptions {
  topic: string
  payload: Uint8Array | string
}

export interface SendReceipt {
  /** Global message id `node:epoch:seq`. */
  id: string
  status: SendStatus
  topic: string
  /** Original generation time, epoch ms. */
  ts: number
  seq: number
  /** Why a message of an immediate-forward producer is `stored` rather than `sent`. */
  reason?: string
  /** Pending messages the transaction that stored this one dropped (storage.overflow=drop-oldest). */
  dropped?: number
}

export interface DrainResult {
  /** Messages this call delivered (edge: from the outbox; direct: in-flight sends it waited for). */
  sent: number
  /** Messages still undelivered afterwards (0: everything was acknowledged). */
  pending: number
  durationMs: number
}

export interface Producer {
  readonly mode: ProducerMode
  /** Edge mode: `immediate` tries to deliver at once; `deferred` leaves it to sync. */
  readonly forward: 'deferred' | 'immediate'
  /** First part of every id (config nodeId). */
  readonly node: string
  /** Edge: the outbox's epoch; direct: a random epoch made for this producer. */
  readonly epoch: string
  /** The effective configuration. */
  readonly config: RmqConfig
  send(topic: string, payload: Uint8Array | string, options?: SendOptions): Promise<SendReceipt>
  /** All-or-nothing: one bad record rejects the call and nothing is stored or sent. */
  sendMany(records: ProducerRecord[]): Promise<SendReceipt[]>
  /** Wait until every `send` accepted so far has settled (and its forward attempt, if any). */
  flush(): Promise<void>
  /**
   * flush(), then deliver everything: edge mode forwards the whole outbox
   * (like `rmq drain`, SyncFailedError if messages are left at the timeout);
   * direct mode rejects with TimeoutError if sends are still in flight then.
   */
  drain(options?: { timeout?: number | string }): Promise<DrainResult>
  /** flush() and release the outbox and connections; later sends reject. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

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

export interface ProducerSettings {
  config: RmqConfig
  cwd: string
  publish: PublishOptions
  forwardTimeout: number
  retries: number
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

/** A queued call: its validated messages and its promise. */
export interface Entry {
  messages: NewMessage[]
  resolve(receipts: SendReceipt[]): void
  reject(err: unknown): void
}

function toPublishRecord(r: ProducerRecord): PublishRecord {
  return {
    topic: r.topic,
    payload: r.payload,
    ts: r.timestamp,
    ttl: r.ttl,
    expiresAt: r.expiresAt,
    priority: r.priority,
    contentType: r.contentType,
    headers: r.headers,
  }
}

/**
 * Validation, the group queue, flush and close, shared by both modes.
 * Subclasses commit groups: commit() must settle every entry of the group,
 * now or later.
 */
export abstract class BaseProducer implements Producer {
  abstract readonly mode: ProducerMode
  abstract readonly epoch: string
  readonly config: RmqConfig
  readonly node: string
  readonly forward: 'deferred' | 'immediate'
  protected readonly settings: ProducerSettings
  /** Groups committed at once; more sends queue up meanwhile and form the next group. */
  protected maxInFlight = 1
  private queue: Entry[] = []
  private scheduled = false
  private inFlight = 0
  private readonly unsettled = new Set<Promise<unknown>>()
  private closing?: Promise<void>

  constructor(settings: ProducerSettings) {
    this.settings = settings
    this.config = settings.config
    this.node = settings.publish.nodeId
    this.forward = settings.config.forward
  }

  protected abstract commit(group: Entry[]): Promise<void>
  protected abstract release(): Promise<void>
  protected abstract deliverAll(timeout: number): Promise<Omit<DrainResult, 'durationMs'>>

  async send(topic: string, payload: Uint8Array | string, options: SendOptions = {}): Promise<SendReceipt> {
    const [r] = await this.sendMany([{ ...options, topic, payload }])
    return r
  }

  sendMany(records: ProducerRecord[]): Promise<SendReceipt[]> {
    if (this.closing)
      return Promise.reject(
        new UsageError('the producer is closed', {
          suggestion: 'create a new producer with createProducer()',
        }),
      )
    if (!Array.isArray(records) || records.length === 0)
      return Promise.reject(
        new UsageError('sendMany needs a non-empty array of records', {
          suggestion: 'pass [{ topic, payload, ...options }]',
        }),
      )
    let messages: NewMessage[]
    try {
      const now = (this.settings.publish.now ?? edgeNow)()
      messages = records.map((r, i) => {
        try {
          return buildMessage(toPublishRecord(r), this.settings.publish, now)
        } catch (err) {
          if (records.length > 1 && isRmqError(err))
            throw withContext(err, `record ${i + 1} of ${records.length}: `, '; nothing was sent or stored', {
              index: i,
            })
          throw err
        }
      })
    } catch (err) {
      return Promise.reject(err)
    }
    const p = new Promise<SendReceipt[]>((resolve, reject) => {
      this.queue.push({ messages, resolve, reject })
    })
    this.track(p)
    this.schedule()
    return p
  }

  /** Keep `p` in the set flush() waits for until it settles. */
  protected track(p: Promise<unknown>): void {
    const t: Promise<unknown> = p.then(
      () => this.unsettled.delete(t),
      () => this.unsettled.delete(t),
    )
    this.unsettled.add(t)
  }

  /** Commit the queue on the next turn of the event loop, so that every send of this turn joins it. */
  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.maxInFlight || this.queue.length === 0) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
        const group = this.queue
        this.queue = []
        this.inFlight++
        this.commit(group)
          .catch((err) => {
            for (const e of group) e.reject(err)
          })
          .finally(() => {
            this.inFlight--
            this.schedule()
          })
      }
    })
  }

  async flush(): Promise<void> {
    while (this.unsettled.size > 0) await Promise.allSettled([...this.unsettled])
  }

  async drain(options: { timeout?: number | string } = {}): Promise<DrainResult> {
    const started = Date.now()
    const timeout = options.timeout === undefined ? 5 * 60_000 : parseDuration(options.timeout)
    if (timeout === undefined || timeout <= 0)
      throw new UsageError(`invalid drain timeout ${JSON.stringify(options.timeout)}`, {
        suggestion: 'give a duration such as 30s or a number of milliseconds',
      })
    const res = await this.deliverAll(timeout)
    return { ...res, durationMs: Date.now() - started }
  }

  /** flush() within `timeout`; TimeoutError when sends are still unsettled then. */
  protected async flushWithin(timeout: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<'timeout'>(
      (resolve) => (timer = setTimeout(() => resolve('timeout'), timeout)),
    )
    try {
      if ((await Promise.race([this.flush(), expired])) === 'timeout')
        throw new TimeoutError(
          `drain timed out after ${formatDuration(timeout)} with ${this.unsettled.size} send(s) still in flight`,
          { suggestion: 'check that the broker is reachable, or give drain() a longer timeout' },
        )
    } finally {
      clearTimeout(timer)
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.flush()
      await this.release()
    })()
    return this.closing
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}

/** What an immediate forward attempt achieved for the messages committed before it started. */
export interface ForwardOutcome {
  sent: boolean
  reason?: string
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
