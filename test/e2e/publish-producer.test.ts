/**
 * `rmq publish` is built on the Producer: the real binary reports `sent` or
 * `stored` by the library's rules, and the edge + deferred fast path still
 * loads no network code.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'
import { brokerMessages, freePort, uniqueNode } from '../helpers/producer.js'

let broker: BrokerProcess
beforeAll(async () => {
  broker = await startBrokerProcess({ auth: 'token' })
})
afterAll(async () => {
  await broker?.cleanup()
})

describe('rmq publish on the Producer (real binary, real broker)', () => {
  let dir: string
  let cleanup: () => void
  beforeEach(() => {
    ;({ dir, cleanup } = makeTempDir('rmq-publish-producer-'))
  })
  afterEach(() => cleanup())

  async function nodeEnv(extra: Record<string, string>) {
    const node = uniqueNode('cli')
    return {
      node,
      env: {
        RMQ_NODE_ID: node,
        RMQ_BROKER_URL: broker.url,
        RMQ_TOKEN: await broker.createToken(node),
        RMQ_SYNC_TIMEOUT: '3s',
        RMQ_SYNC_BACKOFF_INITIAL: '20ms',
        ...extra,
      },
    }
  }
  const publish = (args: string[], env: Record<string, string>, input?: string) =>
    runCli(['publish', ...args], { cwd: dir, env, input })

  it('mode=direct: prints `sent <id>` after the broker acknowledged it; --json and --lines too', async () => {
    const { node, env } = await nodeEnv({ RMQ_MODE: 'direct' })
    const r = await publish(['cli/direct', '{"v":1}', '--content-type', 'application/json'], env)
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    const id = /^sent (\S+)$/.exec(r.stdout.trim())![1]
    expect(id).toMatch(new RegExp(`^${node}:[0-9a-f-]{36}:1$`))
    const j = await publish(['cli/direct', 'two', '--json', '--priority', '8'], env)
    expect(j.code, j.stderr).toBe(0)
    expect(parseJson(j.stdout)).toMatchObject({ status: 'sent', topic: 'cli/direct', seq: 1, dropped: 0 })
    const lines = await publish(['cli/lines', '--lines'], env, 'a\nb\n\nc\n')
    expect(lines.code, lines.stderr).toBe(0)
    expect(lines.stdout).toMatch(/^sent 3 messages from 4 lines, 1 blank skipped/)
    const got = await brokerMessages(broker.url, node, await broker.adminToken())
    expect(got.map((m) => m.payload)).toEqual(['{"v":1}', 'two', 'a', 'b', 'c'])
    expect(got[0].id).toBe(id)
    expect(got[1].priority).toBe(8)
    // Nothing is stored locally in direct mode.
    expect(fs.existsSync(path.join(dir, '.rmq/outbox.db'))).toBe(false)
  })

  it('mode=direct with the broker down: exit 69 and a fix', async () => {
    const { env } = await nodeEnv({
      RMQ_MODE: 'direct',
      RMQ_BROKER_URL: `http://127.0.0.1:${await freePort()}`,
    })
    const r = await publish(['cli/down', 'x', '--json'], env)
    expect(r.code).toBe(69)
    expect(parseJson(r.stdout).error).toMatchObject({ code: 'BROKER_UNAVAILABLE', exitCode: 69 })
    expect(r.stderr).toMatch(/connection refused[\s\S]*fix: /)
  })

  it('forward=immediate: `sent` with the broker up, `stored` (exit 0, a note on stderr) with it down', async () => {
    const { node, env } = await nodeEnv({ RMQ_FORWARD: 'immediate' })
    const up = await publish(['cli/imm', 'up'], env)
    expect(up.code, up.stderr).toBe(0)
    const upId = /^sent (\S+)$/.exec(up.stdout.trim())![1]
    expect((await brokerMessages(broker.url, node, await broker.adminToken())).map((m) => m.id)).toEqual([
      upId,
    ])

    const down = await publish(['cli/imm', 'down', '--json'], {
      ...env,
      RMQ_BROKER_URL: `http://127.0.0.1:${await freePort()}`,
    })
    expect(down.code, down.stderr).toBe(0)
    expect(parseJson(down.stdout)).toMatchObject({
      status: 'stored',
      reason: expect.stringMatching(/refused/),
    })
    expect(down.stderr).toMatch(/stored, not forwarded yet: .*`rmq sync` delivers it later/)
    // The stored message goes out with the next successful forward (and anything pending with it).
    const again = await publish(['cli/imm', 'later', '--lines'], env)
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toMatch(/^sent 1 messages from 1 lines/)
    expect((await brokerMessages(broker.url, node, await broker.adminToken())).map((m) => m.payload)).toEqual(
      ['up', 'down', 'later'],
    )
  })

  it('edge + deferred stays lean: neither the HTTP stack nor zstd-napi is loaded (direct mode loads them)', async () => {
    const log = path.join(dir, 'loaded.txt')
    const hooks = path.join(dir, 'hooks.mjs')
    const preload = path.join(dir, 'preload.mjs')
    fs.writeFileSync(
      hooks,
      `import fs from 'node:fs'\nexport async function resolve(s, c, next) { const r = await next(s, c); ` +
        `fs.appendFileSync(${JSON.stringify(log)}, r.url + '\\n'); return r }\n`,
    )
    fs.writeFileSync(
      preload,
      `import { register, createRequire } from 'node:module'\nimport fs from 'node:fs'\n` +
        `register(${JSON.stringify('file://' + hooks)})\nconst require = createRequire(import.meta.url)\n` +
        `process.on('exit', () => fs.appendFileSync(${JSON.stringify(log)}, [...Object.keys(require.cache), ...process.moduleLoadList].join('\\n') + '\\n'))\n`,
    )
    const loaded = async (env: Record<string, string>) => {
      fs.rmSync(log, { force: true })
      const r = await publish(['cli/lean', 'x'], { ...env, NODE_OPTIONS: `--import=${preload}` })
      expect(r.code, r.stderr).toBe(0)
      return fs.readFileSync(log, 'utf8')
    }
    const { env } = await nodeEnv({ RMQ_COMPRESSION_CODEC: 'zstd' })
    const edge = await loaded(env)
    expect(edge).toMatch(/better-sqlite3/)
    // Node's own HTTP modules (process.moduleLoadList): the one HTTP client loads them with the direct producer.
    const httpStack = /^NativeModule https?$/m
    expect(edge).not.toMatch(httpStack)
    expect(edge).not.toMatch(/zstd-napi/)
    expect(edge).not.toMatch(/producer-(direct|forward)/)
    const direct = await loaded({ ...env, RMQ_MODE: 'direct' })
    expect(direct).toMatch(httpStack)
    expect(direct).toMatch(/zstd-napi/)
  })
})
