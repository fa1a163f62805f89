/**
 * Bearer tokens: named credentials with a role (docs/security.md). A token
 * is 256 random bits; the store keeps only its SHA-256 digest, and a
 * presented token is found by its digest, so the secret itself is never
 * compared byte by byte (the digest check that follows uses timingSafeEqual).
 * A node token's name is its node id. Rotation keeps the previous digest
 * valid until a grace deadline; revocation removes both.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { ValidationError } from '../shared/errors.js'
import { DURATION_FORMS, parseDuration } from '../shared/units.js'
import { NODE_ID_RULE, nodeIdProblem } from '../protocol/node-id.js'
import { topicFilterProblem } from '../protocol/topic-filter.js'
import type { BrokerStore, FoundToken, TokenRecord, TokenRole } from './store/types.js'

const TOKEN_PREFIX = 'rmq_'

export const TOKEN_ROLES: readonly TokenRole[] = ['node', 'consumer', 'monitor', 'admin']

/** Default grace of `rmq broker token rotate`. */
export const DEFAULT_ROTATION_GRACE = '24h'

export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url')
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex')
}

/** Digest equality in constant time. */
export function sameDigest(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex')
  const y = Buffer.from(b, 'hex')
  return x.length === y.length && timingSafeEqual(x, y)
}

/** Parse `Authorization: Bearer <token>`; undefined when absent or malformed. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return m ? m[1] : undefined
}

/** Why a found credential is refused at `now` (expired, rotated out), or undefined when it is good. */
export interface TokenRefusal {
  code: 'TOKEN_EXPIRED' | 'TOKEN_ROTATED'
  message: string
}

export function tokenRefusal(rec: FoundToken, now: number): TokenRefusal | undefined {
  if (rec.expiresAt !== null && now >= rec.expiresAt)
    return {
      code: 'TOKEN_EXPIRED',
      message: `the token ${JSON.stringify(rec.name)} expired at ${new Date(rec.expiresAt).toISOString()}; ask for a new one (rmq broker token create or rotate)`,
    }
  if (rec.previous && (rec.previousUntil === null || now >= rec.previousUntil))
    return {
      code: 'TOKEN_ROTATED',
      message: `this token of ${JSON.stringify(rec.name)} was replaced by a rotation and its grace period ended${
        rec.previousUntil === null ? '' : ` at ${new Date(rec.previousUntil).toISOString()}`
      }; use the new token`,
    }
  return undefined
}

/** The credential a token belongs to (it may be expired or rotated out: see tokenRefusal), or undefined. */
export async function authenticate(store: BrokerStore, token: string): Promise<FoundToken | undefined> {
  if (token.length > 512) return undefined
  const digest = hashToken(token)
  const rec = await store.findToken(digest)
  if (!rec || !sameDigest(digest, hashToken(token))) return undefined
  return rec
}

/** A credential name: the node id for role node, the same rule for the others. */
export function checkTokenName(name: string, role: TokenRole = 'node'): void {
  const problem = nodeIdProblem(name)
  if (problem)
    throw new ValidationError(
      `invalid ${role === 'node' ? 'node id' : 'token name'} ${JSON.stringify(name)}: ${problem}`,
      { suggestion: `use ${NODE_ID_RULE}` },
    )
}

/** A group name as the commit route takes it (1-128 characters, no control characters), and no comma. */
function groupNameOk(g: string): boolean {
  if (g.length < 1 || g.length > 128 || g.includes(',')) return false
  for (let i = 0; i < g.length; i++) {
    const c = g.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return false
  }
  return true
}

export interface TokenSpec {
  name: string
  role?: TokenRole
  /** consumer: topic filters it may read, e.g. ['plant/7/#', 'alarms/#']. */
  topics?: readonly string[]
  /** consumer: consumer groups it may use. */
  groups?: readonly string[]
  /** Lifetime from now (a duration: 90d, 12h); undefined or '' for no expiry. */
  expires?: string
}

/** A comma list (`plant/7/#,alarms/#`) as its trimmed, non-empty items. */
export function splitList(raw: string | undefined): string[] {
  if (raw === undefined) return []
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
}

function checkRole(role: string): TokenRole {
  if (!(TOKEN_ROLES as readonly string[]).includes(role))
    throw new ValidationError(`unknown role ${JSON.stringify(role)}`, {
      suggestion: `use one of ${TOKEN_ROLES.join(', ')}`,
    })
  return role as TokenRole
}

