/**
 * `rmq mqtt forward` (central side, docs/mqtt.md): a consumer group that
 * republishes the broker's event-ordered (or arrival) stream to an MQTT broker
 * with QoS 1, in order, on one connection, and commits the group position only
 * up to the last message whose PUBACK arrived (with every one before it). A
 * crash therefore re-sends at most the unacknowledged tail, which is bounded by
 * the window (`mqtt.forward.window`); receivers dedup by the user
 * properties node, epoch and seq.
 *
 * Usable from a script (a bench, a test):
 *
 *   const loaded = await loadConfig({ flags: { 'mqtt.url': 'mqtt://127.0.0.1:1883' } })
 *   const summary = await runForward(loaded, { untilIdleMs: 1000 })
 */
import type { MqttClient } from 'mqtt'
import { BrokerUnavailableError, RmqError } from '../../shared/errors.js'
import type { LoadedConfig } from '../config/load.js'
import { Consumer, type ConsumedMessage, type ConsumeOrder, type MessagesPage } from '../consumer.js'
import { tlsFromConfig } from '../tls.js'
import { connectMqtt, mqttConnectionFrom, redactedUrl, type MqttConnection } from './connect.js'
import { encodePublish } from './publish-packet.js'
import { forwardProperties, payloadOf, pubackError, tooLarge } from './forward-packets.js'
import { GroupCommits } from './forward-commits.js'
import { tapPubacks } from './puback-tap.js'

export interface ForwardOptions {
  /** mqtt.url (--url). */
  url?: string
  /** mqtt.forward.group (--group). */
  group?: string
  /** mqtt.forward.filter (--filter or the argument). */
  filter?: string
  /** mqtt.forward.topicPrefix (--topic-prefix). */
  topicPrefix?: string
  /** mqtt.forward.order (--order). */
  order?: ConsumeOrder
  /** `--until-idle`: stop once the stream was empty this long and everything is acknowledged and committed. Absent: resident. */
  untilIdleMs?: number
  /** Long-poll wait of one read in resident mode, ms (default 25 s). */
  waitMs?: number
  /** Most messages published past the committed group position, acknowledged or not (default mqtt.forward.window). */
  window?: number
  /** Stop: finish the PUBACKs in flight, commit, return. */
  signal?: AbortSignal
}

export interface ForwardHooks {
  /** Notices (reconnects, retries); default stderr. */
  notice?(text: string): void
  /** After each successful commit of the group position. */
  onCommit?(position: number, forwarded: number): void
  /** After each connection to the MQTT broker is accepted. */
  onConnect?(info: { url: string; clientId: string; window: number; inflight: number }): void
}

export interface ForwardSummary {
  /** Messages published and acknowledged by the MQTT broker in this run. */
  forwarded: number
  /** The group position committed last (undefined: nothing committed in this run). */
  committed: number | undefined
  group: string
  order: ConsumeOrder
  filter: string
  topicPrefix: string
  url: string
  /** The window: a crash of this run re-sends at most this many messages (duplicates risk). */
  window: number
  /** Connections to the MQTT broker after the first (resident mode). */
  reconnects: number
  stopped: 'idle' | 'signal'
  /** Event order: matching messages held behind the watermark at the last read of the head (not forwarded yet). */
  held?: number
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve()
    const t = setTimeout(resolve, ms)
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true })
  })

/** Requests that never reached the broker (a wrong brokerUrl): fatal before the first answer. */
const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH'])

/** One published message (or a page's end, `marker`) in publish order, until the frontier passes it. */
interface Entry {
  position: number
  done: boolean
}

/** The failure that ended one MQTT connection. */
class ConnectionLost extends BrokerUnavailableError {}

export async function runForward(
  loaded: LoadedConfig,
  options: ForwardOptions = {},
  hooks: ForwardHooks = {},
): Promise<ForwardSummary> {
  return new Forwarder(loaded, options, hooks).run()
}

class Forwarder {
  private readonly config: LoadedConfig['config']
  private readonly cwd: string
  private readonly conn: MqttConnection
  private readonly url: string
  private readonly group: string
  private readonly filter: string
  private readonly order: ConsumeOrder
  private readonly prefix: string
  private readonly window: number
  private readonly notice: (text: string) => void
  private readonly summary: ForwardSummary

  // One connection's state.
  private client: MqttClient | undefined
  /** PUBLISHes written on this connection and not yet answered, by packet identifier. */
  private pending = new Map<number, { entry: Entry; m: ConsumedMessage; topic: string }>()
  private lastId = 0
  /** The broker's Maximum Packet Size (CONNACK), if it set one. */
  private maxPacket: number | undefined
  private corked = false
  /** A message this broker cannot take (too large): publish nothing after it, let the ones before it finish. */
  private refused: RmqError | undefined
  private failure: RmqError | undefined
  private wakers: Array<() => void> = []
  /** Which connection a PUBACK callback belongs to (a closed one's late callbacks are ignored). */
  private generation = 0

