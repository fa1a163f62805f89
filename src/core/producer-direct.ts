/**
 * Direct mode: messages go straight to the broker over the wire protocol
 * (POST /v1/batches, `direct: true`), nothing is stored locally, and failure
 * is the caller's to handle. Identity: the producer makes a random epoch and
 * numbers its messages 1, 2, 3...; a retry re-posts the very same batch, so
 * the broker's unique (node, epoch, seq) key deduplicates it. `direct: true`
 * tells the broker this node holds no backlog, so a producer that falls
 * silent never holds the ordering watermark back (docs/producer.md).
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { backoffDelay } from './backoff.js'
import { BrokerClient, brokerClientFromConfig, type EncodedBatch, type PostOutcome } from './broker-client.js'
import { edgeNow } from '../shared/clock.js'
import { BrokerUnavailableError, ConfigError, RejectedError, TimeoutError } from '../shared/errors.js'
import {
  BaseProducer,
  type DrainResult,
  type Entry,
  type ProducerSettings,
  type SendReceipt,
} from './producer-base.js'
import { messageId, type BatchBody } from '../protocol/batch.js'
import { toWireMessage } from './wire-message.js'
import type { StoredMessage } from './storage/driver.js'

export class DirectProducer extends BaseProducer {
  readonly mode = 'direct' as const
  readonly epoch = randomUUID()
  private seq = 0
  private sentCount = 0
  private client?: Promise<BrokerClient>

  constructor(settings: ProducerSettings) {
    super(settings)
    // Two batches on the wire at once: one is committed at the broker while the next travels.
    this.maxInFlight = 2
  }

  private getClient(): Promise<BrokerClient> {
    const { config, cwd } = this.settings
    this.client ??= brokerClientFromConfig(config, cwd)
    return this.client
  }

  /**
   * Post the group in batches of whole entries (a sendMany is never split:
   * the broker commits it in one transaction), each within sync.batchSize
   * messages and sync.batchBytes payload bytes unless one entry alone is larger.
   */
  protected async commit(group: Entry[]): Promise<void> {
    const { batchSize, batchBytes } = this.config.sync
    let chunk: Entry[] = []
    let count = 0
    let bytes = 0
    const posts: Promise<void>[] = []
    const flushChunk = () => {
      if (chunk.length > 0) posts.push(this.postEntries(chunk))
      chunk = []
      count = 0
      bytes = 0
    }
    for (const e of group) {
      const n = e.messages.length
      const b = e.messages.reduce((s, m) => s + m.payload.byteLength, 0)
      if (chunk.length > 0 && (count + n > batchSize || bytes + b > batchBytes)) flushChunk()
      chunk.push(e)
      count += n
      bytes += b
    }
    flushChunk()
    await Promise.all(posts)
  }

  private async postEntries(entries: Entry[]): Promise<void> {
    const receipts: SendReceipt[][] = []
    const wire = []
    for (const e of entries) {
      const rs: SendReceipt[] = []
      for (const m of e.messages) {
        const seq = ++this.seq
        wire.push(toWireMessage({ ...m, seq, payload: m.payload } as StoredMessage))
        rs.push({ id: messageId(this.node, this.epoch, seq), status: 'sent', topic: m.topic, ts: m.ts, seq })
      }
      receipts.push(rs)
    }
    const body: BatchBody = {
      node: this.node,
      epoch: this.epoch,
      batch: `b-${randomBytes(6).toString('hex')}`,
      clock: edgeNow(),
      direct: true,
      backlog: { pending: 0, bytes: 0, oldestTs: null },
      messages: wire,
    }
    try {
      const client = await this.getClient()
      await this.postWithRetries(client, await client.encode(body))
    } catch (err) {
      for (const e of entries) e.reject(err)
      return
    }
    this.sentCount += wire.length
    entries.forEach((e, i) => e.resolve(receipts[i]))
  }

  /** The same encoded batch (same ids) until it is acknowledged or the retries are spent. */
  private async postWithRetries(client: BrokerClient, batch: EncodedBatch): Promise<void> {
    const { retries } = this.settings
    const policy = this.config.sync.backoff
    for (let attempt = 0; ; attempt++) {
      const started = Date.now()
      const outcome = await client.post(batch)
      if (outcome.kind === 'ok') return
      if (outcome.kind !== 'retry' || attempt >= retries)
        throw this.failure(outcome, batch, attempt + 1, Date.now() - started)
      const delay = Math.max(backoffDelay(policy, attempt + 1), outcome.retryAfterMs ?? 0)
      await sleep(Math.min(delay, policy.max))
    }
  }

  private failure(outcome: PostOutcome, batch: EncodedBatch, attempts: number, lastMs: number): Error {
    const seqs = batch.body.messages.map((m) => m.seq)
    const ids = seqs.length
      ? [seqs[0], seqs[seqs.length - 1]].map((s) => messageId(this.node, this.epoch, s))
      : []
    const details = { brokerUrl: this.config.brokerUrl, attempts, ids }
    const what = `${seqs.length} message(s)`
    switch (outcome.kind) {
      case 'tls':
        return outcome.error
      case 'auth':
        if (/certificate/i.test(outcome.reason))
          return new ConfigError(`the broker refused this node's client certificate (${outcome.reason})`, {
            suggestion: `set tls.cert and tls.key (RMQ_TLS_CERT, RMQ_TLS_KEY) to a certificate naming node ${this.node}, signed by the broker's broker.tls.clientCa`,
            details: { ...details, status: outcome.status },
          })
        return new ConfigError(`the broker refused this node's token (${outcome.reason})`, {
          suggestion:
            `set \`token\` (RMQ_TOKEN) to a token made with \`rmq broker token create ${this.node}\` on the broker, ` +
            'and nodeId to the node it is bound to',
          details: { ...details, status: outcome.status },
        })
      case 'rejected':
      case 'too-large':
        return new RejectedError(`the broker rejected ${what}: ${outcome.reason}; nothing was delivered`, {
          suggestion:
            outcome.kind === 'too-large'
              ? 'send smaller messages or batches, or raise broker.limits.* on the broker'
              : 'fix the cause the broker gives; the messages were not stored anywhere',
          details: { ...details, status: outcome.status, reason: outcome.reason },
        })
      case 'aborted':
      case 'retry': {
        const reason = outcome.kind === 'retry' ? outcome.reason : 'aborted'
        const status = outcome.kind === 'retry' ? (outcome.status ?? null) : null
        const timedOut = status === null && lastMs >= this.config.sync.timeout - 50
        const Ctor = timedOut ? TimeoutError : BrokerUnavailableError
        return new Ctor(
          `could not deliver ${what} to ${this.config.brokerUrl} after ${attempts} attempt(s): ${reason}`,
          {
            suggestion:
              'check that the broker is running and reachable (`rmq status --broker`), or use mode=edge to store ' +
              'messages while it is away',
            details: { ...details, status, reason },
          },
        )
      }
    }
    return new BrokerUnavailableError(`could not deliver ${what}`)
  }

  protected async deliverAll(timeout: number): Promise<Omit<DrainResult, 'durationMs'>> {
    const before = this.sentCount
    await this.flushWithin(timeout)
    return { sent: this.sentCount - before, pending: 0 }
  }

  protected async release(): Promise<void> {
    const c = await this.client?.catch(() => undefined)
    c?.close()
  }
}
