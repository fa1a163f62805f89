/**
 * Alert rules, evaluated by the broker on a timer (broker.alerts.interval):
 *
 * - `no-sync` (critical): an edge node sent no batch or heartbeat for longer
 *   than broker.alerts.noSyncFor.
 * - `backlog-age` (warning): the oldest message a node still holds is older
 *   than broker.alerts.backlogAge.
 * - `data-loss` (critical): a node reports more dropped (overflow) or expired
 *   messages than when it was last alerted on; resolves after
 *   broker.alerts.dataLossClearAfter without new losses. Only losses the
 *   broker's own count of missing seqs accounts for, and only totals that
 *   never go down within one outbox (epoch), count.
 * - `never-synced` (warning): a node was given a token longer than
 *   broker.alerts.neverSyncedFor ago and never synced (health
 *   `never-synced`); resolves when it syncs (or its token is revoked).
 * - `hold-back` (warning): a live node's low mark is further behind broker
 *   time than broker.ordering.maxHoldBack (health `holding-back`), so it no
 *   longer holds the watermark back; resolves when it catches up.
 *
 * Each alert fires once when its condition starts and resolves once when it
 * clears. The state lives in the BrokerStore (at most one active alert per
 * `rule:node`, enforced by the store), so several brokers sharing a store
 * agree, and only the broker whose write fired or resolved an alert sends it
 * to the sinks: the log always, and every webhook in broker.alerts.webhooks.
 * Sinks never block: webhooks deliver from their own queue with retries.
 * Rules and the webhook body: docs/monitoring.md.
 */
import os from 'node:os'
import { formatAge, formatDuration } from '../shared/units.js'
import {
  DEFAULT_MAX_HOLD_BACK,
  DEFAULT_NEVER_SYNCED_FOR,
  fleetStatus,
  type FleetStatus,
  type HealthOptions,
  type NodeStatus,
} from './node-status.js'
import { alertKey } from './store/node-rows.js'
import type { AlertRecord, AlertRule, BrokerStore, NewAlert } from './store/types.js'

export const ALERT_EVENT_VERSION = 1

/** The JSON body POSTed to webhooks, and what the log sink records. */
export interface AlertEvent {
  version: typeof ALERT_EVENT_VERSION
  event: 'fired' | 'resolved'
  alert: AlertRecord
  /** The broker process that noticed it (`host:pid`). */
  broker: string
  /** Broker time the event was emitted, epoch ms. */
  sentAt: number
}

export interface AlertSink {
  readonly name: string
  /** Must return at once: queue, never wait for delivery. */
  send(event: AlertEvent): void
  close(): void
}

/** The subset of a pino/fastify logger the sinks use. */
export interface AlertLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

export const DEFAULT_DATA_LOSS_CLEAR_AFTER = 3_600_000
/** Nodes whose loss totals the engine remembers (bounded: forgotten all at once beyond this). */
const REPORTED_MAX = 100_000
/** How often the value/message of an active age alert (no-sync, backlog-age, never-synced) is refreshed in the store. */
export const REFRESH_AGE_MS = 60_000

export interface AlertEngineOptions {
  store: BrokerStore
  options: HealthOptions
  now: () => number
  sinks: AlertSink[]
  instance?: string
  /** The fleet status at `now` (default: read from the store; the monitoring plugin's keeps rows: fleet-rows.ts). */
  fleet?: (now: number) => Promise<FleetStatus>
}

export interface Evaluation {
  fired: AlertRecord[]
  resolved: AlertRecord[]
  /** Alerts active after this evaluation. */
  active: number
}

/** What a rule wants for one node in one evaluation. */
interface Want {
  alert: NewAlert
  /** Only for data-loss with nothing new: keep it active, do not touch value/updatedAt. */
  keepOnly?: boolean
}

export class AlertEngine {
  private readonly instance: string
  private running: Promise<Evaluation> | undefined
  /** The last monotonic loss totals seen per node (monotonicLoss). */
  private readonly reported = new Map<
    string,
    { epoch: string | null; dropped: number; expired: number; loss: number; since: number; changed: boolean }
  >()

  constructor(private readonly o: AlertEngineOptions) {
    this.instance = o.instance ?? `${os.hostname()}:${process.pid}`
  }

