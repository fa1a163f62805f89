/**
 * One Producer suite, run against both modes with only the configuration
 * changed (mode), against a real broker process on loopback.
 */
import path from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import {
  BrokerUnavailableError,
  StorageFullError,
  TimeoutError,
  UsageError,
  ValidationError,
  createProducer,
  type Producer,
  type SendReceipt,
} from '../../src/index.js'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, runCli } from '../helpers/cli.js'
import { brokerMessages, freePort, producerOptions, uniqueNode } from '../helpers/producer.js'

let broker: BrokerProcess
beforeAll(async () => {
  broker = await startBrokerProcess({ auth: 'none' })
})
afterAll(async () => {
  await broker?.cleanup()
})

/** What differs between the modes: only the expected status. */
const MODES = [
  { mode: 'edge', status: 'stored' },
  { mode: 'direct', status: 'sent' },
] as const

const RECEIPT_KEYS = ['id', 'seq', 'status', 'topic', 'ts']

describe.each(MODES)('Producer, mode=$mode', ({ mode, status }) => {
  let dir: string
  let cleanup: () => void
  const open: Producer[] = []
  beforeEach(() => {
    ;({ dir, cleanup } = makeTempDir('rmq-producer-'))
  })
  afterEach(async () => {
    for (const p of open.splice(0)) await p.close()
    cleanup()
  })
  const make = async (nodeId: string, brokerUrl = broker.url) => {
    const p = await createProducer(producerOptions(dir, { mode, nodeId, brokerUrl }))
    open.push(p)
    return p
  }
  /** Edge mode: deliver the outbox with the real `rmq sync` (direct mode has nothing to sync). */
  const syncWithCli = async (nodeId: string) => {
    const r = await runCli(['sync', '--force', '--json'], {
      cwd: dir,
      env: {
        RMQ_NODE_ID: nodeId,
        RMQ_BROKER_URL: broker.url,
        RMQ_STORAGE_PATH: path.join(dir, 'outbox.db'),
      },
    })
    expect(r.code, r.stderr).toBe(0)
    return JSON.parse(r.stdout)
  }

  it('send / sendMany give the same receipt shape and the status of the mode; the broker gets every message', async () => {
    const node = uniqueNode(mode)
    const p = await make(node)
    expect(p.mode).toBe(mode)
    expect(p.node).toBe(node)
    const a = await p.send('plant/line1/temp', '{"c":21.5}', {
      contentType: 'application/json',
      priority: 7,
      ttl: '10m',
      timestamp: '2025-11-26T10:00:00Z',
      headers: { unit: 'C' },
    })
    const many = await p.sendMany([
      { topic: 'plant/line1/temp', payload: 'b' },
      { topic: 'plant/line2/temp', payload: Buffer.from([0xff, 0x00, 0x01]) },
    ])
    const all: SendReceipt[] = [a, ...many]
    for (const r of all) {
      expect(Object.keys(r).sort()).toEqual([...RECEIPT_KEYS].sort())
      expect(r.status).toBe(status)
      expect(r.id).toBe(`${node}:${p.epoch}:${r.seq}`)
    }
    expect(all.map((r) => r.seq)).toEqual([1, 2, 3])
    expect(a).toMatchObject({ topic: 'plant/line1/temp', ts: Date.parse('2025-11-26T10:00:00Z') })

    if (mode === 'edge') {
      expect(await brokerMessages(broker.url, node)).toEqual([])
      expect((await syncWithCli(node)).messages).toBe(3)
    }
    const got = await brokerMessages(broker.url, node)
    expect(got.map((m) => m.id)).toEqual(all.map((r) => r.id))
    expect(got[0]).toMatchObject({
      topic: 'plant/line1/temp',
      payload: '{"c":21.5}',
      priority: 7,
      contentType: 'application/json',
      ts: Date.parse('2025-11-26T10:00:00Z'),
    })
    expect(Buffer.from(got[2].payload, got[2].enc === 'base64' ? 'base64' : 'utf8')).toEqual(
      Buffer.from([0xff, 0x00, 0x01]),
    )
  })

  it('a bad record rejects only its own call, with ValidationError (65)', async () => {
    const node = uniqueNode(mode)
    const p = await make(node)
    const results = await Promise.allSettled([
      p.send('ok/1', 'a'),
      p.send('bad/#', 'b'),
      p.send('ok/2', '{not json', { contentType: 'application/json' }),
      p.send('ok/3', 'c', { priority: 12 }),
      p.send('ok/4', 'd'),
    ])
    expect(results.map((r) => r.status)).toEqual([
      'fulfilled',
      'rejected',
      'rejected',
      'rejected',
      'fulfilled',
    ])
    for (const r of results.filter((x) => x.status === 'rejected')) {
      expect(r.reason).toBeInstanceOf(ValidationError)
      expect(r.reason.exitCode).toBe(65)
    }
    // A bad record in sendMany rejects the whole call and nothing of it is kept.
    await expect(
      p.sendMany([
        { topic: 'ok/5', payload: 'e' },
        { topic: '', payload: 'f' },
      ]),
    ).rejects.toThrow(/record 2 of 2: invalid topic/)
    await p.drain({ timeout: '10s' })
    expect((await brokerMessages(broker.url, node)).map((m) => m.topic)).toEqual(['ok/1', 'ok/4'])
  })

  it(`with the broker down: ${mode === 'edge' ? 'resolves stored, delivered by a later sync' : 'rejects with BrokerUnavailableError (69)'}`, async () => {
    const node = uniqueNode(mode)
    const p = await make(node, `http://127.0.0.1:${await freePort()}`)
    const sent = p.send('down/1', 'while the broker is down')
    if (mode === 'edge') {
      const r = await sent
      expect(r.status).toBe('stored')
      await p.close()
      const res = await syncWithCli(node)
      expect(res.messages).toBe(1)
      expect((await brokerMessages(broker.url, node)).map((m) => m.id)).toEqual([r.id])
    } else {
      const err = await sent.then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(BrokerUnavailableError)
      expect(err).toMatchObject({ exitCode: 69, code: 'BROKER_UNAVAILABLE' })
      expect((err as Error).message).toMatch(/after 4 attempt\(s\): connection refused/)
      expect(await brokerMessages(broker.url, node)).toEqual([])
    }
  })

  it('flush, drain, close and await using; a closed producer refuses sends', async () => {
    const node = uniqueNode(mode)
    let pending: Promise<SendReceipt>[] = []
    {
      await using p = await createProducer(
        producerOptions(dir, { mode, nodeId: node, brokerUrl: broker.url }),
      )
      let settled = 0
      pending = Array.from({ length: 20 }, (_, i) => p.send('flush/t', `m${i}`))
      for (const s of pending) void s.then(() => settled++)
      await p.flush()
      expect(settled).toBe(20)
      const d = await p.drain({ timeout: '10s' })
      expect(d.pending).toBe(0)
      expect(d.sent).toBe(mode === 'edge' ? 20 : 0)
      await p.close()
      await expect(p.send('flush/t', 'late')).rejects.toBeInstanceOf(UsageError)
    }
    expect(await brokerMessages(broker.url, node)).toHaveLength(20)
  })
})

