/**
 * Abuse of the auth path on a real broker process (docs/security.md "Limits
 * on the auth path"): 30 s of bad-token requests from one address
 * (127.0.0.2, which reaches a broker on 127.0.0.1 over loopback) leave a
 * bounded log, are answered 429 after the burst, and a valid node's
 * `rmq sync` from 127.0.0.1 in the middle still goes through at once.
 */
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { startBrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})

const ATTACK_MS = 30_000
/** Bounds of the loop whatever the machine's speed. */
const MAX_REQUESTS = 400_000
const CONCURRENCY = 16

/** Bad-token GETs from `localAddress` for `ms` (or MAX_REQUESTS); the count of each status. */
async function attack(url: string, localAddress: string, ms: number) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY, localAddress })
  const target = new URL('/v1/heads', url)
  const statuses = new Map<number, number>()
  let sent = 0
  let first429At = -1
  let retryAfter: string | undefined
  const end = Date.now() + ms
  const one = () =>
    new Promise<void>((resolve) => {
      const req = http.get(
        target,
        { agent, headers: { authorization: `Bearer rmq_guess_${sent}` } },
        (res) => {
          const n = res.statusCode ?? 0
          statuses.set(n, (statuses.get(n) ?? 0) + 1)
          if (n === 429 && first429At < 0) {
            first429At = statuses.get(401) ?? 0
            retryAfter = res.headers['retry-after'] as string | undefined
          }
          res.resume()
          res.on('end', resolve)
          res.on('error', () => resolve())
        },
      )
      req.on('error', () => {
        statuses.set(-1, (statuses.get(-1) ?? 0) + 1)
        resolve()
      })
    })
  const worker = async () => {
    while (Date.now() < end && sent < MAX_REQUESTS) {
      sent++
      await one()
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  agent.destroy()
  return { statuses, sent, first429At, retryAfter }
}

describe('auth path under abuse (real broker)', () => {
  it('30 s of bad tokens from one address: a bounded log, 429s after the burst, a valid sync in the middle at once', async () => {
    const b = await startBrokerProcess({ auth: 'token' })
    cleanups.push(() => b.cleanup())
    // The broker's log (stderr) also goes to a file, as an operator would keep it.
    const logFile = path.join(b.dataDir, 'broker.log')
    const logStream = fs.createWriteStream(logFile)
    b.child.stderr!.pipe(logStream)
    const token = await b.createToken('gw-ok')

    const edgeDir = makeTempDir('rmq-auth-abuse-edge-')
    cleanups.push(edgeDir.cleanup)
    const env = { RMQ_NODE_ID: 'gw-ok', RMQ_BROKER_URL: b.url, RMQ_TOKEN: token, RMQ_SYNC_TIMEOUT: '10s' }
    const lines = Array.from({ length: 200 }, (_, i) => JSON.stringify({ i })).join('\n') + '\n'
    const pub = await runCli(['publish', 'plant/line1/temp', '--lines', '-f', '-'], {
      cwd: edgeDir.dir,
      env,
      input: lines,
    })
    expect(pub.code, pub.stderr).toBe(0)

    const started = Date.now()
    const flood = attack(b.url, '127.0.0.2', ATTACK_MS)
    // In the middle of it, the valid node syncs from 127.0.0.1.
    await new Promise((r) => setTimeout(r, ATTACK_MS / 2))
    const sync = await runCli(['sync', '--json'], { cwd: edgeDir.dir, env, timeoutMs: 60_000 })
    const syncEndedAt = Date.now() - started
    const result = await flood
    const elapsed = Date.now() - started

    expect(sync.code, sync.stderr).toBe(0)
    const summary = parseJson(sync.stdout)
    expect(summary).toMatchObject({ status: 'ok', messages: 200, pending: 0 })
    // The sync's own work (not the process start-up) took under a second.
    expect(summary.durationMs).toBeLessThan(1000)
    expect(syncEndedAt).toBeLessThan(ATTACK_MS)

    const count = (s: number) => result.statuses.get(s) ?? 0
    // The burst (broker.limits.authFailures 20), then about authFailureRate (2/s) more, and 429 for the rest.
    // The first 429 comes after the burst's 20 failures; on other sockets up to CONCURRENCY - 1 of those
    // 401s may still be on their way to this client when it reads that 429.
    expect(count(401)).toBeGreaterThanOrEqual(20)
    expect(result.first429At).toBeGreaterThanOrEqual(20 - (CONCURRENCY - 1))
    expect(result.first429At).toBeLessThanOrEqual(20 + CONCURRENCY)
    expect(Number(result.retryAfter)).toBeGreaterThanOrEqual(1)
    expect(count(401)).toBeLessThanOrEqual(20 + Math.ceil((elapsed / 1000) * 2) + CONCURRENCY)
    expect(count(429)).toBeGreaterThan(10 * count(401))
    expect(count(401) + count(429)).toBe(result.sent)

    // Stop the broker: the last summary is written on close.
    await b.stop()
    await new Promise<void>((resolve) => logStream.end(resolve))
    const log = fs.readFileSync(logFile, 'utf8').split('\n').filter(Boolean)
    expect(log.length).toBeLessThan(300)
    const summaries = log
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l))
      .filter((l) => l.address === '127.0.0.2')
    expect(summaries.length).toBeGreaterThanOrEqual(1)
    expect(summaries.length).toBeLessThanOrEqual(2)
    const sum = (k: string) => summaries.reduce((n, l) => n + l[k], 0)
    expect(sum('failures')).toBe(count(401))
    expect(sum('limited')).toBe(count(429))
    // Nothing from the valid node's address was counted.
    expect(log.some((l) => l.includes('"address":"127.0.0.1"'))).toBe(false)
    console.log(
      `auth abuse: ${result.sent} requests in ${elapsed} ms: ${count(401)} x 401, ${count(429)} x 429; ` +
        `${log.length} log lines; sync durationMs ${summary.durationMs}`,
    )
  }, 120_000)
})
