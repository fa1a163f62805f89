/**
 * The base command (src/cli/base-command.ts) run in-process: --json output,
 * configuration errors and usage errors mapped to documented exit codes with
 * a cause and a fix on stderr, suggestions for a mistyped flag. Each test
 * has its own directory and environment (test/helpers/run-command.ts).
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeTempDir } from '../helpers/cli.js'
import { rmqInProcess } from '../helpers/run-command.js'

let dir: string
let cleanup: () => void
beforeEach(() => {
  ;({ dir, cleanup } = makeTempDir('rmq-commands-'))
})
afterEach(() => cleanup())

const rmq = (args: string[], env: Record<string, string> = {}) => rmqInProcess(args, { cwd: dir, env })
const writeConfig = (text: string, name = '.rmqrc.json') => {
  const file = path.join(dir, name)
  fs.writeFileSync(file, text)
  return file
}
/** stderr in the project's style: `rmq: <cause>` then `  fix: <fix>`, and never a stack trace. */
function expectCauseAndFix(stderr: string, cause: RegExp, fix: RegExp): void {
  const lines = stderr.trimEnd().split('\n')
  expect(lines[0]).toMatch(/^rmq: /)
  expect(lines[0]).toMatch(cause)
  expect(lines[1]).toMatch(/^ {2}fix: /)
  expect(lines[1]).toMatch(fix)
  expect(stderr).not.toMatch(/^\s+at /m)
}

describe('--json', () => {
  it('prints exactly one JSON document, the value run() returns, and nothing else on stdout', async () => {
    const file = writeConfig(JSON.stringify({ nodeId: 'gw-json', sync: { batchSize: 250 } }))
    const r = await rmq(['config', 'get', 'sync.batchSize', '--json'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toBe('')
    // The whole of stdout parses as one JSON value.
    const doc = JSON.parse(r.stdout)
    expect(doc).toMatchObject({
      key: 'sync.batchSize',
      value: 250,
      display: '250',
      env: 'RMQ_SYNC_BATCH_SIZE',
    })
    expect(doc.sourceText).toContain(file)
    expect(doc).toEqual(r.result)
    // Without --json the same command prints the human form only.
    const human = await rmq(['config', 'get', 'sync.batchSize'])
    expect(human.stdout).toBe('250\n')
  })

  it('turns an error into {"error": {...}} on stdout, with the cause and fix on stderr too', async () => {
    const r = await rmq(['config', 'validate', '--json'], { RMQ_SYNC_INTERVAL: 'banana' })
    expect(r.code).toBe(78)
    const doc = JSON.parse(r.stdout)
    expect(doc.error).toMatchObject({ code: 'CONFIG', exitCode: 78 })
    expect(doc.error.message).toMatch(/banana/)
    expect(doc.error.message).toMatch(/RMQ_SYNC_INTERVAL/)
    expect(typeof doc.error.suggestion).toBe('string')
    expectCauseAndFix(r.stderr, /banana/, /./)
  })
})

describe('configuration errors: exit 78 naming the problem and the fix', () => {
  it('a config file that is not valid JSON names the file and the place', async () => {
    const file = writeConfig('{ "nodeId": "gw-1", }')
    const r = await rmq(['config', 'validate'])
    expect(r.code).toBe(78)
    expect(r.stdout).toBe('')
    expectCauseAndFix(r.stderr, new RegExp(file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), /./)
  })

  it('a node id that breaks the protocol rule (RMQ_NODE_ID="gw/1 x") fails validation, naming the source', async () => {
    const r = await rmq(['config', 'validate'], { RMQ_NODE_ID: 'gw/1 x' })
    expect(r.code).toBe(78)
    expectCauseAndFix(r.stderr, /invalid value "gw\/1 x" for nodeId \(from env RMQ_NODE_ID\)/, /./)
    const ok = await rmq(['config', 'validate', '--json'], { RMQ_NODE_ID: 'gw-1' })
    expect(ok.code, ok.stderr).toBe(0)
    expect(JSON.parse(ok.stdout)).toEqual({ valid: true, file: null, dotenv: null })
  })

  it('--config naming a file that does not exist is a configuration error, not a crash', async () => {
    const r = await rmq(['config', 'validate', '--config', path.join(dir, 'nope.json')])
    expect(r.code).toBe(78)
    expectCauseAndFix(r.stderr, /nope\.json/, /./)
  })

  it('each test reads only its own directory: a config here is not seen by the next run elsewhere', async () => {
    writeConfig(JSON.stringify({ nodeId: 'gw-here', sync: { batchSize: 7 } }))
    expect(JSON.parse((await rmq(['config', 'get', 'sync.batchSize', '--json'])).stdout).value).toBe(7)
    const other = makeTempDir('rmq-commands-other-')
    try {
      const r = await rmqInProcess(['config', 'get', 'sync.batchSize', '--json'], { cwd: other.dir })
      expect(r.code, r.stderr).toBe(0)
      const doc = JSON.parse(r.stdout)
      expect(doc).toMatchObject({ source: { kind: 'default' } })
      expect(doc.value).not.toBe(7)
    } finally {
      other.cleanup()
    }
  })
})

describe('usage errors: exit 2 with the usage and a suggestion', () => {
  it('a mistyped flag gets "did you mean", in words and in --json details', async () => {
    const r = await rmq(['config', 'get', 'sync.batchSize', '--reveall'])
    expect(r.code).toBe(2)
    expectCauseAndFix(r.stderr, /unknown flag --reveall for `rmq config get`/, /did you mean --reveal\?/)
    const json = await rmq(['config', 'get', 'sync.batchSize', '--reveall', '--json'])
    expect(json.code).toBe(2)
    expect(JSON.parse(json.stdout).error).toMatchObject({
      code: 'USAGE',
      exitCode: 2,
      details: { flag: '--reveall', didYouMean: '--reveal' },
    })
  })

  it('a missing argument names it; an extra one is refused', async () => {
    const missing = await rmq(['config', 'get'])
    expect(missing.code).toBe(2)
    expectCauseAndFix(missing.stderr, /missing argument KEY for `rmq config get`/, /./)
    const extra = await rmq(['config', 'validate', 'surplus'])
    expect(extra.code).toBe(2)
    expectCauseAndFix(extra.stderr, /surplus/, /./)
  })

  it('a flag without its value says what value it takes', async () => {
    const r = await rmq(['config', 'validate', '--config'])
    expect(r.code).toBe(2)
    expectCauseAndFix(r.stderr, /flag --config needs a value/, /--config /)
  })
})
