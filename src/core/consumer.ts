/**
 * Client side of `GET /v1/messages`: page through the event-time or arrival
 * stream of a broker, optionally as a consumer group whose position the
 * broker keeps. Usable as a library:
 *
 *   const c = new Consumer({ brokerUrl, token, topic: 'plant/#', group: 'etl' })
 *   for (;;) {
 *     const page = await c.poll({ wait: 25_000 })
 *     for (const m of page.messages) handle(m)
 *     await c.commit(page.next)          // with a group: continue here after a restart
 *   }
 *
 * A filtered page may stop before the head (`more: true`, the broker bounds
 * its work per request); poll() then reads on by itself until it has
 * messages or reaches the head, so an empty page means "nothing more yet".
 */
import {
  brokerError,
  brokerRequest,
  DEFAULT_MAX_RESPONSE_BYTES,
  HttpFailure,
  type TlsClientOptions,
} from './http-client.js'
import { BrokerUnavailableError, ConfigError } from '../shared/errors.js'
import { formatAge } from '../shared/units.js'
import type { ConsumeOrder, ConsumedMessage, HeldInfo, MessagesPage } from '../protocol/messages.js'

export type { ConsumeOrder, ConsumedMessage, HeldInfo, MessagesPage } from '../protocol/messages.js'

export interface ConsumerOptions {
  brokerUrl: string
  token?: string
  /** MQTT-style filter; default `#`. */
  topic?: string
  order?: ConsumeOrder
  /** `start`, `now`, or the first position to return (inclusive). Default: the group's position, else start. */
  from?: 'start' | 'now' | number
  group?: string
  /** Messages per request (1..10000). */
  pageSize?: number
  /** Timeout of one request beyond its long-poll wait, ms. */
  timeoutMs?: number
  /**
   * consume.maxPageBytes: the largest answer read for one page (the HTTP
   * client's cap); pages are asked for (`maxBytes`) at half of it, leaving
   * room for JSON escaping and for a single message larger than that.
   */
  maxPageBytes?: number
  /** Private CA, client certificate, allowInsecureHttp (tlsFromConfig of the edge config). */
  tls?: TlsClientOptions
}

// The JSON requests moved to the one HTTP client; re-exported for the library API.
export { brokerError, brokerRequest, type RequestResult } from './http-client.js'

export class Consumer {
  readonly order: ConsumeOrder
  private after: number | undefined
  private started = false

  constructor(private readonly options: ConsumerOptions) {
    this.order = options.order ?? 'event'
    if (typeof options.from === 'number') this.after = Math.max(0, options.from - 1)
    else if (options.from === 'start') this.after = 0
  }

  /** Position after which the next poll reads (undefined until known for a group). */
  get position(): number | undefined {
    return this.after
  }

  private async resolveStart(signal?: AbortSignal): Promise<void> {
    if (this.started) return
    if (this.options.from === 'now') {
      const res = await brokerRequest(this.options.brokerUrl, 'GET', 'v1/heads', {
        token: this.options.token,
        tls: this.options.tls,
        timeoutMs: this.options.timeoutMs,
        signal,
      })
      if (res.status !== 200) throw brokerError(res, 'reading the stream heads')
      const heads = res.body as { event: number; arrival: number }
      this.after = this.order === 'event' ? heads.event : heads.arrival
    }
    this.started = true
  }

  /**
   * Fetch the next page; with `wait`, the broker holds the request up to that
   * long for new messages. An empty page that stopped before the head
   * (`more: true`, the broker ran out of time scanning past non-matching
   * messages) is not returned: reading goes on from its `next`. So an empty
   * page always means "nothing more up to the head".
   */
  async poll(opts: { wait?: number; limit?: number; signal?: AbortSignal } = {}): Promise<MessagesPage> {
    for (;;) {
      const before = this.after
      const page = await this.pollOnce(opts)
      // A page without `more` comes from an older broker: as before, only an empty page ends a read.
      if (page.messages.length > 0 || page.more !== true || opts.signal?.aborted) return page
      if (before !== undefined && page.next <= before) return page
    }
  }

