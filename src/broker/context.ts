/**
 * What every part of the broker app shares (`app.broker`), and the request
 * fields the plugins set. Declared here, below the plugins and routes that
 * use them, so that none of them imports the app factory.
 */
import type { Notifier } from './notifier.js'
import type { BrokerOptions } from './options.js'
import type { RateLimiter } from './rate-limit.js'
import type { BrokerStore } from './store/types.js'

export interface BrokerContext {
  store: BrokerStore
  options: BrokerOptions
  notifier: Notifier
  rateLimiter: RateLimiter
  now: () => number
  /** Recompute the watermark and release held messages now. */
  release(): Promise<void>
  /** Run retention once; returns the number of messages deleted. */
  purge(): Promise<number>
}

declare module 'fastify' {
  interface FastifyInstance {
    broker: BrokerContext
  }
  interface FastifyRequest {
    /** The node of the bearer token; null when broker.auth=none. */
    authNode: string | null
  }
}
