import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { envVarFor, loadConfig, setConfigValue, unsetConfigValue } from '../../src/core/config/index.js'
import { ConfigError } from '../../src/shared/errors.js'
import { parseDuration, parseSize } from '../../src/shared/units.js'
import { makeTempDir } from '../helpers/cli.js'

describe('units', () => {
  it('parses durations and sizes in every documented form', () => {
    expect(parseDuration('30s')).toBe(30_000)
    expect(parseDuration('5m')).toBe(300_000)
    expect(parseDuration('24h')).toBe(86_400_000)
    expect(parseDuration('250')).toBe(250)
    expect(parseDuration('1.5h')).toBe(5_400_000)
    expect(parseDuration('banana')).toBeUndefined()
    expect(parseDuration('-1s')).toBeUndefined()
    expect(parseSize('512KB')).toBe(512 * 1024)
    expect(parseSize('50MB')).toBe(50 * 1024 * 1024)
    expect(parseSize('1GiB')).toBe(1024 ** 3)
    expect(parseSize('100')).toBe(100)
    expect(parseSize('12 parsecs')).toBeUndefined()
  })
})

describe('config loading', () => {
  let dir: string
  let cleanup: () => void
  beforeEach(() => ({ dir, cleanup } = makeTempDir()))
  afterEach(() => cleanup())

  it('derives env var names from key paths', () => {
    expect(envVarFor('sync.batchSize')).toBe('RMQ_SYNC_BATCH_SIZE')
    expect(envVarFor('nodeId')).toBe('RMQ_NODE_ID')
    expect(envVarFor('broker.ordering.maxLateness')).toBe('RMQ_BROKER_ORDERING_MAX_LATENESS')
  })

  it('applies defaults < file < .env < env < flags and records each source', async () => {
    fs.writeFileSync(
      path.join(dir, '.rmqrc.json'),
      JSON.stringify({ sync: { batchSize: 3, interval: '10s' }, nodeId: 'f' }),
    )
    fs.writeFileSync(path.join(dir, '.env'), 'RMQ_SYNC_BATCH_SIZE=5\nRMQ_NODE_ID=dotenv-node\n')
    const a = await loadConfig({ cwd: dir, env: {} })
    expect(a.config.sync.batchSize).toBe(5)
    expect(a.values.get('sync.batchSize')!.source.kind).toBe('dotenv')
    expect(a.config.sync.interval).toBe(10_000)
    expect(a.values.get('sync.interval')!.source).toEqual({
      kind: 'file',
      detail: path.join(dir, '.rmqrc.json'),
    })
    expect(a.config.sync.timeout).toBe(30_000)
    expect(a.values.get('sync.timeout')!.source.kind).toBe('default')

    const b = await loadConfig({ cwd: dir, env: { RMQ_SYNC_BATCH_SIZE: '9' } })
    expect(b.config.sync.batchSize).toBe(9)
    expect(b.values.get('sync.batchSize')!.source).toEqual({ kind: 'env', detail: 'RMQ_SYNC_BATCH_SIZE' })

    const c = await loadConfig({
      cwd: dir,
      env: { RMQ_SYNC_BATCH_SIZE: '9' },
      flags: { 'sync.batchSize': 11 },
    })
    expect(c.config.sync.batchSize).toBe(11)
    expect(c.values.get('sync.batchSize')!.source.kind).toBe('flag')
  })

  it('rejects a bad value naming key, value, source and accepted forms', async () => {
    const err = await loadConfig({ cwd: dir, env: { RMQ_SYNC_INTERVAL: 'banana' } }).catch((e) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.exitCode).toBe(78)
    expect(err.message).toContain('banana')
    expect(err.message).toContain('sync.interval')
    expect(err.message).toContain('RMQ_SYNC_INTERVAL')
    expect(err.message).toContain('30s')
  })

  it('rejects unknown keys with a did-you-mean suggestion, in files and env', async () => {
    fs.writeFileSync(path.join(dir, '.rmqrc.json'), JSON.stringify({ sync: { batchSise: 3 } }))
    const err = await loadConfig({ cwd: dir, env: {} }).catch((e) => e)
    expect(err).toBeInstanceOf(ConfigError)
    expect(err.suggestion).toContain('sync.batchSize')
    fs.rmSync(path.join(dir, '.rmqrc.json'))
    const err2 = await loadConfig({ cwd: dir, env: { RMQ_SYNC_BATCHSIZE: '3' } }).catch((e) => e)
    expect(err2.suggestion).toContain('RMQ_SYNC_BATCH_SIZE')
  })

  it('set and unset edit the file in place and keep other keys', async () => {
    const file = path.join(dir, '.rmqrc.json')
    fs.writeFileSync(file, JSON.stringify({ nodeId: 'gw-1', sync: { batchSize: 3 } }))
    setConfigValue(file, dir, 'sync.interval', '1m')
    setConfigValue(file, dir, 'storage.maxMessages', '1000')
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual({
      nodeId: 'gw-1',
      sync: { batchSize: 3, interval: '1m' },
      storage: { maxMessages: 1000 },
    })
    unsetConfigValue(file, dir, 'storage.maxMessages')
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual({
      nodeId: 'gw-1',
      sync: { batchSize: 3, interval: '1m' },
    })
    expect(() => setConfigValue(file, dir, 'sync.interval', 'soon')).toThrow(ConfigError)
    const created = setConfigValue(undefined, path.join(dir), 'nodeId', 'x')
    expect(created.created).toBe(true)
  })
})
