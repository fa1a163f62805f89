/**
 * Route modules of the broker, registered in this order by createBrokerApp.
 * A route module is a fastify plugin that reads the shared state from
 * `app.broker` (and `app.monitor`). PROTECTED_ROUTES are registered in one
 * context whose every request passes `app.authenticate` first; a new route
 * that needs a token goes there.
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

/** No token: liveness, the Prometheus scrape, the dashboard's static files. */
export const PUBLIC_ROUTES: FastifyPluginAsync[] = [health, metrics, dashboard]

/** A bearer token (broker.auth=token): everything under /v1/. */
export const PROTECTED_ROUTES: FastifyPluginAsync[] = [batches, messages, groups, nodes, alerts, history]
