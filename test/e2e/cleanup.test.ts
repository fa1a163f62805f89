/**
 * Cleanup and expiry through the real `rmq` binary: messages published with
 * a TTL that ran out are never sent and are deleted by cleanup; `rmq cleanup`
 * prints counts and bytes (and --json), and --dry-run changes nothing.
 * runCleanup in-process: test/core/cleanup.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { runCleanup } from '../../src/core/cleanup.js'
import { loadConfig } from '../../src/core/config/load.js'
import { openOutbox } from '../../src/core/outbox.js'
import { syncOnce } from '../../src/core/sync.js'
import { allSeqs, HOUR, msgs, sent, setupOutbox, type Cleanups } from '../helpers/cleanup.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'
import { FakeBroker } from '../helpers/fake-broker.js'

const cleanups: Cleanups = []
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!()
})
const setup = (options?: Record<string, unknown>, dir?: string) => setupOutbox(cleanups, options, dir)

describe('expiry and the sync engine', () => {
  it('never sends a message whose TTL (from --ttl or message.defaultTtl) ran out before the sync', async () => {
    const broker = await new FakeBroker().start()
    cleanups.push(() => broker.stop())
    const tmp = makeTempDir('rmq-ttl-')
    cleanups.push(tmp.cleanup)
    const env = { RMQ_NODE_ID: 'gw-ttl', RMQ_BROKER_URL: broker.url, RMQ_TOKEN: 't' }
    const pub = (args: string[], extra: Record<string, string> = {}) =>
      runCli(['publish', ...args, '--json'], { cwd: tmp.dir, env: { ...env, ...extra } })
    const short = await pub(['a/short', 'gone', '--ttl', '300ms'])
    const byDefault = await pub(['a/default', 'gone too'], { RMQ_MESSAGE_DEFAULT_TTL: '300ms' })
    const long = await pub(['a/long', 'stays', '--ttl', '1h'])
    const never = await pub(['a/never', 'stays too'])
    for (const r of [short, byDefault, long, never]) expect(r.code, r.stderr).toBe(0)
    await new Promise((r) => setTimeout(r, 400))
    const { config } = await loadConfig({ cwd: tmp.dir, env, dotenv: false })
    const store = await openOutbox(config, tmp.dir)
    cleanups.push(() => store.close())
    const stored = await store.nextBatch({ limit: 10, maxBytes: 1e9, order: 'oldest', now: 0 })
    const expiresAt = Object.fromEntries(stored.map((m) => [m.topic, m.expiresAt]))
    expect(expiresAt['a/short']).toBeGreaterThan(0)
    expect(expiresAt['a/default']).toBeGreaterThan(0)
    expect(expiresAt['a/never']).toBeNull()
    const r = await syncOnce({ driver: store, config })
    expect(r.messages).toBe(2)
    expect([...broker.accepted.values()].map((m) => m.topic).sort()).toEqual(['a/long', 'a/never'])
    // The expired ones stay until cleanup deletes them, counted as expired.
    const c = await runCleanup(store, config)
    expect(c.expiredDeleted).toBe(2)
    expect((await store.stats(Date.now())).expiredTotal).toBe(2)
  })
})

describe('rmq cleanup (CLI)', () => {
  it('prints counts and bytes with --json, a summary otherwise, and changes nothing with --dry-run', async () => {
    const { config, store, dir } = await setup()
    const now = Date.now()
    await sent(store, 300, now - 2 * 24 * HOUR)
    await store.append(msgs(3, { expiresAt: now - 1 }))
    await store.append(msgs(4))
    await store.close()
    const env = { RMQ_NODE_ID: 'gw-clean' }
    const dry = await runCli(['cleanup', '--dry-run', '--json'], { cwd: dir, env })
    expect(dry.code, dry.stderr).toBe(0)
    expect(parseJson(dry.stdout)).toMatchObject({ dryRun: true, sentDeleted: 300, expiredDeleted: 3 })
    const human = await runCli(['cleanup', '--dry-run'], { cwd: dir, env })
    expect(human.stdout).toMatch(/dry run: would delete 300 sent \(retention 1d\) and 3 expired/)
    const real = await runCli(['cleanup', '--json'], { cwd: dir, env })
    expect(real.code, real.stderr).toBe(0)
    const r = parseJson(real.stdout)
    expect(r).toMatchObject({ status: 'ok', dryRun: false, sentDeleted: 300, expiredDeleted: 3, dropped: 0 })
    expect(r.bytesFreed).toBe(303 * (100 + 'plant/line1/temp'.length + 64))
    expect(r.remaining).toMatchObject({ messages: 4, pending: 4 })
    expect(typeof r.fileBytesAfter).toBe('number')
    const { pending } = await allSeqs(config, dir)
    expect(pending).toHaveLength(4)
    const again = await runCli(['cleanup'], { cwd: dir, env })
    expect(again.code).toBe(0)
    expect(again.stdout).toMatch(/^deleted 0 sent .* and 0 expired message\(s\), dropped 0 pending/)
  })
})
