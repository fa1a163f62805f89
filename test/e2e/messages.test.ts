/**
 * The operator's outbox: `rmq messages` (list, filter, NDJSON), `rmq messages
 * show`, and the `outbox` SQL view, on real files with a real sync to a real
 * broker; a listing while a large `publish --lines` runs does not fail it.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { BIN, cleanEnv, makeTempDir, runCli } from '../helpers/cli.js'

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof import('better-sqlite3')

describe('rmq messages and the outbox view', () => {
  let broker: BrokerProcess
  let tmp: ReturnType<typeof makeTempDir>
  let env: Record<string, string>
  const rmq = (args: string[]) => runCli(args, { cwd: tmp.dir, env })
  const ndjson = (text: string) =>
    text
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l))

  beforeAll(async () => {
    broker = await startBrokerProcess({ auth: 'token' })
    tmp = makeTempDir('rmq-messages-')
    env = { RMQ_NODE_ID: 'gw-msg', RMQ_BROKER_URL: broker.url, RMQ_TOKEN: await broker.createToken('gw-msg') }
    // seq 1..2 sent by a real sync, 3 pending, 4 expired (TTL 1s, not yet cleaned up), 5 binary pending.
    for (const [topic, payload] of [
      ['plant/a/temp', '{"v":1}'],
      ['plant/b/temp', '{"v":2}'],
    ])
      expect((await rmq(['publish', topic, payload])).code).toBe(0)
    expect((await rmq(['sync'])).code).toBe(0)
    expect((await rmq(['publish', 'plant/a/temp', '{"v":3}'])).code).toBe(0)
    expect((await rmq(['publish', 'alarms/door', 'open', '--ttl', '1s', '--priority', '7'])).code).toBe(0)
    expect(
      (
        await runCli(['publish', 'plant/bin', '-f', '-'], {
          cwd: tmp.dir,
          env,
          input: Buffer.from([0, 1, 2, 0xff]),
        })
      ).code,
    ).toBe(0)
    await new Promise((r) => setTimeout(r, 1200))
  })
  afterAll(async () => {
    await broker?.cleanup()
    tmp?.cleanup()
  })

  it('lists every message newest first with its status; filters by status and topic', async () => {
    const all = await rmq(['messages', '--json'])
    expect(all.code, all.stderr).toBe(0)
    expect(ndjson(all.stdout).map((m) => [m.seq, m.status, m.topic])).toEqual([
      [5, 'pending', 'plant/bin'],
      [4, 'expired', 'alarms/door'],
      [3, 'pending', 'plant/a/temp'],
      [2, 'sent', 'plant/b/temp'],
      [1, 'sent', 'plant/a/temp'],
    ])
    const sent = ndjson((await rmq(['messages', '--status', 'sent', '--json'])).stdout)
    expect(sent.map((m) => m.seq)).toEqual([2, 1])
    expect(sent[0].sentAt).toBeGreaterThan(0)
    const pendingA = ndjson(
      (await rmq(['messages', '--status', 'pending', '--topic', 'plant/+/temp', '--order', 'asc', '--json']))
        .stdout,
    )
    expect(pendingA.map((m) => [m.seq, m.payload])).toEqual([[3, '{"v":3}']])
    const limited = ndjson((await rmq(['messages', '--limit', '2', '--order', 'asc', '--json'])).stdout)
    expect(limited.map((m) => m.seq)).toEqual([1, 2])
    const human = await rmq(['messages'])
    expect(human.stdout).toMatch(/^seq\s+status\s+ts\s+topic\s+prio\s+size\s+payload$/m)
    expect(human.stdout).toMatch(/^5\s+pending\s+\S+Z\s+plant\/bin\s+4\s+\d+\s+000102ff\s*$/m)
  })

  it('show: status, priority and the payload as text, or hex when binary; a seq not stored is exit 65', async () => {
    const door = await rmq(['messages', 'show', '4'])
    expect(door.code, door.stderr).toBe(0)
    expect(door.stdout).toMatch(/^status\s+expired$/m)
    expect(door.stdout).toMatch(/^priority\s+7$/m)
    expect(door.stdout).toMatch(/^payload \(utf8\)\s+open$/m)
    const bin = JSON.parse((await rmq(['messages', 'show', '5', '--json'])).stdout)
    expect(bin).toMatchObject({ seq: 5, enc: 'hex', payload: '000102ff', status: 'pending' })
    const missing = await rmq(['messages', 'show', '99'])
    expect(missing.code).toBe(65)
    expect(missing.stderr).toMatch(/no message with seq 99 in the outbox/)
    const bad = await rmq(['messages', '--topic', 'a/#/b'])
    expect(bad.code).toBe(2)
  })

  it('the outbox view answers the operator from the sqlite3 shell', () => {
    const db = new Database(path.join(tmp.dir, '.rmq/outbox.db'), { readonly: true })
    try {
      const rows = db
        .prepare('SELECT seq, topic, status, ts_iso, sent_at_iso FROM outbox ORDER BY seq DESC LIMIT 10')
        .all() as Array<{ seq: number; status: string; ts_iso: string; sent_at_iso: string | null }>
      expect(rows.map((r) => [r.seq, r.status])).toEqual([
        [5, 'pending'],
        [4, 'expired'],
        [3, 'pending'],
        [2, 'sent'],
        [1, 'sent'],
      ])
      expect(rows[0].ts_iso).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
      expect(rows[3].sent_at_iso).toMatch(/Z$/)
    } finally {
      db.close()
    }
  })

  it('a listing while `publish --lines` stores 100,000 messages in another process: both succeed', async () => {
    const lines = Array.from({ length: 100_000 }, (_, i) => `{"i":${i}}`).join('\n') + '\n'
    const file = path.join(tmp.dir, 'lines.tsv')
    fs.writeFileSync(file, lines)
    const child = spawn(process.execPath, [BIN, 'publish', 'plant/load', '--lines', '-f', file], {
      cwd: tmp.dir,
      env: cleanEnv(env),
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    const done = new Promise<number | null>((r) => child.on('exit', r))
    let listings = 0
    let running = true
    void done.then(() => (running = false))
    for (let i = 0; i < 30 && (running || listings === 0); i++) {
      const r = await rmq([
        'messages',
        '--status',
        'pending',
        '--topic',
        'plant/load',
        '--limit',
        '5',
        '--json',
      ])
      expect(r.code, r.stderr).toBe(0)
      listings++
    }
    expect(await done, stderr).toBe(0)
    expect(listings).toBeGreaterThan(0)
    const last = ndjson((await rmq(['messages', '--status', 'pending', '--limit', '1', '--json'])).stdout)
    expect(last[0].seq).toBe(5 + 100_000)
  }, 120_000)
})