  /** Published messages and page ends not yet below the frontier, in publish order. */
  private entries: Entry[] = []
  /** Entries before this index are below the frontier (dropped in chunks by advance()). */
  private head = 0
  /** Position up to which every message is acknowledged (what may be committed). */
  private frontier: number | undefined
  /** The group position's commits, and what the window holds (forward-commits.ts). */
  private readonly commits: GroupCommits

  constructor(
    loaded: LoadedConfig,
    private readonly options: ForwardOptions,
    private readonly hooks: ForwardHooks,
  ) {
    const c = (this.config = loaded.config)
    this.cwd = loaded.cwd
    const f = c.mqtt.forward
    this.group = options.group ?? f.group
    this.filter = options.filter ?? f.filter
    this.order = options.order ?? f.order
    this.prefix = options.topicPrefix ?? f.topicPrefix
    this.conn = mqttConnectionFrom(
      c,
      { clientId: `rmq-forward-${this.group}`, clean: true },
      loaded.cwd,
      options.url ? { url: options.url } : {},
    )
    this.url = redactedUrl(this.conn.url)
    this.window = Math.max(1, options.window ?? c.mqtt.forward.window)
    this.notice = hooks.notice ?? ((t) => process.stderr.write(t + '\n'))
    // A consumer for the commits only (its read position is never used).
    const committer = this.consumer()
    this.commits = new GroupCommits(
      {
        frontier: () => this.frontier,
        commit: (position) => committer.commit(position),
        committed: (position) => {
          this.summary.committed = position
          this.hooks.onCommit?.(position, this.summary.forwarded)
        },
        notice: (text) => this.notice(text),
        fail: (err) => this.fail(err),
        wake: () => this.wake(),
      },
      this.window,
      options.untilIdleMs !== undefined,
    )
    this.summary = {
      forwarded: 0,
      committed: undefined,
      group: this.group,
      order: this.order,
      filter: this.filter,
      topicPrefix: this.prefix,
      url: this.url,
      window: this.window,
      reconnects: 0,
      stopped: 'idle',
    }
    // One listener for the whole run: every wait below wakes on a stop.
    options.signal?.addEventListener('abort', () => this.wake(), { once: true })
  }

  private consumer(): Consumer {
    return new Consumer({
      brokerUrl: this.config.brokerUrl,
      token: this.config.token || undefined,
      topic: this.filter,
      order: this.order,
      group: this.group,
      pageSize: Math.min(10_000, Math.max(500, this.window)),
      timeoutMs: this.config.sync.timeout,
      maxPageBytes: this.config.consume.maxPageBytes,
      tls: tlsFromConfig(this.config, this.cwd),
    })
  }

  private get stopping(): boolean {
    return this.options.signal?.aborted === true
  }

  async run(): Promise<ForwardSummary> {
    const resident = this.options.untilIdleMs === undefined
    let attempt = 0
    let contacted = false
    try {
      while (!this.stopping) {
        let inflight: number
        try {
          inflight = await this.connect()
        } catch (err) {
          // The first connection, or any in --until-idle mode: its failure is the answer (69 or 78).
          if (!resident || !contacted || !(err instanceof BrokerUnavailableError)) throw err
          attempt++
          if (attempt === 1 || attempt % 10 === 0) this.notice(`rmq mqtt forward: ${err.message}; retrying`)
          await sleep(Math.min(5000, 100 * 2 ** Math.min(attempt, 6)), this.options.signal)
          continue
        }
        if (contacted) this.summary.reconnects++
        contacted = true
        attempt = 0
        const ended = await this.forward(inflight)
        if (ended === 'idle' || ended === 'signal') {
          this.summary.stopped = ended
          break
        }
        // The connection was lost or a PUBACK refused: nothing past the frontier is committed.
        await this.commits.flush()
        if (this.stopping) break
        if (!resident || !(ended instanceof BrokerUnavailableError)) throw ended
        attempt++
        this.notice(
          `rmq mqtt forward: ${ended.message}; reconnecting (committed position ${this.summary.committed ?? 'none'})`,
        )
        await sleep(Math.min(5000, 100 * 2 ** Math.min(attempt, 6)), this.options.signal)
      }
      await this.commits.flush()
      if (this.stopping) this.summary.stopped = 'signal'
      return this.summary
    } finally {
      this.commits.close()
      this.closeClient()
    }
  }