describe('edge mode specifics', () => {
  let dir: string
  let cleanup: () => void
  beforeEach(() => {
    ;({ dir, cleanup } = makeTempDir('rmq-producer-edge-'))
  })
  afterEach(() => cleanup())

  it('forward=immediate: sent with the broker up, stored (in bounded time) with it down', async () => {
    const node = uniqueNode('imm')
    const up = await createProducer(
      producerOptions(dir, { mode: 'edge', forward: 'immediate', nodeId: node, brokerUrl: broker.url }),
    )
    try {
      const rs = await Promise.all(Array.from({ length: 10 }, (_, i) => up.send('imm/t', `m${i}`)))
      expect(rs.map((r) => r.status)).toEqual(Array(10).fill('sent'))
      expect((await brokerMessages(broker.url, node)).map((m) => m.id)).toEqual(rs.map((r) => r.id))
    } finally {
      await up.close()
    }
    const down = await createProducer(
      producerOptions(dir, {
        mode: 'edge',
        forward: 'immediate',
        nodeId: node,
        brokerUrl: `http://127.0.0.1:${await freePort()}`,
      }),
    )
    try {
      const started = Date.now()
      const r = await down.send('imm/t', 'down')
      expect(r.status).toBe('stored')
      expect(r.reason).toMatch(/connection refused/)
      expect(Date.now() - started).toBeLessThan(5_000)
      // The failure set a backoff: the next send does not wait for the network again.
      const r2 = await down.send('imm/t', 'down again')
      expect(r2).toMatchObject({ status: 'stored', reason: expect.stringMatching(/backing off/) })
    } finally {
      await down.close()
    }
  })

  it('forward=immediate does not fight a concurrent sync: stored while another process holds the lease', async () => {
    const node = uniqueNode('lease')
    const p = await createProducer(
      producerOptions(dir, { mode: 'edge', forward: 'immediate', nodeId: node, brokerUrl: broker.url }),
    )
    const { createSqliteStorage } = await import('../../src/plugins/storage/sqlite/index.js')
    const other = createSqliteStorage({
      path: path.join(dir, 'outbox.db'),
      maxBytes: 1 << 30,
      maxMessages: 0,
      overflow: 'reject',
      durability: 'full',
    })
    try {
      expect(await other.acquireLease('sync', 'another-host:1:abcd', 60_000, Date.now())).toBe(true)
      await other.setState('sync.leaseOwner', 'another-host:1:abcd')
      const r = await p.send('lease/t', 'x')
      expect(r).toMatchObject({ status: 'stored', reason: expect.stringMatching(/another sync/) })
      expect(await brokerMessages(broker.url, node)).toEqual([])
      await other.releaseLease('sync', 'another-host:1:abcd')
      const r2 = await p.send('lease/t', 'y')
      expect(r2.status).toBe('sent')
      expect((await brokerMessages(broker.url, node)).map((m) => m.id)).toEqual([r.id, r2.id])
    } finally {
      await p.close()
      await other.close()
    }
  })

  it('group commit: 64 concurrent callers share transactions; each gets its own receipt', async () => {
    const { countingDriver } = await import('../helpers/producer.js')
    const { createSqliteStorage } = await import('../../src/plugins/storage/sqlite/index.js')
    const base = createSqliteStorage({
      path: path.join(dir, 'group.db'),
      maxBytes: 1 << 30,
      maxMessages: 0,
      overflow: 'reject',
      durability: 'full',
    })
    const { driver, appends } = countingDriver(base)
    const p = await createProducer({
      ...producerOptions(dir, { mode: 'edge', nodeId: 'gw-group', brokerUrl: broker.url }),
      driver,
    })
    try {
      const callers = Array.from({ length: 64 }, async (_, c) => {
        const mine: SendReceipt[] = []
        for (let i = 0; i < 10; i++) mine.push(await p.send(`group/${c}`, `${c}:${i}`))
        return mine
      })
      const receipts = (await Promise.all(callers)).flat()
      expect(receipts).toHaveLength(640)
      expect(new Set(receipts.map((r) => r.seq)).size).toBe(640)
      expect(appends()).toBeLessThanOrEqual(640 / 16)
      expect((await base.stats(Date.now())).pending).toBe(640)
    } finally {
      await p.close()
      await base.close()
    }
  })

  it('a full outbox fails only the sends that do not fit, each with its own StorageFullError', async () => {
    const p = await createProducer(
      producerOptions(dir, {
        mode: 'edge',
        nodeId: 'gw-full',
        brokerUrl: broker.url,
        storage: { path: path.join(dir, 'full.db'), maxMessages: 3, overflow: 'reject' },
      }),
    )
    try {
      const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => p.send('full/t', `m${i}`)))
      expect(results.map((r) => r.status)).toEqual([
        'fulfilled',
        'fulfilled',
        'fulfilled',
        'rejected',
        'rejected',
      ])
      for (const r of results.slice(3))
        expect((r as PromiseRejectedResult).reason).toBeInstanceOf(StorageFullError)
    } finally {
      await p.close()
    }
  })

  it('is configured like the CLI: explicit options > env > config file, and RMQ_MODE switches the mode', async () => {
    const fs = await import('node:fs')
    fs.writeFileSync(path.join(dir, '.rmqrc.json'), JSON.stringify({ nodeId: 'from-file', mode: 'direct' }))
    const fromEnv = await createProducer({ cwd: dir, env: { RMQ_MODE: 'edge', RMQ_NODE_ID: 'from-env' } })
    expect([fromEnv.mode, fromEnv.node]).toEqual(['edge', 'from-env'])
    await fromEnv.close()
    const fromFile = await createProducer({ cwd: dir, env: {} })
    expect([fromFile.mode, fromFile.node]).toEqual(['direct', 'from-file'])
    await fromFile.close()
    const explicit = await createProducer({
      cwd: dir,
      env: { RMQ_NODE_ID: 'from-env' },
      nodeId: 'mine',
      mode: 'edge',
    })
    expect([explicit.mode, explicit.node]).toEqual(['edge', 'mine'])
    await explicit.close()
    await expect(createProducer({ cwd: dir, env: {}, sync: { timeout: 'soon' } })).rejects.toThrow(
      /invalid value "soon" for sync.timeout/,
    )
    await expect(createProducer({ cwd: dir, env: {}, nope: 1 } as never)).rejects.toThrow(/nope/)
  })
})