  private async pollOnce(opts: {
    wait?: number
    limit?: number
    signal?: AbortSignal
  }): Promise<MessagesPage> {
    await this.resolveStart(opts.signal)
    const q = new URLSearchParams({ order: this.order, topic: this.options.topic ?? '#' })
    q.set('limit', String(Math.min(opts.limit ?? this.options.pageSize ?? 500, this.options.pageSize ?? 500)))
    const cap = this.options.maxPageBytes ?? DEFAULT_MAX_RESPONSE_BYTES
    q.set('maxBytes', String(Math.max(1, Math.floor(cap / 2))))
    if (opts.wait) q.set('wait', String(opts.wait))
    if (this.after !== undefined) q.set('after', String(this.after))
    else if (this.options.group) q.set('group', this.options.group)
    let res
    try {
      res = await brokerRequest(this.options.brokerUrl, 'GET', `v1/messages?${q}`, {
        token: this.options.token,
        tls: this.options.tls,
        timeoutMs: (this.options.timeoutMs ?? 30_000) + (opts.wait ?? 0),
        signal: opts.signal,
        maxResponseBytes: cap,
      })
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause
      if (cause instanceof HttpFailure && cause.kind === 'too-large')
        throw new ConfigError(
          `a page from the broker is larger than consume.maxPageBytes (${cap} bytes): ` +
            `one message after position ${this.after ?? 'start'} is too large to read with it`,
          { suggestion: 'raise consume.maxPageBytes (RMQ_CONSUME_MAX_PAGE_BYTES) above the largest message' },
        )
      throw err
    }
    if (res.status !== 200) throw brokerError(res, 'reading messages')
    const page = res.body as MessagesPage
    this.after = page.next
    return page
  }

  /** Move the read position (e.g. to the last message actually handled). */
  seek(afterPosition: number): void {
    this.after = afterPosition
    this.started = true
  }

  /** Commit the group's position: after a restart it continues after `position`. */
  async commit(position: number, signal?: AbortSignal): Promise<number> {
    if (!this.options.group) throw new ConfigError('commit needs a consumer group')
    const res = await brokerRequest(
      this.options.brokerUrl,
      'POST',
      `v1/groups/${encodeURIComponent(this.options.group)}/commit`,
      {
        token: this.options.token,
        tls: this.options.tls,
        body: { order: this.order, position },
        timeoutMs: this.options.timeoutMs,
        signal,
      },
    )
    if (res.status !== 200) throw brokerError(res, 'committing the group position')
    return (res.body as { position: number }).position
  }
}

/** One line of human output: position, node:seq, time, topic, payload (late messages marked). */
export function formatMessageLine(m: ConsumedMessage): string {
  const payload = m.enc === 'base64' ? `base64:${m.payload}` : m.payload.replace(/\r?\n/g, '\\n')
  const late = m.late ? ' [late]' : ''
  return `${m.position} ${m.node}:${m.seq} ${new Date(m.ts).toISOString()} ${m.topic}${late} ${payload}`
}

/**
 * Why an event-order read ended with messages held behind the watermark, in
 * one line: "3 messages held until edge-y reports (last seen 2m 5s ago); use
 * --order arrival to read them now".
 */