  /** Connect; resolve with how many PUBACKs may be outstanding at once (the broker's Receive Maximum). */
  private async connect(): Promise<number> {
    let serverMax: number | undefined
    let maxPacket: number | undefined
    this.failure = undefined
    this.pending = new Map()
    this.refused = undefined
    this.generation++
    const { client } = await connectMqtt(this.conn, (c) =>
      c.once('connect', (connack) => {
        serverMax = connack.properties?.receiveMaximum
        maxPacket = connack.properties?.maximumPacketSize
      }),
    )
    this.client = client
    this.maxPacket = maxPacket
    const generation = this.generation
    // The PUBACKs answer the PUBLISHes this class wrote itself: taken from the socket before MQTT.js
    // parses them (puback-tap.ts), which reads every other packet as usual.
    tapPubacks(
      (client as unknown as { stream: Parameters<typeof tapPubacks>[0] }).stream,
      (messageId, reasonCode) => {
        if (generation === this.generation) this.onPuback(messageId, reasonCode)
      },
    )
    const lost = (why: string) => {
      if (this.client !== client) return // closed on purpose
      this.fail(
        new ConnectionLost(`lost the connection to the MQTT broker at ${this.url}: ${why}`, {
          suggestion: 'check that the MQTT broker runs; rerun to resume from the committed position',
          details: { url: this.url },
        }),
      )
    }
    client.on('error', (err) => lost(err.message))
    client.on('disconnect', (p) =>
      lost(`the broker disconnected (reason 0x${(p.reasonCode ?? 0).toString(16)})`),
    )
    client.on('close', () => lost('the connection closed'))
    // Packet identifiers are 16 bits, and 65,535 is MQTT 5's Receive Maximum when the broker names none.
    // It bounds the PUBACKs outstanding, not the window: Mosquitto announces 20 by default, and a
    // window of 20 would wait for a group commit every 20 messages.
    const inflight = Math.min(this.window, serverMax ?? 65_535, 65_535)
    this.hooks.onConnect?.({ url: this.url, clientId: this.conn.clientId, window: this.window, inflight })
    return inflight
  }

  private closeClient(): void {
    const c = this.client
    this.client = undefined
    if (c) {
      c.on('error', () => {})
      c.end(true)
    }
  }

  private fail(err: RmqError): void {
    if (!this.failure) this.failure = err
    this.wake()
  }

  private wake(): void {
    const w = this.wakers
    this.wakers = []
    for (const f of w) f()
  }

