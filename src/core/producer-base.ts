/**
 * The Producer contract and what both modes share: validation, the group
 * queue, flush and close (BaseProducer). The modes build on it: EdgeProducer
 * (producer.ts), DirectProducer (producer-direct.ts) and the forwarder
 * (producer-forward.ts) import it, and producer.ts chooses among them, so the
 * imports run one way.
 */
import { edgeNow } from '../shared/clock.js'
import type { RmqConfig } from './config/schema.js'
import { TimeoutError, UsageError, isRmqError } from '../shared/errors.js'
import { buildMessage, withContext, type PublishOptions, type PublishRecord } from './outbox.js'
import { formatDuration, parseDuration } from '../shared/units.js'
import type { NewMessage } from './storage/driver.js'

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

export interface ProducerSettings {
  config: RmqConfig
  cwd: string
  publish: PublishOptions
  forwardTimeout: number
  retries: number
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
