/**
 * `rmq messages export` / `import` on real files (docs/operations.md "Moving
 * a backlog off a dying device"): node A's pending messages exported to
 * NDJSON, imported into node B, B synced to a real broker: the consumer sees
 * every message once with A's topics, timestamps, payloads (text and binary),
 * priorities, content types, headers and expiry. Bad lines exit 65 naming the
 * line: from a file nothing is stored, from stdin what came before is stored
 * and said.
 */
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { createProducer } from '../../src/index.js'
import { allMessages, startBrokerProcess } from '../helpers/broker.js'
import { makeTempDir, runCli } from '../helpers/cli.js'
import { cleanupAfterEach } from '../helpers/cleanups.js'

const T0 = Date.parse('2026-11-01T08:00:00Z')

describe('rmq messages export / import', () => {
  const cleanup = cleanupAfterEach()

  it("export A's backlog, import into B, sync B: the consumer sees A's topics, ts and payloads, once", async () => {
    const broker = await startBrokerProcess({ auth: 'none' })
    cleanup(() => broker.cleanup())
    const a = makeTempDir('rmq-export-a-')
    const b = makeTempDir('rmq-export-b-')
    cleanup(a.cleanup, b.cleanup)
    const on = (dir: string, node: string) => (args: string[], input?: string) =>
      runCli(args, {
        cwd: dir,
        env: { RMQ_NODE_ID: node, RMQ_BROKER_URL: broker.url },
        input,
        timeoutMs: 90_000,
      })
    const rmqA = on(a.dir, 'gw-a')
    const rmqB = on(b.dir, 'gw-b')

    // A: every field an export carries, through the library (headers have no CLI flag) ...
    const producer = await createProducer({
      cwd: a.dir,
      env: {},
      dotenv: false,
      nodeId: 'gw-a',
      brokerUrl: broker.url,
    })
    const binary = Buffer.from([0, 1, 2, 0xff, 0xfe, 10, 13])
    await producer.sendMany([
      {
        topic: 'plant/a/temp',
        payload: '{"v":1}',
        timestamp: T0,
        contentType: 'application/json',
        priority: 7,
      },
      { topic: 'plant/b/raw', payload: binary, timestamp: T0 + 1000, headers: { unit: 'C', line: 'two' } },
      { topic: 'alarms/door', payload: 'open', timestamp: T0 + 2000, expiresAt: T0 + 400 * 86_400_000 },
      { topic: 'plant/a/temp', payload: 'sent before the move', timestamp: T0 + 3000 },
    ])
    await producer.close()
    // ... delivered by A itself (one batch): an export of pending messages leaves them out.
    expect((await rmqA(['sync', '--max-batches', '1', '--json'])).code).toBe(0)
    // ... and a backlog of 2,500 lines (more than one import transaction).
    const lines = Array.from({ length: 2500 }, (_, i) => `{"n":${i}}`)
    const bulk = await rmqA(
      ['publish', 'plant/bulk', '--lines', '-f', '-', '--timestamp', String(T0 + 10_000)],
      lines.join('\n') + '\n',
    )
    expect(bulk.code, bulk.stderr).toBe(0)
    const heldByA = (await allMessages(broker.url)).filter((m) => m.node === 'gw-a')
    expect(heldByA.length).toBe(4) // the first sync sent the four library messages
    // Pending again: a binary payload with headers and a low priority, a JSON one with an expiry.
    const producer2 = await createProducer({
      cwd: a.dir,
      env: {},
      dotenv: false,
      nodeId: 'gw-a',
      brokerUrl: broker.url,
    })
    await producer2.sendMany([
      { topic: 'plant/b/raw', payload: binary, timestamp: T0 + 20_000, headers: { unit: 'C' }, priority: 2 },
      {
        topic: 'plant/a/temp',
        payload: '{"v":2}',
        timestamp: T0 + 21_000,
        contentType: 'application/json',
        expiresAt: T0 + 400 * 86_400_000,
      },
    ])
    await producer2.close()

    const listA = await rmqA([
      'messages',
      '--status',
      'pending',
      '--order',
      'asc',
      '--limit',
      '100000',
      '--json',
    ])
    const pendingA = listA.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(pendingA.length).toBe(2502)

    const file = path.join(a.dir, 'backlog.ndjson')
    const exported = await rmqA(['messages', 'export', '--status', 'pending', file, '--json'])
    expect(exported.code, exported.stderr).toBe(0)
    expect(JSON.parse(exported.stdout)).toMatchObject({ exported: 2502, firstSeq: 5, lastSeq: 2506 })
    expect(fs.statSync(file).mode & 0o777).toBe(0o600)
    expect(fs.existsSync(file + '.partial')).toBe(false)
    const records = fs
      .readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(records.map((r) => r.seq)).toEqual(pendingA.map((m) => m.seq))
    const raw = records.find((r) => r.topic === 'plant/b/raw')
    expect(raw).toMatchObject({
      encoding: 'base64',
      payload: binary.toString('base64'),
      headers: { unit: 'C' },
    })
    expect(records.every((r) => r.status === 'pending')).toBe(true)
    // The same filters as `rmq messages`.
    const filtered = await rmqA([
      'messages',
      'export',
      '--topic',
      'plant/a/#',
      '--until',
      String(T0 + 10_000),
      '-',
    ])
    expect(filtered.code).toBe(0)
    expect(
      filtered.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).seq),
    ).toEqual([1, 4])
    expect(filtered.stderr).toMatch(/exported 2 message\(s\) \(seqs 1\.\.4\) to stdout/)
    expect((await rmqA(['messages', 'export', '-', '--json'])).code).toBe(2)

    // B imports the file and syncs it.
    const imported = await rmqB(['messages', 'import', file, '--json'])
    expect(imported.code, imported.stderr).toBe(0)
    expect(JSON.parse(imported.stdout)).toMatchObject({
      lines: 2502,
      imported: 2502,
      skipped: 0,
      firstSeq: 1,
      lastSeq: 2502,
      status: 'stored',
    })
    expect((await rmqB(['drain', '--timeout', '60s'])).code).toBe(0)
    const atBroker = (await allMessages(broker.url)).filter((m) => m.node === 'gw-b')
    expect(atBroker.map((m) => m.seq).sort((x, y) => x - y)).toEqual(
      Array.from({ length: 2502 }, (_, i) => i + 1),
    )
    const bySeqB = new Map(atBroker.map((m) => [m.seq, m]))
    records.forEach((r, i) => {
      const m = bySeqB.get(i + 1)!
      expect({
        topic: m.topic,
        ts: m.ts,
        payload: m.payload,
        enc: m.enc,
        priority: m.priority,
        contentType: m.contentType,
        headers: m.headers,
        expiresAt: m.expiresAt,
      }).toEqual({
        topic: r.topic,
        ts: r.ts,
        payload: r.payload,
        enc: r.encoding === 'base64' ? 'base64' : 'utf8',
        priority: r.priority,
        contentType: r.contentType,
        headers: r.headers,
        expiresAt: r.expiresAt,
      })
    })
    expect(fs.readFileSync(file, 'utf8').split('\n').length).toBe(2503)
    // A FILE that cannot be written: 78 naming it, no half export left anywhere.
    const nowhere = path.join(a.dir, 'missing-dir', 'out.ndjson')
    const refused = await rmqA(['messages', 'export', nowhere])
    expect(refused.code, refused.stderr).toBe(78)
    expect(refused.stderr).toContain(`cannot write ${nowhere}.partial`)
    expect(fs.existsSync(path.dirname(nowhere))).toBe(false)
  }, 240_000)

  it('a bad line: exit 65 naming it; from a file nothing is stored, from stdin what came before is stored and said', async () => {
    const tmp = makeTempDir('rmq-import-bad-')
    cleanup(tmp.cleanup)
    const rmq = (args: string[], input?: string) =>
      runCli(args, { cwd: tmp.dir, env: { RMQ_NODE_ID: 'gw-i' }, input, timeoutMs: 60_000 })
    const good = (i: number) =>
      JSON.stringify({ topic: 'plant/x', payload: `p${i}`, ts: T0 + i, status: 'pending' })
    const text = [
      ...Array.from({ length: 1500 }, (_, i) => good(i)),
      '{"topic":"plant/x","payload":3}',
      good(9),
    ]
    const file = path.join(tmp.dir, 'bad.ndjson')
    fs.writeFileSync(file, text.join('\n') + '\n')

    const fromFile = await rmq(['messages', 'import', file])
    expect(fromFile.code).toBe(65)
    expect(fromFile.stderr).toMatch(/rmq: line 1501: "payload" must be a string, got 3; nothing was imported/)
    expect(fromFile.stderr).toMatch(/fix: /)
    const none = await rmq(['messages', '--json'])
    expect(none.stdout.trim()).toBe('')

    const fromStdin = await rmq(['messages', 'import', '-'], text.join('\n') + '\n')
    expect(fromStdin.code).toBe(65)
    expect(fromStdin.stderr).toMatch(
      /rmq: line 1501: "payload" must be a string, got 3; the 1500 message\(s\) of lines 1-1500 were imported \(seqs 1\.\.1500\), nothing from line 1501 on/,
    )
    const stored = await rmq(['messages', '--status', 'all', '--limit', '100000', '--order', 'asc', '--json'])
    const rows = stored.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(rows.map((r) => r.payload)).toEqual(Array.from({ length: 1500 }, (_, i) => `p${i}`))
    expect(rows.map((r) => r.ts)).toEqual(Array.from({ length: 1500 }, (_, i) => T0 + i))

    // Not JSON, and a record `rmq publish` would refuse (a wildcard topic): the line and the reason.
    fs.writeFileSync(file, `${good(1)}\nnot json\n`)
    const notJson = await rmq(['messages', 'import', file])
    expect(notJson.code).toBe(65)
    expect(notJson.stderr).toMatch(/rmq: line 2: not JSON/)
    fs.writeFileSync(file, `${good(1)}\n${JSON.stringify({ topic: 'plant/#', payload: 'x', ts: T0 })}\n`)
    const wildcard = await rmq(['messages', 'import', file, '--json'])
    expect(wildcard.code).toBe(65)
    expect(JSON.parse(wildcard.stdout).error).toMatchObject({
      code: 'INVALID_INPUT',
      exitCode: 65,
      details: { line: 2, field: 'topic' },
    })
    expect(JSON.parse(wildcard.stdout).error.message).toMatch(/^line 2: invalid topic "plant\/#"/)
    const missing = await rmq(['messages', 'import', path.join(tmp.dir, 'nope.ndjson')])
    expect(missing.code).toBe(65)
    expect(missing.stderr).toMatch(/rmq: cannot read .*nope\.ndjson/)
  }, 120_000)
})
