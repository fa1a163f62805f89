/**
 * The broker's monitoring service, the fastify plugin `rmq-monitoring`
 * (registered by createBrokerApp before the routes): it decorates the app with `app.monitor` (alert engine, history of
 * fleet samples for the dashboard charts, Prometheus metrics) and runs the
 * alert and sampling timers while the app is up. Routes: ./routes/nodes.ts,
 * ./routes/alerts.ts, ./routes/metrics.ts, ./routes/dashboard.ts, ./routes/history.ts.
 */
import fs from 'node:fs'
import os from 'node:os'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { ConfigError } from '../shared/errors.js'
import {
  AlertEngine,
  LogSink,
  WebhookSink,
  type AlertLogger,
  type AlertSink,
  type WebhookOptions,
} from './alerts.js'
import { createMetrics, type BrokerMetrics, type MetricsSnapshot } from './metrics.js'
import { FleetRows } from './fleet-rows.js'
import { fleetStatusOf, type FleetStatus } from './node-status.js'
import type { BrokerStore } from './store/types.js'
import { Repeater } from './timers.js'

export interface MonitoringOptions {
  /** How often the dashboard history is sampled (ms); default min(5s, broker.alerts.interval), at least 250 ms. */
  historyIntervalMs?: number
  /** Samples kept (default 720: one hour at 5 s). */
  historySize?: number
  /** Webhook delivery timing (tests shorten it). */
  webhook?: Partial<WebhookOptions>
  /** Evaluate alerts on the broker.alerts.interval timer (default true; tests call evaluate() themselves). */
  alertTimer?: boolean
  /** Extra sinks (embedding, tests). */
  sinks?: AlertSink[]
  /** prom-client's process_* and nodejs_* series (default true). */
  defaultMetrics?: boolean
}

export interface HistorySample {
  /** Broker time, epoch ms. */
  t: number
  /** Messages accepted from all nodes so far (store-wide). */
  received: number
  /** Messages per second accepted over the last 5 s (store-wide; 0 for the first sample). */
  rate: number
  /** Messages pending on all nodes at their last reports. */
  backlog: number
  /** Messages held back by the watermark at the broker. */
  held: number
  ok: number
  behind: number
  stale: number
}

const RATE_WINDOW_MS = 5000

/** A ring of fleet samples, for charts that show something the moment the dashboard opens. */
export class History {
  private readonly samples: HistorySample[] = []
  constructor(readonly size: number) {}

  add(t: number, fleet: FleetStatus, held: number): HistorySample {
    const received = fleet.nodes.reduce((s, n) => s + n.received, 0)
    // The rate is averaged over the last RATE_WINDOW_MS (or since the previous sample, if older).
    let base = this.samples[this.samples.length - 1]
    for (let i = this.samples.length - 1; i >= 0 && t - this.samples[i].t <= RATE_WINDOW_MS; i--)
      base = this.samples[i]
    const dt = base ? (t - base.t) / 1000 : 0
    const sample: HistorySample = {
      t,
      received,
      // A drop of the total (nodes removed) is a reset, never a negative rate.
      rate: base && dt > 0 ? Math.max(0, received - base.received) / dt : 0,
      backlog: fleet.nodes.reduce((s, n) => s + n.backlog.pending, 0),
      held,
      ok: fleet.summary.ok,
      behind: fleet.summary.behind,
      stale: fleet.summary.stale,
    }
    this.samples.push(sample)
    if (this.samples.length > this.size) this.samples.splice(0, this.samples.length - this.size)
    return sample
  }

  list(since = 0): HistorySample[] {
    return this.samples.filter((s) => s.t > since)
  }
}

export interface Monitor {
  alerts: AlertEngine
  history: History
  metrics: BrokerMetrics
  historyIntervalMs: number
  /** Every node with its derived status, now. */
  fleet(): Promise<FleetStatus>
  /** Take one history sample now. */
  sample(): Promise<HistorySample>
}

declare module 'fastify' {
  interface FastifyInstance {
    monitor: Monitor
  }
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version?: string
    }
    return pkg.version ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

export function checkWebhookUrls(urls: string[]): void {
  for (const u of urls) {
    let ok = false
    try {
      ok = ['http:', 'https:'].includes(new URL(u).protocol)
    } catch {
      ok = false
    }
    if (!ok)
      throw new ConfigError(`broker.alerts.webhooks: ${JSON.stringify(u)} is not an http(s) URL`, {
        suggestion:
          'give full URLs, e.g. https://alerts.example.com/rmq (comma-separated in RMQ_BROKER_ALERTS_WEBHOOKS)',
      })
  }
}

const monitoring: FastifyPluginAsync = async (app) => {
  const { store, options } = app.broker
  const now = () => app.broker.now()
  const m = options.monitoring ?? {}
  checkWebhookUrls(options.alerts.webhooks)
  const instance = `${os.hostname()}:${process.pid}`
  const log = app.log as unknown as AlertLogger
  const sinks: AlertSink[] = [
    new LogSink(log),
    ...options.alerts.webhooks.map((u) => new WebhookSink(u, log, m.webhook)),
    ...(m.sinks ?? []),
  ]
  // The fleet's rows, kept between reads: only new or changed node rows are read again (fleet-rows.ts).
  const rows = new FleetRows(store)
  const fleetAt = async (t: number) => fleetStatusOf(await rows.read(), options, t)
  const fleet = () => fleetAt(now())
  const alerts = new AlertEngine({ store, options, now, sinks, instance, fleet: fleetAt })
  const history = new History(m.historySize ?? 720)
  const metrics = await createMetrics({
    snapshot: () => snapshot(store, rows, now),
    health: options,
    storeKind: store.kind,
    version: packageVersion(),
    instance,
    defaultMetrics: m.defaultMetrics,
  })
  const historyIntervalMs =
    m.historyIntervalMs ?? Math.max(250, Math.min(5000, options.alerts.interval || 5000))
  const monitor: Monitor = {
    alerts,
    history,
    metrics,
    historyIntervalMs,
    fleet,
    async sample() {
      const [f, heads] = await Promise.all([fleet(), store.heads()])
      return history.add(f.now, f, heads.held)
    },
  }
  app.decorate('monitor', monitor)

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched'
    monitor.metrics.observeRequest(req.method, route, reply.statusCode, reply.elapsedTime / 1000)
  })

  const repeater = new Repeater(app.log)
  const every = repeater.every.bind(repeater)
  app.addHook('onReady', async () => {
    await monitor.sample().catch((err) => app.log.warn({ err }, 'history sample failed'))
    every(historyIntervalMs, 'history sample', () => monitor.sample())
    if (m.alertTimer !== false && options.alerts.interval > 0)
      every(options.alerts.interval, 'alert evaluation', () => alerts.evaluate())
  })
  app.addHook('preClose', async () => {
    repeater.stop()
    alerts.close()
  })
}

async function snapshot(store: BrokerStore, rows: FleetRows, now: () => number): Promise<MetricsSnapshot> {
  const t = now()
  const [r, heads, alerts] = await Promise.all([
    rows.read(),
    store.heads(),
    store.listAlerts({ state: 'active', limit: 10_000 }),
  ])
  return { rows: r, now: t, heads, alerts }
}

// Plugin `rmq-monitoring`: `app.monitor` and its timers apply to the whole app, not just this module.
export default fp(monitoring, { name: 'rmq-monitoring', fastify: '5.x', dependencies: ['rmq-context'] })
