/**
 * Dashboard sessions: signing in with a monitor or admin token gives a
 * random session id in an HttpOnly, SameSite=Strict cookie (Secure over
 * HTTPS), never the token. The broker keeps, in memory, the digest of the
 * token each session stands for, so every request still finds the
 * credential in the store: revoking or expiring the token ends its sessions
 * at once. Sessions live in one broker process (a restart signs everyone
 * out) and are bounded in number and lifetime.
 */
import { createHash, randomBytes } from 'node:crypto'

export const SESSION_COOKIE = 'rmq_session'
/** How long a dashboard session lasts without signing in again. */
export const SESSION_TTL_MS = 12 * 3_600_000
/** Sessions kept at most; the oldest go first. */
export const MAX_SESSIONS = 10_000

interface Session {
  digest: string
  expiresAt: number
}

const key = (id: string) => createHash('sha256').update(id, 'utf8').digest('hex')

export class SessionStore {
  // Keyed by the digest of the session id: in insertion order, so the first entries are the oldest.
  private readonly sessions = new Map<string, Session>()

  constructor(
    private readonly ttlMs = SESSION_TTL_MS,
    private readonly max = MAX_SESSIONS,
  ) {}

  /** A new session for the token with this digest; returns its id (the cookie value). */
  create(tokenDigest: string, now: number): string {
    for (const [k, s] of this.sessions) {
      if (s.expiresAt > now && this.sessions.size < this.max) break
      this.sessions.delete(k)
    }
    const id = randomBytes(32).toString('base64url')
    this.sessions.set(key(id), { digest: tokenDigest, expiresAt: now + this.ttlMs })
    return id
  }

  /** The token digest of a live session, or undefined. */
  digestOf(id: string, now: number): string | undefined {
    if (id.length > 128) return undefined
    const k = key(id)
    const s = this.sessions.get(k)
    if (!s) return undefined
    if (s.expiresAt <= now) {
      this.sessions.delete(k)
      return undefined
    }
    return s.digest
  }

  delete(id: string): void {
    this.sessions.delete(key(id))
  }

  get size(): number {
    return this.sessions.size
  }
}

/** The value of cookie `name` in a Cookie header, or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

/** Set-Cookie for a session id; `maxAgeMs` 0 clears it. */
export function sessionCookie(
  id: string,
  { secure, maxAgeMs }: { secure: boolean; maxAgeMs: number },
): string {
  return [
    `${SESSION_COOKIE}=${id}`,
    'Path=/',
    'HttpOnly',
    'SameSite=Strict',
    ...(secure ? ['Secure'] : []),
    `Max-Age=${Math.floor(maxAgeMs / 1000)}`,
  ].join('; ')
}