describe('direct mode specifics', () => {
  let dir: string
  let cleanup: () => void
  beforeEach(() => {
    ;({ dir, cleanup } = makeTempDir('rmq-producer-direct-'))
  })
  afterEach(() => cleanup())
  const fast = { timeout: '500ms', backoff: { initial: '20ms', max: '100ms' } }

  it('a lost acknowledgement is retried with the same ids and the broker keeps the message once', async () => {
    const { FaultProxy } = await import('../helpers/fault-proxy.js')
    // The request reaches the broker (and is committed), the answer is held back.
    const proxy = await new FaultProxy(
      { host: '127.0.0.1', port: broker.port },
      { kind: 'stall', afterBytes: Infinity },
    ).start()
    const watch = setInterval(() => {
      if (proxy.stats.stalls > 0) proxy.setMode({ kind: 'pass' })
    }, 5)
    const node = uniqueNode('dedup')
    const p = await createProducer(
      producerOptions(dir, { mode: 'direct', nodeId: node, brokerUrl: proxy.url, sync: fast }),
    )
    try {
      const r = await p.send('dedup/t', 'exactly once')
      expect(r.status).toBe('sent')
      expect(proxy.stats.stalls).toBe(1)
      expect(proxy.stats.connections).toBeGreaterThanOrEqual(2)
      expect((await brokerMessages(broker.url, node)).map((m) => m.id)).toEqual([r.id])
    } finally {
      clearInterval(watch)
      await p.close()
      await proxy.stop()
    }
  })

  it('a broker that never answers: TimeoutError (69) after the bounded retries', async () => {
    const { FaultProxy } = await import('../helpers/fault-proxy.js')
    const proxy = await new FaultProxy(
      { host: '127.0.0.1', port: broker.port },
      { kind: 'blackhole' },
    ).start()
    const p = await createProducer({
      ...producerOptions(dir, { mode: 'direct', nodeId: uniqueNode('bh'), brokerUrl: proxy.url, sync: fast }),
      retries: 1,
    })
    try {
      const err = await p.send('bh/t', 'x').then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(TimeoutError)
      expect(err).toMatchObject({ exitCode: 69, code: 'TIMEOUT', details: { attempts: 2 } })
    } finally {
      await p.close()
      await proxy.stop()
    }
  })
})
