/**
 * Route modules of the broker, registered in this order by createBrokerApp.
 * To add an area (monitoring, alerts, dashboard), write a module that exports
 * a FastifyPluginAsync using `app.broker`, and append it here.
 */
import type { FastifyPluginAsync } from 'fastify'
import monitoring from '../monitoring.js'
import alerts from './alerts.js'
import batches from './batches.js'
import dashboard from './dashboard.js'
import groups from './groups.js'
import health from './health.js'
import messages from './messages.js'
import metrics from './metrics.js'
import nodes from './nodes.js'

// `monitoring` decorates the app with `app.monitor`; the monitoring routes after it use it.
export const ROUTES: FastifyPluginAsync[] = [
  health,
  batches,
  messages,
  groups,
  monitoring,
  nodes,
  alerts,
  metrics,
  dashboard,
]
