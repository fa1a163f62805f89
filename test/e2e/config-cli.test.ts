import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'

describe('rmq config (real binary)', () => {
  let dir: string
  let cleanup: () => void
  beforeEach(() => ({ dir, cleanup } = makeTempDir()))
  afterEach(() => cleanup())

  it('a node id against the protocol rule is exit 78 at config validate and at every command that reads config', async () => {
    const env = { RMQ_NODE_ID: 'gw/1 x' }
    for (const args of [['config', 'validate'], ['status'], ['publish', 'a/b', 'x'], ['sync']]) {
      const r = await runCli(args, { cwd: dir, env })
      expect(r.code, args.join(' ')).toBe(78)
      expect(r.stderr).toContain('invalid value "gw/1 x" for nodeId (from env RMQ_NODE_ID)')
      expect(r.stderr).toContain('without spaces, slashes or control characters')
    }
    expect(fs.existsSync(path.join(dir, '.rmq'))).toBe(false)
    const ok = await runCli(['config', 'validate'], { cwd: dir, env: { RMQ_NODE_ID: 'gw-1' } })
    expect(ok.code).toBe(0)
  })

  it('--help lists the commands', async () => {
    const r = await runCli(['--help'], { cwd: dir })
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('config')
  })

  it('env overrides .env, which overrides the file; list --json reports each source', async () => {
    fs.writeFileSync(
      path.join(dir, '.rmqrc.json'),
      JSON.stringify({ sync: { batchSize: 3 }, brokerUrl: 'http://broker.invalid:7878' }),
    )
    let r = await runCli(['config', 'get', 'sync.batchSize'], { cwd: dir })
    expect(r.stdout.trim()).toBe('3')
    fs.writeFileSync(path.join(dir, '.env'), 'RMQ_SYNC_BATCH_SIZE=5\n')
    r = await runCli(['config', 'get', 'sync.batchSize'], { cwd: dir })
    expect(r.stdout.trim()).toBe('5')
    r = await runCli(['config', 'get', 'sync.batchSize'], { cwd: dir, env: { RMQ_SYNC_BATCH_SIZE: '7' } })
    expect(r.stdout.trim()).toBe('7')

    r = await runCli(['config', 'list', '--json'], { cwd: dir, env: { RMQ_TOKEN: 'supersecret-1234' } })
    expect(r.code).toBe(0)
    const doc = parseJson(r.stdout)
    const byKey = Object.fromEntries(doc.keys.map((e: any) => [e.key, e]))
    expect(byKey['sync.batchSize'].source.kind).toBe('dotenv')
    expect(byKey['brokerUrl'].source).toEqual({
      kind: 'file',
      detail: fs.realpathSync(path.join(dir, '.rmqrc.json')),
    })
    expect(byKey['token'].source).toEqual({ kind: 'env', detail: 'RMQ_TOKEN' })
    expect(byKey['token'].value).not.toContain('supersecret')
    expect(byKey['sync.timeout'].source.kind).toBe('default')
  })

  it('RMQ_SYNC_BATCH_SIZE=7 config get prints 7', async () => {
    const r = await runCli(['config', 'get', 'sync.batchSize'], {
      cwd: dir,
      env: { RMQ_SYNC_BATCH_SIZE: '7' },
    })
    expect(r.code).toBe(0)
    expect(r.stdout).toBe('7\n')
  })

  it('validate exits 78 naming RMQ_SYNC_INTERVAL and the accepted forms, without a stack trace', async () => {
    const r = await runCli(['config', 'validate'], { cwd: dir, env: { RMQ_SYNC_INTERVAL: 'banana' } })
    expect(r.code).toBe(78)
    expect(r.stderr).toContain('RMQ_SYNC_INTERVAL')
    expect(r.stderr).toContain('30s')
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })

  it('a config file with a syntax error exits 78 naming the file, line, column and what is wrong', async () => {
    fs.writeFileSync(path.join(dir, '.rmqrc.json'), '{"sync": {"batchSize": }}')
    const json = await runCli(['status'], { cwd: dir, env: { RMQ_NODE_ID: 'gw-1' } })
    expect(json.code).toBe(78)
    expect(json.stderr).toContain(`${path.join(dir, '.rmqrc.json')}:1:24: invalid JSON: expected a value`)
    expect(json.stderr).not.toMatch(/\n\s+at /)
    fs.rmSync(path.join(dir, '.rmqrc.json'))
    fs.writeFileSync(path.join(dir, '.rmqrc.yaml'), 'sync:\n  batchSize: [\n')
    const yaml = await runCli(['publish', 'a/b', 'x'], { cwd: dir, env: { RMQ_NODE_ID: 'gw-1' } })
    expect(yaml.code).toBe(78)
    expect(yaml.stderr).toContain(
      `${path.join(dir, '.rmqrc.yaml')}:3:1: invalid YAML: unexpected end of the stream`,
    )
    expect(fs.existsSync(path.join(dir, '.rmq'))).toBe(false)
  })

  it('set creates .rmqrc.json, keeps other keys, and unset removes one', async () => {
    let r = await runCli(['config', 'set', 'nodeId', 'gw-9'], { cwd: dir })
    expect(r.code).toBe(0)
    r = await runCli(['config', 'set', 'sync.interval', '2m', '--json'], { cwd: dir })
    expect(parseJson(r.stdout).created).toBe(false)
    expect(JSON.parse(fs.readFileSync(path.join(dir, '.rmqrc.json'), 'utf8'))).toEqual({
      nodeId: 'gw-9',
      sync: { interval: '2m' },
    })
    r = await runCli(['config', 'get', 'sync.interval'], { cwd: dir })
    expect(r.stdout.trim()).toBe('2m')
    r = await runCli(['config', 'unset', 'sync.interval'], { cwd: dir })
    expect(r.code).toBe(0)
    expect(JSON.parse(fs.readFileSync(path.join(dir, '.rmqrc.json'), 'utf8'))).toEqual({ nodeId: 'gw-9' })
    r = await runCli(['config', 'path'], { cwd: dir })
    expect(r.stdout.trim()).toBe(path.join(dir, '.rmqrc.json'))
  })

  it('bad usage exits 2; an unknown key exits 78 with one JSON document in --json mode', async () => {
    let r = await runCli(['config', 'get', '--nope'], { cwd: dir })
    expect(r.code).toBe(2)
    r = await runCli(['config', 'get', 'sync.batchSise', '--json'], { cwd: dir })
    expect(r.code).toBe(78)
    expect(parseJson(r.stdout).error.suggestion).toContain('sync.batchSize')
    r = await runCli(['config', 'set', 'sync.interval', 'soon'], { cwd: dir })
    expect(r.code).toBe(78)
    expect(fs.existsSync(path.join(dir, '.rmqrc.json'))).toBe(false)
  })

  it('--config points at another file', async () => {
    fs.writeFileSync(path.join(dir, 'edge.json'), JSON.stringify({ nodeId: 'from-explicit' }))
    const r = await runCli(['config', 'get', 'nodeId', '--config', 'edge.json'], { cwd: dir })
    expect(r.stdout.trim()).toBe('from-explicit')
  })
})