function checkScopes(spec: TokenSpec, role: TokenRole): { topics: string[]; groups: string[] } {
  const topics = [...new Set(spec.topics ?? [])]
  const groups = [...new Set(spec.groups ?? [])]
  if (role !== 'consumer') {
    if (topics.length > 0 || groups.length > 0)
      throw new ValidationError(`--topics and --groups are for role consumer, not ${role}`, {
        suggestion:
          role === 'admin' || role === 'monitor'
            ? `a ${role} token is not limited to topics or groups: leave them out`
            : 'a node token publishes its own batches only: leave them out, or use --role consumer',
      })
    return { topics, groups }
  }
  if (topics.length === 0)
    throw new ValidationError('a consumer token needs the topics it may read', {
      suggestion: "add --topics, e.g. --topics 'plant/7/#,alarms/#' (--topics '#' for every topic)",
    })
  for (const t of topics) {
    const problem = topicFilterProblem(t)
    if (problem)
      throw new ValidationError(`--topics: ${JSON.stringify(t)} is not a topic filter: ${problem}`, {
        suggestion: "give MQTT-style filters separated by commas, e.g. 'plant/7/#,alarms/+'",
      })
  }
  for (const g of groups)
    if (!groupNameOk(g))
      throw new ValidationError(`--groups: ${JSON.stringify(g)} is not a consumer group name`, {
        suggestion: 'give group names of 1-128 characters without control characters, separated by commas',
      })
  return { topics, groups }
}

function expiryOf(expires: string | undefined, now: number): number | null {
  if (expires === undefined || expires === '' || expires === 'never') return null
  const ms = parseDuration(expires)
  if (ms === undefined || ms <= 0)
    throw new ValidationError(`--expires: ${JSON.stringify(expires)} is not a duration`, {
      suggestion: `use ${DURATION_FORMS} (e.g. --expires 90d), or leave it out for a token that does not expire`,
    })
  return now + ms
}

export interface CreatedToken {
  name: string
  /** The node id of a node token (the same as name); kept for scripts that read `node`. */
  node?: string
  role: TokenRole
  topics: string[]
  groups: string[]
  token: string
  createdAt: number
  expiresAt: number | null
  replaced: boolean
}

/** Create (or replace) a credential. The token is returned once and never stored. */
export async function createToken(
  store: BrokerStore,
  spec: TokenSpec,
  now = Date.now(),
): Promise<CreatedToken> {
  const role = checkRole(spec.role ?? 'node')
  checkTokenName(spec.name, role)
  const { topics, groups } = checkScopes(spec, role)
  const expiresAt = expiryOf(spec.expires, now)
  const replaced = (await store.listTokens()).some((t) => t.name === spec.name)
  const token = generateToken()
  await store.putToken({ name: spec.name, role, topics, groups, expiresAt }, hashToken(token), now)
  return {
    name: spec.name,
    ...(role === 'node' ? { node: spec.name } : {}),
    role,
    topics,
    groups,
    token,
    createdAt: now,
    expiresAt,
    replaced,
  }
}

/** Create (or replace) the token of a node (role node). */
export function createNodeToken(store: BrokerStore, node: string, now = Date.now()): Promise<CreatedToken> {
  return createToken(store, { name: node, role: 'node' }, now)
}

export interface RotatedToken {
  name: string
  role: TokenRole
  token: string
  /** Until when the previous token is still accepted (ms). */
  previousValidUntil: number
}

/** Issue a new token for `name`; the one it had keeps working for `grace` (a duration, e.g. 24h; 0 ends it now). */
export async function rotateToken(
  store: BrokerStore,
  name: string,
  grace: string = DEFAULT_ROTATION_GRACE,
  now = Date.now(),
): Promise<RotatedToken> {
  const graceMs = parseDuration(grace)
  if (graceMs === undefined)
    throw new ValidationError(`--grace: ${JSON.stringify(grace)} is not a duration`, {
      suggestion: `use ${DURATION_FORMS} (e.g. --grace 24h; 0 stops the old token at once)`,
    })
  const rec = (await store.listTokens()).find((t) => t.name === name)
  if (!rec)
    throw new ValidationError(`there is no token named ${JSON.stringify(name)}`, {
      suggestion: 'see `rmq broker token list`; `rmq broker token create NAME` makes one',
    })
  const token = generateToken()
  const previousValidUntil = now + graceMs
  await store.rotateToken(name, hashToken(token), previousValidUntil)
  return { name, role: rec.role, token, previousValidUntil }
}

/** Every credential (never a token), with whether it has expired at `now`. */
export async function listTokens(
  store: BrokerStore,
  now = Date.now(),
): Promise<Array<TokenRecord & { expired: boolean; node?: string }>> {
  return (await store.listTokens()).map((t) => ({
    ...t,
    // Kept for scripts that read `node` (before roles every token was a node's).
    ...(t.role === 'node' ? { node: t.name } : {}),
    expired: t.expiresAt !== null && now >= t.expiresAt,
  }))
}

/** Revoke a credential: its token (and a rotated-out one in its grace) get 401 from then on. */
export async function revokeToken(
  store: BrokerStore,
  name: string,
): Promise<{ name: string; revoked: true }> {
  if (!(await store.revokeToken(name)))
    throw new ValidationError(`there is no token named ${JSON.stringify(name)}`, {
      suggestion: 'see `rmq broker token list` for the credentials that have one',
    })
  return { name, revoked: true }
}