  /** Evaluate every rule once. Concurrent calls share one run. */
  evaluate(): Promise<Evaluation> {
    if (!this.running)
      this.running = this.run().finally(() => {
        this.running = undefined
      })
    return this.running
  }

  private async run(): Promise<Evaluation> {
    const { store } = this.o
    const now = this.o.now()
    const cfg = this.o.options.alerts
    const [fleet, latest] = await Promise.all([
      this.o.fleet ? this.o.fleet(now) : fleetStatus(store, this.o.options, now),
      store.latestAlerts(),
    ])
    const last = new Map(latest.map((a) => [a.key, a]))
    const wants = new Map<string, Want>()
    for (const n of fleet.nodes) {
      if (n.health === 'never-seen') continue
      const ws = n.health === 'never-synced' ? [neverSynced(n, now, cfg)] : this.rules(n, now, last, cfg)
      for (const w of ws) wants.set(alertKey(w.alert.rule, w.alert.node), w)
    }
    const out: Evaluation = { fired: [], resolved: [], active: 0 }
    for (const [key, w] of wants) {
      const prev = last.get(key)
      out.active++
      if (prev?.state === 'active') {
        // A data-loss alert records every new loss; an age only needs refreshing once in a while
        // (it is derived live in GET /v1/nodes), which spares the store a write per alert per evaluation.
        const due = w.alert.rule === 'data-loss' || now - prev.updatedAt >= REFRESH_AGE_MS
        if (!w.keepOnly && due && w.alert.value !== prev.value)
          await store.updateAlert(key, { value: w.alert.value, message: w.alert.message }, now)
        continue
      }
      if (w.keepOnly) continue
      const fired = await store.fireAlert(w.alert, now)
      if (fired) {
        out.fired.push(fired)
        this.emit('fired', fired, now)
      }
    }
    for (const a of latest) {
      if (a.state !== 'active' || wants.has(a.key)) continue
      const resolved = await store.resolveAlert(a.key, now)
      if (resolved) {
        out.resolved.push(resolved)
        this.emit('resolved', resolved, now)
      }
    }
    return out
  }

  private *rules(
    n: NodeStatus,
    now: number,
    last: Map<string, AlertRecord>,
    cfg: AlertEngineOptions['options']['alerts'],
  ): Generator<Want> {
    if (cfg.noSyncFor > 0 && !n.direct && n.sinceContact !== null && n.sinceContact > cfg.noSyncFor)
      yield {
        alert: {
          rule: 'no-sync',
          node: n.node,
          severity: 'critical',
          value: n.sinceContact,
          threshold: cfg.noSyncFor,
          message: `${n.node} has not synced for ${formatAge(n.sinceContact)} (limit ${formatDuration(cfg.noSyncFor)})`,
        },
      }
    if (cfg.backlogAge > 0 && n.backlogAge !== null && n.backlogAge > cfg.backlogAge)
      yield {
        alert: {
          rule: 'backlog-age',
          node: n.node,
          severity: 'warning',
          value: n.backlogAge,
          threshold: cfg.backlogAge,
          message:
            `${n.node} holds ${n.backlog.pending} pending message(s), the oldest ${formatAge(n.backlogAge)} old ` +
            `(limit ${formatDuration(cfg.backlogAge)})`,
        },
      }
    if (n.holdBack !== null)
      yield {
        alert: {
          rule: 'hold-back',
          node: n.node,
          severity: 'warning',
          value: n.holdBack,
          threshold: this.o.options.maxHoldBack ?? DEFAULT_MAX_HOLD_BACK,
          message:
            `${n.node}'s low mark is ${formatAge(n.holdBack)} behind broker time (limit ` +
            `${formatDuration(this.o.options.maxHoldBack ?? DEFAULT_MAX_HOLD_BACK)}): it no longer holds the ` +
            'watermark back and its older messages arrive late; check its clock and its backlog',
        },
      }
    if (cfg.dataLoss) {
      // Only losses that missing seqs account for: a node cannot raise a critical alert with made-up counters.
      const { loss, since, changed } = this.monotonicLoss(n, now)
      const prev = last.get(alertKey('data-loss', n.node))
      // The last alert's total is the baseline when it was set in this epoch. Set before: after a
      // recreated outbox (new epoch) count from 0; unknown (this engine started since), a total
      // below it says the outbox was recreated.
      let baseline = 0
      if (prev)
        baseline = prev.updatedAt >= since ? prev.value : !changed && prev.value <= loss ? prev.value : 0
      const alert: NewAlert = {
        rule: 'data-loss',
        node: n.node,
        severity: 'critical',
        value: loss,
        threshold: 0,
        message:
          `${n.node} lost ${loss - baseline} message(s) since the last alert ` +
          `(${n.dropped} dropped to make room, ${n.expired} expired unsent, in total)`,
      }
      if (loss > baseline) yield { alert }
      else if (prev?.state === 'active') {
        const clearAfter = cfg.dataLossClearAfter ?? DEFAULT_DATA_LOSS_CLEAR_AFTER
        if (prev.value > loss) yield { alert: { ...alert, message: prev.message } }
        else if (now - prev.updatedAt < clearAfter) yield { alert, keepOnly: true }
      }
    }
  }

