/**
 * What each role may do (docs/security.md). Every route declares the one
 * permission it needs in its config (`config: { permission: 'messages:read' }`);
 * the `rmq-authorization` plugin (./plugins/authorization.ts) refuses a route
 * without one at start-up and checks each request's credential against it
 * here. A role either has a permission or not; `node` and `consumer` have
 * theirs only within a scope (their own node; their topic and group grants),
 * checked by `scopeProblem` on the request's query and params. Anything
 * outside is 403 naming the missing permission; a topic filter wider than
 * the grants is refused, never narrowed.
 */
import { coveringGrant, topicFilterProblem } from '../protocol/topic-filter.js'
import type { TokenRole } from './store/types.js'

export const PERMISSIONS = [
  /** No credential needed: /healthz, the dashboard's files and sign-in. */
  'public',
  /** POST /v1/batches: a node's own batches and heartbeats. */
  'batches:write',
  /** GET /v1/nodes/:id: one node's status (a node: its own). */
  'nodes:read',
  /** GET /v1/nodes: the whole fleet's status. */
  'fleet:read',
  'alerts:read',
  'history:read',
  'metrics:read',
  /** GET /v1/messages: payloads (a consumer: within its topic grants and groups). */
  'messages:read',
  /** GET /v1/heads: stream positions, no payloads. */
  'heads:read',
  /** GET /v1/groups: consumer-group positions (a consumer sees its granted groups). */
  'groups:read',
  /** POST /v1/groups/:name/commit (a consumer: its granted groups). */
  'groups:commit',
] as const

export type Permission = (typeof PERMISSIONS)[number]

export function isPermission(x: unknown): x is Permission {
  return typeof x === 'string' && (PERMISSIONS as readonly string[]).includes(x)
}

const MONITOR: readonly Permission[] = [
  'fleet:read',
  'nodes:read',
  'alerts:read',
  'history:read',
  'metrics:read',
  'heads:read',
  'groups:read',
]

export const ROLE_PERMISSIONS: Readonly<Record<TokenRole, ReadonlySet<Permission>>> = {
  node: new Set(['batches:write', 'nodes:read']),
  consumer: new Set(['messages:read', 'heads:read', 'groups:read', 'groups:commit']),
  monitor: new Set(MONITOR),
  admin: new Set(PERMISSIONS.filter((p) => p !== 'public')),
}

/** Who made a request, as the authentication hook found it. */
export interface Credential {
  name: string
  role: TokenRole
  topics: readonly string[]
  groups: readonly string[]
  by: 'token' | 'certificate' | 'session'
}

/** The parts of a request a scope check reads. */
export interface ScopedRequest {
  method: string
  url: string
  query: unknown
  params: unknown
}

/** A query or params field; a repeated one (an array) is returned as its JSON text, which no grant names. */
function field(obj: unknown, key: string): string | undefined {
  const v = obj && typeof obj === 'object' ? (obj as Record<string, unknown>)[key] : undefined
  if (v === undefined || v === null) return undefined
  return typeof v === 'string' ? v : JSON.stringify(v)
}

function who(c: Credential): string {
  const what = c.by === 'certificate' ? 'client certificate' : c.by === 'session' ? 'session of' : 'token'
  return `${what} ${JSON.stringify(c.name)} (role ${c.role})`
}

function rolesWith(permission: Permission): string {
  return (Object.keys(ROLE_PERMISSIONS) as TokenRole[])
    .filter((r) => ROLE_PERMISSIONS[r].has(permission))
    .join(', ')
}

/** Why `c` may not do `req` under `permission`, or undefined when it may. */
export function permissionProblem(
  c: Credential,
  permission: Permission,
  req: ScopedRequest,
): string | undefined {
  if (permission === 'public') return undefined
  const route = `${req.method} ${req.url.split('?')[0]}`
  if (!ROLE_PERMISSIONS[c.role].has(permission))
    return `the ${who(c)} lacks permission ${permission} (${route}); roles that have it: ${rolesWith(permission)}`
  return scopeProblem(c, permission, req)
}

function scopeProblem(c: Credential, permission: Permission, req: ScopedRequest): string | undefined {
  if (c.role === 'node' && permission === 'nodes:read') {
    const id = field(req.params, 'id')
    if (id !== c.name)
      return `the ${who(c)} lacks permission nodes:read on node ${JSON.stringify(id ?? '')}: a node reads only its own status`
  }
  if (c.role !== 'consumer') return undefined
  if (permission === 'messages:read') {
    const raw = field(req.query, 'topic')
    const topic = raw === undefined || raw === '' ? '#' : raw
    // An invalid filter is the route's 400, not a 403.
    if (topicFilterProblem(topic) === undefined && coveringGrant(c.topics, topic) === undefined)
      return (
        `the ${who(c)} lacks permission messages:read on topic filter ${JSON.stringify(topic)}: ` +
        `it may read ${c.topics.map((t) => JSON.stringify(t)).join(', ')}; ask for a filter inside one of them ` +
        `(a wider filter is refused, not narrowed)`
      )
    const group = field(req.query, 'group')
    if (group !== undefined && group !== '' && !c.groups.includes(group))
      return groupProblem(c, group, permission)
  }
  if (permission === 'groups:commit') {
    const group = field(req.params, 'name') ?? ''
    if (!c.groups.includes(group)) return groupProblem(c, group, permission)
  }
  return undefined
}

function groupProblem(c: Credential, group: string, permission: Permission): string {
  return (
    `the ${who(c)} lacks permission ${permission} with consumer group ${JSON.stringify(group)}: ` +
    (c.groups.length === 0
      ? 'it is granted no groups (rmq broker token create NAME --role consumer --groups ...)'
      : `it is granted ${c.groups.map((g) => JSON.stringify(g)).join(', ')}`)
  )
}

/** Whether the credential may see consumer group `name` (GET /v1/groups lists only those). */
export function canSeeGroup(c: Credential | null, name: string): boolean {
  return c === null || c.role !== 'consumer' || c.groups.includes(name)
}
