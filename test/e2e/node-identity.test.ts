/**
 * Node identity cannot fork (docs/operations.md "Renaming a node"): an outbox
 * records the node it stores for; a sync under another nodeId is refused
 * (exit 78, nothing sent, nothing lost); `rmq outbox rename-node` changes it
 * under a new epoch, after which everything is delivered once.
 */
import { describe, expect, it } from 'vitest'
import { getMessages, startBrokerProcess } from '../helpers/broker.js'
import { makeTempDir, runCli } from '../helpers/cli.js'
import { cleanupAfterEach } from '../helpers/cleanups.js'

describe('node identity of an outbox', () => {
  const cleanup = cleanupAfterEach()

  it('publish as gw-a, sync as gw-b: exit 78 and nothing sent; after rename-node gw-b every message arrives once, as gw-b', async () => {
    const broker = await startBrokerProcess({ auth: 'none' })
    cleanup(() => broker.cleanup())
    const tmp = makeTempDir('rmq-identity-')
    cleanup(() => tmp.cleanup())
    const as = (node: string, args: string[]) =>
      runCli(args, { cwd: tmp.dir, env: { RMQ_NODE_ID: node, RMQ_BROKER_URL: broker.url } })

    for (let i = 1; i <= 3; i++) expect((await as('gw-a', ['publish', 'plant/x', `{"i":${i}}`])).code).toBe(0)
    const forked = await as('gw-b', ['sync'])
    expect(forked.code).toBe(78)
    expect(forked.stderr).toMatch(/this outbox stores messages for node gw-a, but nodeId is gw-b: 3 pending/)
    expect(forked.stderr).toMatch(/rmq outbox rename-node gw-b/)
    const drained = await as('gw-b', ['drain', '--timeout', '5s'])
    expect(drained.code).toBe(78)
    const read = async () =>
      (await getMessages(broker.url, { order: 'arrival', topic: '#' })).body as {
        messages: Array<{ node: string; seq: number; epoch: string }>
      }
    expect((await read()).messages).toEqual([])
    expect(JSON.parse((await as('gw-b', ['status', '--json'])).stdout).pending.messages).toBe(3)

    const renamed = await as('gw-b', ['outbox', 'rename-node', 'gw-b', '--json'])
    expect(renamed.code, renamed.stderr).toBe(0)
    const r = JSON.parse(renamed.stdout)
    expect(r).toMatchObject({ before: 'gw-a', after: 'gw-b', pending: 3, unchanged: false })
    expect(r.epoch).not.toBe(r.epochBefore)
    expect((await as('gw-b', ['sync'])).code).toBe(0)
    expect((await as('gw-b', ['sync'])).code).toBe(0)
    const got = (await read()).messages
    expect(got.map((m) => [m.node, m.seq])).toEqual([
      ['gw-b', 1],
      ['gw-b', 2],
      ['gw-b', 3],
    ])
    expect(new Set(got.map((m) => m.epoch))).toEqual(new Set([r.epoch]))
    // The old id is now the wrong one.
    expect((await as('gw-a', ['sync'])).code).toBe(78)
  })

  it('rename is refused after a failed sync attempt (a batch may be at the broker unacknowledged) unless --force', async () => {
    const tmp = makeTempDir('rmq-identity-')
    cleanup(() => tmp.cleanup())
    // Nothing listens on port 9 of 127.0.0.1: the sync fails and leaves a backoff.
    const env = (node: string) => ({ RMQ_NODE_ID: node, RMQ_BROKER_URL: 'http://127.0.0.1:9' })
    expect((await runCli(['publish', 'plant/x', '1'], { cwd: tmp.dir, env: env('gw-a') })).code).toBe(0)
    expect((await runCli(['sync'], { cwd: tmp.dir, env: env('gw-a') })).code).not.toBe(0)
    const refused = await runCli(['outbox', 'rename-node', 'gw-b'], { cwd: tmp.dir, env: env('gw-b') })
    expect(refused.code).toBe(78)
    expect(refused.stderr).toMatch(/the last sync attempt failed/)
    expect(refused.stderr).toMatch(/--force/)
    const forced = await runCli(['outbox', 'rename-node', 'gw-b', '--force'], {
      cwd: tmp.dir,
      env: env('gw-b'),
    })
    expect(forced.code, forced.stderr).toBe(0)
    expect(forced.stdout).toMatch(/now stores for gw-b \(was gw-a\)/)
  })
})
