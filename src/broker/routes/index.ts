/**
 * Route modules of the broker, registered in this order by createBrokerApp.
 * A route module is a fastify plugin that reads the shared state from
 * `app.broker` (and `app.monitor`). Every route declares the permission it
 * needs in its config (`config: { permission }`, ../authorization.ts): the
 * `rmq-authorization` plugin authenticates and authorizes each request by
 * it, and refuses a route that declares none.
 */
import type { FastifyPluginAsync } from 'fastify'
import alerts from './alerts.js'
import batches from './batches.js'
import dashboard from './dashboard.js'
import groups from './groups.js'
import health from './health.js'
import history from './history.js'
import messages from './messages.js'
import metrics from './metrics.js'
import nodes from './nodes.js'
import session from './session.js'

export const ROUTES: FastifyPluginAsync[] = [
  health,
  metrics,
  dashboard,
  session,
  batches,
  messages,
  groups,
  nodes,
  alerts,
  history,
]