export function heldExplanation(held: HeldInfo, now: number): string {
  const n = held.capped
    ? `at least ${held.count} messages (of more than 100000 held in all)`
    : `${held.count} message${held.count === 1 ? '' : 's'}`
  const hint = 'use --order arrival to read them now'
  if (held.nodes.length === 0) return `${n} held behind the watermark, about to be released; ${hint}`
  const names = held.nodes.map((h) => h.node)
  const who =
    names.length === 1 ? names[0] : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`
  const seen = held.nodes.map((h) => `${formatAge(now - h.lastContact)} ago`).join(', ')
  return `${n} held until ${who} report${names.length === 1 ? 's' : ''} (last seen ${seen}); ${hint}`
}

/** The last line of `rmq consume --json` when messages are held: not a message (it has `type`, no `id`). */
export function formatHeldJson(held: HeldInfo, watermark: number | null, now: number): string {
  return JSON.stringify({
    type: 'held',
    watermark,
    held: held.count,
    capped: held.capped,
    nodes: held.nodes.map((h) => ({ ...h, lastSeenAgo: Math.max(0, now - h.lastContact) })),
    message: heldExplanation(held, now),
  })
}

/** One NDJSON line. */
export function formatMessageJson(m: ConsumedMessage): string {
  return JSON.stringify({
    id: m.id,
    node: m.node,
    epoch: m.epoch,
    seq: m.seq,
    topic: m.topic,
    ts: m.ts,
    position: m.position,
    late: m.late,
    payload: m.payload,
    enc: m.enc,
    contentType: m.contentType,
  })
}

export interface ConsumeRunOptions extends ConsumerOptions {
  follow?: boolean
  /** Stop after this many messages. */
  limit?: number
  json?: boolean
  /** Long-poll wait of each request in follow mode, ms. */
  waitMs?: number
  /** Where lines go (default process.stdout). */
  write?: (text: string) => Promise<void>
  /** Notices (retries) go here (default stderr). */
  notice?: (text: string) => void
  signal?: AbortSignal
}

export interface ConsumeSummary {
  printed: number
  position: number | undefined
  group?: string
  committed?: number
  /** The output's reader went away (EPIPE) and consuming stopped there. */
  readerGone?: boolean
  /** Event order: what the last page (at the head) said is held behind the watermark. */
  held?: HeldInfo
  watermark?: number | null
}

function writeStdout(text: string): Promise<void> {
  // A failed write reaches its callback and is also emitted; the callback is where it is handled.
  if (process.stdout.listenerCount('error') === 0) process.stdout.on('error', () => {})
  return new Promise((resolve, reject) => {
    process.stdout.write(text, (err) => (err ? reject(err) : resolve()))
  })
}

/** The reader of the output went away (`rmq consume … | head`): stop as if asked to. */
const readerGone = (err: unknown) => (err as NodeJS.ErrnoException)?.code === 'EPIPE'

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms)
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true })
  })

/**
 * The loop behind `rmq consume`: print each message once, and with a group
 * commit after the lines are written. In follow mode a broker that goes away
 * is retried with backoff (the position is kept and committed later), so a
 * broker restart neither loses nor repeats messages. A first request that
 * cannot reach the broker fails with BrokerUnavailableError (exit 69).
 */
const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH'])

export async function runConsume(opts: ConsumeRunOptions): Promise<ConsumeSummary> {
  const consumer = new Consumer(opts)
  const write = opts.write ?? writeStdout
  const notice = opts.notice ?? ((t: string) => process.stderr.write(t + '\n'))
  const summary: ConsumeSummary = { printed: 0, position: undefined, group: opts.group }
  let pendingCommit: number | undefined
  let contacted = false
  let failures = 0
  const aborted = () => opts.signal?.aborted === true

  const commitPending = async () => {
    if (!opts.group || pendingCommit === undefined) return
    summary.committed = await consumer.commit(pendingCommit, undefined)
    pendingCommit = undefined
  }

  while (!aborted()) {
    try {
      await commitPending()
      const remaining = opts.limit ? opts.limit - summary.printed : undefined
      if (remaining !== undefined && remaining <= 0) break
      const page = await consumer.poll({
        wait: opts.follow ? (opts.waitMs ?? 25_000) : 0,
        limit: remaining,
        signal: opts.signal,
      })
      contacted = true
      if (failures > 0) notice('rmq consume: broker reachable again')
      failures = 0
      if (page.messages.length > 0) {
        const lines = page.messages.map((m) => (opts.json ? formatMessageJson(m) : formatMessageLine(m)))
        try {
          await write(lines.join('\n') + '\n')
        } catch (err) {
          // This page was not printed, so the group's position stays before it.
          if (!readerGone(err)) throw err
          summary.readerGone = true
          break
        }
        summary.printed += page.messages.length
      }
      // The group continues after everything returned: the last printed message, or rows the filter
      // skipped. Stopped by --limit: the last printed one, so no matching message is skipped unseen.
      const full = opts.limit !== undefined && summary.printed >= opts.limit && page.messages.length > 0
      const position = full ? page.messages[page.messages.length - 1].position : page.next
      summary.position = position
      summary.watermark = page.watermark
      summary.held = page.held
      if (opts.group && position !== undefined) pendingCommit = position
      const atHead = page.more === false || (page.more === undefined && page.messages.length === 0)
      if (!opts.follow && atHead) break
    } catch (err) {
      if (aborted() || (err as Error).name === 'AbortError') break
      const retryable = err instanceof BrokerUnavailableError
      // Before the first answer, give up only when no connection could be made at all (a wrong
      // brokerUrl); a long-poll cut off mid-request is a broker restart to ride out.
      if (!CONNECT_FAILURES.has((err as { cause?: { code?: string } }).cause?.code ?? '')) contacted = true
      if (!opts.follow || !retryable || !contacted) throw err
      failures++
      const delay = Math.min(5000, 100 * 2 ** Math.min(failures, 6))
      if (failures === 1 || failures % 10 === 0)
        notice(`rmq consume: ${(err as Error).message}; retrying (position ${consumer.position ?? 'start'})`)
      await sleep(delay, opts.signal)
    }
  }
  // Stopping (signal, limit or reader gone): make the committed position match what was printed.
  for (let attempt = 0; pendingCommit !== undefined && attempt < 5; attempt++) {
    try {
      await commitPending()
    } catch (err) {
      if (attempt === 4) throw err
      await sleep(200 * (attempt + 1))
    }
  }
  return summary
}
