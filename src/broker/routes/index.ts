/**
 * Route modules of the broker, registered in this order by createBrokerApp.
 * To add an area (monitoring, alerts, dashboard), write a module that exports
 * a FastifyPluginAsync using `app.broker`, and append it here.
 */
import type { FastifyPluginAsync } from 'fastify'
import batches from './batches.js'
import groups from './groups.js'
import health from './health.js'
import messages from './messages.js'
import nodes from './nodes.js'

export const ROUTES: FastifyPluginAsync[] = [health, batches, messages, groups, nodes]
