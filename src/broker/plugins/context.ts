/**
 * Plugin `rmq-context`: decorates the app with the broker context (store,
 * options, notifier, rate limiter, clock, release and purge) and runs the
 * background work: the watermark release and retention timers, closing the
 * store with the app. Every other broker plugin depends on it.
 */
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { BrokerContext } from '../context.js'
import { Notifier } from '../notifier.js'
import { orderingContext, type BrokerOptions } from '../options.js'
import { RateLimiter } from '../rate-limit.js'
import type { BrokerStore } from '../store/types.js'
import { Repeater } from '../timers.js'

export interface ContextPluginOptions {
  store: BrokerStore
  options: BrokerOptions
}

const PURGE_CHUNK = 10_000

const context: FastifyPluginAsync<ContextPluginOptions> = async (app, { store, options }) => {
  const now = options.now ?? Date.now
  const notifier = new Notifier()
  // Stores shared by several brokers signal commits made by the others too.
  const unsubscribe = store.subscribe?.(() => notifier.notify())
  // The watermark only moves back by an admin's `rmq broker watermark --reset-to`: log it when seen.
  let lastWatermark: number | null = null
  const ctx: BrokerContext = {
    store,
    options,
    notifier,
    rateLimiter: new RateLimiter(options.limits.ratePerNode),
    now,
    async release() {
      const r = await store.release(orderingContext(options, now()))
      if (lastWatermark !== null && r.watermark !== null && r.watermark < lastWatermark)
        app.log.warn(
          { watermark: { from: lastWatermark, to: r.watermark } },
          'the watermark was moved back (rmq broker watermark --reset-to)',
        )
      lastWatermark = r.watermark
      if (r.released > 0) notifier.notify()
    },
    async purge() {
      if (!options.retention) return 0
      let total = 0
      for (;;) {
        const n = await store.purge({ receivedBefore: now() - options.retention, limit: PURGE_CHUNK })
        total += n
        if (n < PURGE_CHUNK) return total
        await new Promise((r) => setImmediate(r))
      }
    },
  }
  app.decorate('broker', ctx)
  app.decorateRequest('authNode', null)

  // Background work: timers are unref'd; the watermark also moves on every ingest.
  const repeater = new Repeater(app.log)
  app.addHook('onReady', async () => {
    repeater.every(options.releaseIntervalMs ?? 1000, 'release', () => ctx.release())
    if (options.retention > 0)
      repeater.every(
        options.retentionIntervalMs ?? Math.min(60_000, Math.max(1000, options.retention / 10)),
        'retention',
        () => ctx.purge(),
      )
  })
  app.addHook('preClose', async () => {
    repeater.stop()
    unsubscribe?.()
    notifier.close()
  })
  app.addHook('onClose', async () => {
    await store.close()
  })
}

export default fp(context, { name: 'rmq-context', fastify: '5.x' })
