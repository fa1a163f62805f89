/**
 * The `never-synced` alert rule end to end: a real broker process with a
 * short limit and evaluation interval delivers the alert to a webhook
 * receiver on 127.0.0.1, `rmq status --broker` shows it, and a real
 * `rmq sync` resolves it. The rule with an injectable clock:
 * test/broker/never-synced.test.ts.
 */
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import type { AlertEvent } from '../../src/broker/alerts.js'
import { startBrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'
import { startReceiver, until } from '../helpers/monitoring.js'

describe('never-synced end to end (real broker process, webhook on 127.0.0.1, real rmq sync)', () => {
  it('a node never connected fires never-synced to the webhook; the node that syncs gets it resolved', async () => {
    const receiver = await startReceiver()
    const broker = await startBrokerProcess({
      auth: 'token',
      env: {
        RMQ_BROKER_ALERTS_NEVER_SYNCED_FOR: '1s',
        RMQ_BROKER_ALERTS_INTERVAL: '200ms',
        RMQ_BROKER_ALERTS_WEBHOOKS: receiver.url,
      },
    })
    const edge = makeTempDir('rmq-never-synced-edge-')
    try {
      await broker.createToken('gw-never')
      const late = await broker.createToken('gw-late')
      const event = (e: AlertEvent['event'], node: string) =>
        receiver.got.find((g) => g.body.event === e && g.body.alert.node === node)
      const firedNever = await until(() => event('fired', 'gw-never'), 'never-synced for gw-never', 20_000)
      expect(firedNever.headers['x-rmq-event']).toBe('fired')
      expect(firedNever.body).toMatchObject({
        version: 1,
        event: 'fired',
        alert: {
          key: 'never-synced:gw-never',
          rule: 'never-synced',
          state: 'active',
          severity: 'warning',
          threshold: 1000,
          resolvedAt: null,
        },
      })
      expect(firedNever.body.alert.value).toBeGreaterThan(1000)
      expect(firedNever.body.alert.message).toMatch(/gw-never has had a token for \d+s and never synced/)
      await until(() => event('fired', 'gw-late'), 'never-synced for gw-late', 20_000)

      // `rmq status --broker` shows both as never-synced, with the alerts.
      const env = { RMQ_BROKER_URL: broker.url, RMQ_TOKEN: late }
      fs.writeFileSync(path.join(edge.dir, '.rmqrc.json'), JSON.stringify({ nodeId: 'gw-late' }))
      const rmq = (args: string[], extra: Record<string, string> = {}) =>
        runCli(args, { cwd: edge.dir, env: { ...env, ...extra } })
      // The fleet view needs a monitor (or admin) credential; the node's token syncs.
      const monitor = { RMQ_TOKEN: await broker.createToken('ops', { role: 'monitor' }) }
      const status = await rmq(['status', '--broker'], monitor)
      expect(status.code).toBe(0)
      expect(status.stdout).toMatch(
        /2 node\(s\): 0 ok, 0 behind, 0 holding-back, 0 stale, 0 never-seen, 2 never-synced;/,
      )
      expect(status.stdout).toMatch(/^gw-never\s+never-synced\s+never/m)
      expect(status.stdout).toMatch(/WARNING never-synced gw-never: gw-never has had a token/)

      // gw-late comes up: one real sync resolves its alert; gw-never's stays.
      expect((await rmq(['publish', 'plant/t', '{"i":1}'])).code).toBe(0)
      expect((await rmq(['sync'])).code).toBe(0)
      const resolved = await until(() => event('resolved', 'gw-late'), 'resolution for gw-late', 20_000)
      expect(resolved.body.alert).toMatchObject({ key: 'never-synced:gw-late', state: 'resolved' })
      expect(resolved.body.alert.resolvedAt).toBeGreaterThan(0)
      const fleet = parseJson((await rmq(['status', '--broker', '--json'], monitor)).stdout)
      expect(fleet.summary).toMatchObject({ ok: 1, 'never-synced': 1, total: 2 })
      expect(fleet.alerts.map((a: { key: string }) => a.key)).toEqual(['never-synced:gw-never'])
      expect(event('resolved', 'gw-never')).toBeUndefined()
      // Each event was delivered once.
      const keys = receiver.got.map((g) => `${g.body.event} ${g.body.alert.node}`)
      expect(keys.sort()).toEqual(['fired gw-late', 'fired gw-never', 'resolved gw-late'])
    } finally {
      await broker.cleanup()
      await receiver.close()
      edge.cleanup()
    }
  }, 60_000)
})