  /**
   * The node's verified loss (reported dropped + expired that missing seqs
   * account for), kept monotonic per epoch: totals that go down within one
   * outbox (epoch) are not a node's counters but made up, and count as the
   * highest total seen. `since`: when this engine first saw this epoch;
   * `changed`: it saw the node under another epoch before (a recreated outbox).
   */
  private monotonicLoss(n: NodeStatus, now: number): { loss: number; since: number; changed: boolean } {
    const loss = n.dropped + n.expired - n.unverifiedLosses
    const seen = this.reported.get(n.node)
    if (seen && seen.epoch === n.epoch) {
      if (n.dropped >= seen.dropped && n.expired >= seen.expired) {
        seen.dropped = n.dropped
        seen.expired = n.expired
        seen.loss = Math.max(seen.loss, loss)
      }
      return seen
    }
    if (this.reported.size >= REPORTED_MAX) this.reported.clear()
    const entry = {
      epoch: n.epoch,
      dropped: n.dropped,
      expired: n.expired,
      loss,
      since: now,
      changed: !!seen,
    }
    this.reported.set(n.node, entry)
    return entry
  }

  private emit(event: AlertEvent['event'], alert: AlertRecord, now: number): void {
    const e: AlertEvent = { version: ALERT_EVENT_VERSION, event, alert, broker: this.instance, sentAt: now }
    for (const s of this.o.sinks) {
      try {
        s.send(e)
      } catch {
        // a sink's failure is its own; the log sink records delivery problems
      }
    }
  }

  close(): void {
    for (const s of this.o.sinks) s.close()
  }
}

/** A node whose token is older than broker.alerts.neverSyncedFor and that never synced (health never-synced). */
function neverSynced(n: NodeStatus, now: number, cfg: AlertEngineOptions['options']['alerts']): Want {
  const limit = cfg.neverSyncedFor ?? DEFAULT_NEVER_SYNCED_FOR
  const age = Math.max(0, now - (n.tokenCreatedAt ?? now))
  return {
    alert: {
      rule: 'never-synced',
      node: n.node,
      severity: 'warning',
      value: age,
      threshold: limit,
      message:
        `${n.node} has had a token for ${formatAge(age)} and never synced (limit ${formatDuration(limit)}): ` +
        'is it installed, running, and given the token?',
    },
  }
}

/** Every firing and resolution as one structured log line (warn when fired, info when resolved). */
export class LogSink implements AlertSink {
  readonly name = 'log'
  constructor(private readonly log: AlertLogger) {}
  send(e: AlertEvent): void {
    const fields = {
      alert: { id: e.alert.id, rule: e.alert.rule, node: e.alert.node, severity: e.alert.severity },
      value: e.alert.value,
      threshold: e.alert.threshold,
    }
    if (e.event === 'fired') this.log.warn(fields, `alert fired: ${e.alert.message}`)
    else this.log.info(fields, `alert resolved: ${e.alert.rule} on ${e.alert.node}`)
  }
  close(): void {}
}

export interface WebhookOptions {
  /** One POST may take this long (ms). */
  timeoutMs: number
  /** Delay before the first retry; doubles per attempt up to maxDelayMs (with jitter). */
  initialDelayMs: number
  maxDelayMs: number
  /** Attempts per event before giving up (logged). */
  maxAttempts: number
  /** Events waiting per webhook; the oldest is dropped (logged) beyond this. */
  queueSize: number
}

