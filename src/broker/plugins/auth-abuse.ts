/**
 * Plugin `rmq-auth-abuse`: the limits on the unauthenticated side of the
 * auth path, kept apart from `rmq-authentication` (which checks
 * credentials) so that either can change alone.
 *
 * - Failed authentications (any 401) are counted per client address in a
 *   token bucket: `broker.limits.authFailures` in a burst, refilled at
 *   `broker.limits.authFailureRate` per second. Past it, every request from
 *   that address is answered 429 TOO_MANY_AUTH_FAILURES with Retry-After by
 *   an onRequest hook that runs before authentication, so the token is not
 *   even looked at: a token-guessing loop costs a map lookup per request.
 *   Other addresses are not affected. The address is the socket's (the
 *   broker has no trusted-proxy setting; behind a proxy every client would
 *   share the proxy's address, so put the limit in the proxy instead). IPv6
 *   addresses count per /64, the block one host usually gets.
 * - 401s and those 429s are not logged one line per request (the error
 *   handler skips them) but as a summary: one line per address per minute
 *   with the count and the reason codes.
 */
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { HttpError } from '../http-error.js'
import { limitOf } from '../options.js'
import { RateLimiter } from '../rate-limit.js'

/** The code of the 429 a blocked address gets. */
export const AUTH_LIMITED = 'TOO_MANY_AUTH_FAILURES'

/** Responses the summary logs instead of the error handler: failed authentication and its 429. */
export function isSummarizedAuthFailure(status: number, code: string): boolean {
  return status === 401 || code === AUTH_LIMITED
}

/** Addresses one summary keeps apart; failures from any more are summed in one line. */
const MAX_ADDRESSES = 1000
const OTHERS = 'other addresses'

/** The key of a client address: IPv4 as it is (also when IPv4-mapped), IPv6 by its /64 prefix. */
export function addressKey(ip: string): string {
  if (!ip.includes(':')) return ip
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)
  if (mapped) return mapped[1]
  const [head, tail = ''] = ip.toLowerCase().split('%')[0].split('::')
  const left = head ? head.split(':') : []
  const right = ip.includes('::') ? (tail ? tail.split(':') : []) : []
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
  return groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')
    .concat('::/64')
}

interface Tally {
  failures: number
  limited: number
  codes: Record<string, number>
}

const authAbuse: FastifyPluginAsync = async (app) => {
  const { options, now } = app.broker
  const burst = limitOf(options.limits, 'authFailures')
  const rate = limitOf(options.limits, 'authFailureRate')
  // A burst of 0 switches the limit off. A rate of 0 would mean "the burst, then never again", too
  // harsh for a mistyped token: it is one a minute instead.
  const failures = burst > 0 ? new RateLimiter(rate > 0 ? rate : 1 / 60, burst) : undefined
  const refill = rate > 0 ? `${rate} per second` : 'one a minute'
  let tallies = new Map<string, Tally>()

  const record = (req: FastifyRequest, code: string) => {
    let key = addressKey(req.ip)
    if (!tallies.has(key) && tallies.size >= MAX_ADDRESSES) key = OTHERS
    let t = tallies.get(key)
    if (!t) tallies.set(key, (t = { failures: 0, limited: 0, codes: {} }))
    if (code === AUTH_LIMITED) t.limited++
    else t.failures++
    t.codes[code] = (t.codes[code] ?? 0) + 1
  }

  const flush = () => {
    const done = tallies
    tallies = new Map()
    for (const [address, t] of done)
      app.log.warn(
        { address, failures: t.failures, limited: t.limited, codes: t.codes },
        `authentication failed ${t.failures} time(s)` +
          (t.limited ? `, ${t.limited} request(s) refused 429 ${AUTH_LIMITED}` : '') +
          ` from ${address} (summary per address, every ${Math.round(intervalMs / 1000)} s)`,
      )
  }
  const intervalMs = options.authLogIntervalMs ?? 60_000
  let timer: NodeJS.Timeout | undefined
  app.addHook('onReady', async () => {
    timer = setInterval(flush, intervalMs)
    timer.unref()
  })
  app.addHook('onClose', async () => {
    if (timer) clearInterval(timer)
    flush()
  })

  // Before authentication (this hook is registered on the root, ahead of the protected context).
  app.addHook('onRequest', async (req) => {
    if (!failures) return
    const ms = failures.peek(addressKey(req.ip), now())
    if (ms > 0)
      throw new HttpError(
        429,
        AUTH_LIMITED,
        `too many failed authentications from ${req.ip} (broker.limits.authFailures is ${burst}, ` +
          `refilled at ${refill}); retry in ${Math.ceil(ms / 1000)} s with a valid credential`,
        { 'retry-after': String(Math.ceil(ms / 1000)) },
      )
  })
  app.addHook('onError', async (req, _reply, err: Error & { statusCode?: number; code?: string }) => {
    const status = err.statusCode ?? 500
    const code = err.code ?? 'UNAUTHORIZED'
    if (!isSummarizedAuthFailure(status, code)) return
    record(req, code)
    if (status === 401) failures?.take(addressKey(req.ip), now())
  })
}

export default fp(authAbuse, {
  name: 'rmq-auth-abuse',
  fastify: '5.x',
  dependencies: ['rmq-context'],
})
