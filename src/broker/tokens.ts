/**
 * Per-node bearer tokens. A token is 256 random bits; the store keeps only
 * its SHA-256 digest, and a presented token is found by its digest, so the
 * secret itself is never compared byte by byte (the digest check that
 * follows uses timingSafeEqual).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { ValidationError } from '../shared/errors.js'
import { NODE_ID_RULE, nodeIdProblem } from '../protocol/node-id.js'
import type { BrokerStore, TokenRecord } from './store/types.js'

const TOKEN_PREFIX = 'rmq_'

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

/** The node a token belongs to, or undefined. */
export async function authenticate(store: BrokerStore, token: string): Promise<TokenRecord | undefined> {
  if (token.length > 512) return undefined
  const digest = hashToken(token)
  const rec = await store.findToken(digest)
  if (!rec || !sameDigest(digest, hashToken(token))) return undefined
  return rec
}

export function checkNodeId(node: string): void {
  const problem = nodeIdProblem(node)
  if (problem)
    throw new ValidationError(`invalid node id ${JSON.stringify(node)}: ${problem}`, {
      suggestion: `use ${NODE_ID_RULE}`,
    })
}

export interface CreatedToken {
  node: string
  token: string
  createdAt: number
  replaced: boolean
}

/** Create (or replace) the token of a node. The token is returned once and never stored. */
export async function createNodeToken(
  store: BrokerStore,
  node: string,
  now = Date.now(),
): Promise<CreatedToken> {
  checkNodeId(node)
  const replaced = (await store.listTokens()).some((t) => t.node === node)
  const token = generateToken()
  await store.putToken(node, hashToken(token), now)
  return { node, token, createdAt: now, replaced }
}