export const DEFAULT_WEBHOOK_OPTIONS: WebhookOptions = {
  timeoutMs: 5000,
  initialDelayMs: 1000,
  maxDelayMs: 60_000,
  maxAttempts: 8,
  queueSize: 1000,
}

/**
 * POSTs each event as JSON to one URL, in order, from its own queue: a slow
 * or dead receiver delays only later webhook deliveries, never ingest or the
 * alert evaluation. Retries network errors, timeouts, 408, 429 and 5xx with
 * exponential backoff; other 4xx answers are permanent (logged, dropped).
 */
export class WebhookSink implements AlertSink {
  readonly name: string
  private readonly queue: AlertEvent[] = []
  private draining = false
  private closed = false
  private readonly abort = new AbortController()
  private readonly opts: WebhookOptions

  constructor(
    readonly url: string,
    private readonly log: AlertLogger,
    opts: Partial<WebhookOptions> = {},
  ) {
    this.name = `webhook ${redact(url)}`
    this.opts = { ...DEFAULT_WEBHOOK_OPTIONS, ...opts }
  }

  send(e: AlertEvent): void {
    if (this.closed) return
    if (this.queue.length >= this.opts.queueSize) {
      const dropped = this.queue.shift()!
      this.log.error(
        { webhook: redact(this.url), alert: dropped.alert.key, event: dropped.event },
        'webhook queue full: dropped the oldest alert event',
      )
    }
    this.queue.push(e)
    if (!this.draining) void this.drain()
  }

  /** Events not yet delivered (tests, shutdown logs). */
  get pending(): number {
    return this.queue.length
  }

  private async drain(): Promise<void> {
    this.draining = true
    try {
      while (this.queue.length > 0 && !this.closed) {
        await this.deliver(this.queue[0])
        this.queue.shift()
      }
    } finally {
      this.draining = false
    }
  }

  private async deliver(e: AlertEvent): Promise<void> {
    const body = JSON.stringify(e)
    const where = { webhook: redact(this.url), alert: e.alert.key, event: e.event }
    for (let attempt = 1; !this.closed; attempt++) {
      let problem: string
      try {
        const res = await fetch(this.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'rmq-broker',
            'x-rmq-event': e.event,
            // Same value on every retry of this event: receivers can drop repeats.
            'x-rmq-delivery': `${e.alert.id}-${e.event}`,
          },
          body,
          signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.opts.timeoutMs)]),
        })
        await res.arrayBuffer().catch(() => undefined)
        if (res.ok) return
        problem = `HTTP ${res.status}`
        if (res.status < 500 && res.status !== 408 && res.status !== 429) {
          this.log.error({ ...where, status: res.status }, 'webhook refused the alert event; not retrying')
          return
        }
      } catch (err) {
        if (this.closed) return
        const c = (err as { cause?: { code?: string } }).cause
        problem = c?.code ?? (err as Error).name ?? String(err)
      }
      if (attempt >= this.opts.maxAttempts) {
        this.log.error({ ...where, attempts: attempt, problem }, 'webhook delivery failed; giving up')
        return
      }
      const cap = Math.min(this.opts.maxDelayMs, this.opts.initialDelayMs * 2 ** (attempt - 1))
      const delay = Math.round(cap / 2 + (Math.random() * cap) / 2)
      this.log.warn({ ...where, attempt, problem, retryInMs: delay }, 'webhook delivery failed; will retry')
      await sleep(delay, this.abort.signal)
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.abort.abort()
    if (this.queue.length > 0)
      this.log.warn(
        { webhook: redact(this.url), undelivered: this.queue.length },
        'broker stopping: alert events not delivered to the webhook',
      )
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const t = setTimeout(done, ms)
    t.unref()
    function done() {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}

/** The URL without credentials or query string (they may hold secrets), for logs. */
export function redact(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}${u.pathname}`
  } catch {
    return '(invalid URL)'
  }
}

export const ALERT_RULES: readonly AlertRule[] = [
  'no-sync',
  'backlog-age',
  'data-loss',
  'never-synced',
  'hold-back',
]