  /** Resolves at the next PUBACK, failure or stop. */
  private nextEvent(): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopping) resolve()
      else this.wakers.push(resolve)
    })
  }

  /**
   * Forward on the current connection until idle (--until-idle), a stop, or
   * a failure (returned). Reads one page ahead of the one being published.
   */
  private async forward(inflight: number): Promise<'idle' | 'signal' | RmqError> {
    // A new read after a lost connection starts at the acknowledged frontier, not at what was read.
    const reader = this.consumer()
    if (this.frontier !== undefined) reader.seek(this.frontier)
    this.entries = []
    this.head = 0
    this.commits.reset()
    const polls = new AbortController()
    const onStop = () => polls.abort()
    this.options.signal?.addEventListener('abort', onStop, { once: true })
    const untilIdle = this.options.untilIdleMs
    let lastMessageAt = Date.now()
    let readFailures = 0
    const read = (): Promise<MessagesPage> => {
      const wait =
        untilIdle === undefined
          ? (this.options.waitMs ?? 25_000)
          : Math.max(0, Math.min(25_000, untilIdle - (Date.now() - lastMessageAt)))
      return reader.poll({ wait, signal: polls.signal })
    }
    let next: Promise<MessagesPage> | undefined
    try {
      for (;;) {
        if (this.failure) return this.failure
        if (this.stopping) return (await this.drain(), this.failure ?? 'signal')
        this.commits.schedule()
        let page: MessagesPage
        try {
          page = await (next ?? read())
          next = undefined
          readFailures = 0
        } catch (err) {
          next = undefined
          if (this.stopping || (err as Error).name === 'AbortError') continue
          if (!this.retryableRead(err)) throw err
          readFailures++
          if (readFailures === 1 || readFailures % 10 === 0)
            this.notice(`rmq mqtt forward: ${(err as Error).message}; retrying`)
          await sleep(Math.min(5000, 100 * 2 ** Math.min(readFailures, 6)), this.options.signal)
          continue
        }
        if (page.messages.length === 0) {
          // At the head. Skipped non-matching rows still move the position.
          this.summary.held = page.held?.count
          this.pushEnd(page.next)
          if (untilIdle !== undefined && Date.now() - lastMessageAt >= untilIdle) {
            await this.drain()
            if (this.failure) return this.failure
            await this.commits.flush()
            if (Date.now() - lastMessageAt >= untilIdle) return 'idle'
          }
          continue
        }
        lastMessageAt = Date.now()
        // Read the next page while this one is published (memory: two pages and the window).
        next = read()
        next.catch(() => {}) // handled when awaited
        for (const m of page.messages) {
          while (
            (this.commits.uncommitted.length >= this.window || this.pending.size >= inflight) &&
            !this.failure &&
            !this.stopping
          )
            await this.nextEvent()
          if (this.failure || this.stopping) break
          this.publish(m)
          if (this.refused) return (await this.drain(), this.failure ?? this.refused)
        }
        if (this.failure || this.stopping) continue
        this.pushEnd(page.next)
      }
    } finally {
      this.options.signal?.removeEventListener('abort', onStop)
      polls.abort()
      if (this.failure) this.closeClient()
    }
  }

  /** A read that failed because the rmq broker is away: in resident mode, ride it out. */
  private retryableRead(err: unknown): boolean {
    if (this.options.untilIdleMs !== undefined || !(err instanceof BrokerUnavailableError)) return false
    const code = (err as { cause?: { code?: string } }).cause?.code ?? ''
    return !(
      this.summary.forwarded === 0 &&
      this.summary.committed === undefined &&
      CONNECT_FAILURES.has(code)
    )
  }

  private publish(m: ConsumedMessage): void {
    const topic = this.prefix + m.topic
    const messageId = this.nextId()
    let packet: Buffer
    try {
      packet = encodePublish({
        topic,
        messageId,
        payload: payloadOf(m),
        ...(m.contentType ? { contentType: m.contentType } : {}),
        userProperties: forwardProperties(m),
      })
    } catch (err) {
      this.refused = tooLarge(`${m.node}:${m.seq} on ${topic}: ${(err as Error).message}`)
      return
    }
    if (this.maxPacket !== undefined && packet.length > this.maxPacket) {
      this.refused = tooLarge(
        `${m.node}:${m.seq} on ${topic} is a ${packet.length}-byte MQTT packet; the broker ${this.url} accepts at most ${this.maxPacket} (Maximum Packet Size)`,
      )
      return
    }
    const entry: Entry = { position: m.position, done: false }
    this.entries.push(entry)
    this.commits.published(m.position)
    this.pending.set(messageId, { entry, m, topic })
    const stream = (
      this.client as unknown as { stream: NodeJS.WritableStream & { cork(): void; uncork(): void } }
    ).stream
    // One write per tick: the socket joins a corked run into one buffer (connect.ts).
    if (!this.corked) {
      this.corked = true
      stream.cork()
      process.nextTick(() => {
        this.corked = false
        stream.uncork()
      })
    }
    stream.write(packet)
  }

  /** The next packet identifier not in flight (the window is at most 65,535, so one is free). */
  private nextId(): number {
    do this.lastId = this.lastId >= 65_535 ? 1 : this.lastId + 1
    while (this.pending.has(this.lastId))
    return this.lastId
  }

  private onPuback(messageId: number, code: number): void {
    const sent = this.pending.get(messageId)
    if (!sent) return // an identifier not in flight: nothing to acknowledge
    this.pending.delete(messageId)
    // 0x10: no matching subscribers, still accepted. Not acknowledged: the frontier stays before it.
    if (code >= 0x80) return this.fail(pubackError(code, this.url, sent.m, sent.topic))
    sent.entry.done = true
    this.summary.forwarded++
    this.advance()
    this.wake()
  }

  /** The end of a page (or a page of skipped rows): the frontier may pass `position` once all before it are acknowledged. */
  private pushEnd(position: number): void {
    const last = this.entries.length > this.head ? this.entries[this.entries.length - 1] : undefined
    if (last && last.position >= position) return
    if (!last && this.frontier !== undefined && this.frontier >= position) return
    this.entries.push({ position, done: true })
    this.advance()
  }

  private advance(): void {
    // PUBACKs arrive in order, so most calls move past one entry: drop a
    // consumed prefix only now and then (a splice per PUBACK is O(window)).
    let i = this.head
    while (i < this.entries.length && this.entries[i].done) i++
    if (i === this.head) return
    this.frontier = this.entries[i - 1].position
    this.head = i
    if (i >= 1024 && i * 2 >= this.entries.length) {
      this.entries.splice(0, i)
      this.head = 0
    }
    this.commits.schedule()
  }

  /** Wait until every PUBACK in flight arrived (or the connection failed). */
  private async drain(): Promise<void> {
    const deadline = Date.now() + Math.max(5000, this.conn.connectTimeout)
    while (this.pending.size > 0 && !this.failure && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200)
        this.wakers.push(() => (clearTimeout(t), resolve()))
      })
    }
  }
}
