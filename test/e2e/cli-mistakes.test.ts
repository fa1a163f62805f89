/**
 * Every kind of command-line mistake, through the real binary: the oclif
 * commands, oclif's own "command not found", the publish fast path (which
 * never loads oclif) and the config loader all answer in one style: an
 * `rmq: ` line naming the problem, a `fix:` line, the documented exit code,
 * no oclif marker, no stack trace, and in --json mode one JSON error document.
 */
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makeTempDir, parseJson, runCli, type CliResult } from '../helpers/cli.js'

interface Mistake {
  name: string
  args: string[]
  /** Files written into the working directory first. */
  files?: Record<string, string>
  code: number
  /** Each must match stderr; `DIR` stands for the working directory. */
  says: Array<string | RegExp>
}

const JSON_CONFIG = '{\n  "nodeId": "gw-1",\n  "sync": { "batchSize": 5, }\n}\n'
const YAML_CONFIG = 'nodeId: gw-1\nsync:\n  batchSize: 5\n bad: [\n'

const MISTAKES: Mistake[] = [
  {
    name: 'unknown command',
    args: ['pubish', 'a/b', 'x'],
    code: 2,
    says: ['rmq: unknown command "pubish"', 'fix: did you mean `rmq publish`?'],
  },
  {
    name: 'unknown command under a topic',
    args: ['broker', 'tokn', 'create', 'gw-1'],
    code: 2,
    says: ['unknown command "broker tokn"', 'did you mean `rmq broker token`?', '`rmq broker --help`'],
  },
  {
    name: 'unknown command, nothing close',
    args: ['xyzzy'],
    code: 2,
    says: ['unknown command "xyzzy"', /fix: the commands are .*`rmq publish`.*`rmq status`/],
  },
  {
    name: '`help` as a command',
    args: ['help', 'config', 'get'],
    code: 2,
    says: ['rmq: unknown command "help"', 'fix: help is a flag: `rmq config get --help`'],
  },
  {
    name: 'unknown flag',
    args: ['status', '--brokr'],
    code: 2,
    says: [
      'rmq: unknown flag --brokr for `rmq status`',
      'fix: did you mean --broker? `rmq status` takes --broker, --json, --config',
    ],
  },
  {
    name: 'unknown flag, nothing close',
    args: ['consume', 'a/#', '--bogus'],
    code: 2,
    says: ['unknown flag --bogus for `rmq consume`', /fix: `rmq consume` takes --[a-z].*--json, --config/],
  },
  {
    name: 'missing argument',
    args: ['config', 'get'],
    code: 2,
    says: [
      'rmq: missing argument KEY for `rmq config get` (Key path, e.g. sync.batchSize)',
      'fix: usage: rmq config get KEY',
    ],
  },
  {
    name: 'missing arguments',
    args: ['config', 'set'],
    code: 2,
    says: ['missing arguments KEY, VALUE for `rmq config set`', 'usage: rmq config set KEY VALUE'],
  },
  {
    name: 'unexpected argument',
    args: ['status', 'extra'],
    code: 2,
    says: ['unexpected argument "extra" for `rmq status`', 'fix: `rmq status` takes no arguments'],
  },
  {
    name: 'flag without its value',
    args: ['broker', 'start', '--port'],
    code: 2,
    says: ['rmq: flag --port needs a value', 'fix: write --port VALUE'],
  },
  {
    name: 'publish fast path: unknown flag',
    args: ['publish', 'a/b', 'x', '--jsn'],
    code: 2,
    says: [
      'rmq: unknown flag --jsn for `rmq publish`',
      'fix: did you mean --json? `rmq publish` takes --file (-f), --lines, --ttl',
    ],
  },
  {
    name: 'publish fast path: unknown short flag',
    args: ['publish', 'a/b', 'x', '-x'],
    code: 2,
    says: ['unknown flag -x for `rmq publish`', /fix: `rmq publish` takes --file \(-f\)/],
  },
  {
    name: 'publish fast path: missing argument',
    args: ['publish'],
    code: 2,
    says: ['rmq: missing argument TOPIC for `rmq publish`', 'fix: usage: rmq publish TOPIC [MESSAGE]'],
  },
  {
    name: 'publish fast path: missing payload',
    args: ['publish', 'a/b'],
    code: 2,
    says: ['missing argument MESSAGE for `rmq publish`', 'fix: give the payload as an argument'],
  },
  {
    name: 'publish fast path: flag without its value',
    args: ['publish', 'a/b', 'x', '--ttl'],
    code: 2,
    says: ['rmq: flag --ttl needs a value', 'fix: write --ttl DURATION'],
  },
  {
    name: 'publish fast path: unexpected argument',
    args: ['publish', 'a/b', 'hello', 'world'],
    code: 2,
    says: ['unexpected argument "world" for `rmq publish`', 'fix: quote a MESSAGE that contains spaces'],
  },
  {
    name: 'bad JSON config syntax',
    args: ['status'],
    files: { '.rmqrc.json': JSON_CONFIG },
    code: 78,
    says: [
      'rmq: DIR/.rmqrc.json:3:29: invalid JSON: a comma before "}" (trailing commas are not allowed in JSON)',
      'fix: correct the JSON there',
    ],
  },
  {
    name: 'bad JSON config syntax (publish fast path)',
    args: ['publish', 'a/b', 'x'],
    files: { '.rmqrc.json': '{"sync": {"batchSize": }}' },
    code: 78,
    says: ['rmq: DIR/.rmqrc.json:1:24: invalid JSON: expected a value after ":", found "}"'],
  },
  {
    name: 'bad YAML config syntax',
    args: ['config', 'list'],
    files: { '.rmqrc.yaml': YAML_CONFIG },
    code: 78,
    says: [
      'rmq: DIR/.rmqrc.yaml:4:2: invalid YAML: bad indentation of a mapping entry',
      'fix: correct the YAML',
    ],
  },
  {
    name: 'bad YAML config syntax (publish fast path)',
    args: ['publish', 'a/b', 'x'],
    files: { '.rmqrc.yaml': 'sync:\n  batchSize: [\n' },
    code: 78,
    says: ['rmq: DIR/.rmqrc.yaml:3:1: invalid YAML: unexpected end of the stream within a flow collection'],
  },
  {
    name: 'config get of an unknown key',
    args: ['config', 'get', 'nosuch'],
    code: 78,
    says: [/^rmq: unknown configuration key "nosuch"$/m, 'fix: see `rmq config list` for the known keys'],
  },
  {
    name: 'config get of a mistyped key',
    args: ['config', 'get', 'sync.batchSise'],
    code: 78,
    says: [/^rmq: unknown configuration key "sync.batchSise"$/m, 'fix: did you mean sync.batchSize?'],
  },
]

/** What every mistake must look like on stderr. */
function expectRmqStyle(r: CliResult): void {
  const lines = r.stderr.trimEnd().split('\n')
  expect(lines[0]).toMatch(/^rmq: \S/)
  expect(r.stderr).toMatch(/^ {2}fix: \S/m)
  expect(r.stderr).not.toContain('›')
  expect(r.stderr).not.toMatch(/\bError:/)
  expect(r.stderr).not.toMatch(/^\s+at /m)
  expect(r.stderr).not.toContain('See more help')
}

describe('CLI mistakes (real binary)', () => {
  let dir: string
  let cleanup: () => void
  beforeEach(() => ({ dir, cleanup } = makeTempDir('rmq-mistakes-')))
  afterEach(() => cleanup())

  const run = (m: Mistake, extra: string[] = [], env: Record<string, string> = {}) => {
    for (const [name, text] of Object.entries(m.files ?? {})) fs.writeFileSync(path.join(dir, name), text)
    return runCli([...m.args, ...extra], { cwd: dir, env: { RMQ_NODE_ID: 'gw-1', ...env } })
  }

  it.each(MISTAKES)('$name: exit $code, rmq style, names the problem', async (m) => {
    const r = await run(m)
    expect(r.code, r.stderr).toBe(m.code)
    expectRmqStyle(r)
    for (const s of m.says)
      if (typeof s === 'string') expect(r.stderr).toContain(s.replace('DIR', dir))
      else expect(r.stderr).toMatch(s)
    expect(r.stdout).toBe('')
    // A mistake stores nothing: no outbox, no broker data directory.
    expect(fs.readdirSync(dir).sort()).toEqual(Object.keys(m.files ?? {}).sort())
  })

  it.each(MISTAKES)('$name --json: one JSON error document on stdout, the same text on stderr', async (m) => {
    // After a flag that lacks its value, --json would be that value: put it before the flag.
    const last = m.args.at(-1)!
    const args = /^--(ttl|port)$/.test(last)
      ? [...m.args.slice(0, -1), '--json', last]
      : [...m.args, '--json']
    const r = await run({ ...m, args })
    expect(r.code, r.stderr).toBe(m.code)
    const doc = parseJson(r.stdout).error
    expect(doc).toMatchObject({ exitCode: m.code, code: m.code === 2 ? 'USAGE' : 'CONFIG' })
    expect(r.stderr).toBe(`rmq: ${doc.message}\n  fix: ${doc.suggestion}\n`)
  })

  it.each(MISTAKES.filter((m) => m.args[0] === 'publish'))(
    '$name: the fast path and the oclif path (RMQ_NO_FAST_PATH) say exactly the same',
    async (m) => {
      const fast = await run(m)
      const slow = await run(m, [], { RMQ_NO_FAST_PATH: '1' })
      expect(slow.code).toBe(fast.code)
      expect(slow.stderr).toBe(fast.stderr)
    },
  )

  it('JSON and YAML syntax errors carry file, line and column in --json details', async () => {
    fs.writeFileSync(path.join(dir, '.rmqrc.json'), JSON_CONFIG)
    const r = await runCli(['config', 'validate', '--json'], { cwd: dir })
    expect(r.code).toBe(78)
    expect(parseJson(r.stdout).error.details).toEqual({
      file: path.join(dir, '.rmqrc.json'),
      line: 3,
      column: 29,
      format: 'JSON',
    })
  })
})

describe('rmq broker start on a port in use (real binary)', () => {
  let dir: string
  let cleanup: () => void
  let holder: net.Server
  let port: number
  beforeEach(async () => {
    ;({ dir, cleanup } = makeTempDir('rmq-port-'))
    holder = net.createServer()
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve))
    port = (holder.address() as net.AddressInfo).port
  })
  afterEach(async () => {
    await new Promise((resolve) => holder.close(resolve))
    cleanup()
  })

  it.each([[[] as string[]], [['--json']]])(
    'fails with exit 78 naming the port, and creates no data directory (%j)',
    async (extra) => {
      const dataDir = path.join(dir, 'broker-data')
      const r = await runCli(
        ['broker', 'start', '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir, ...extra],
        { cwd: dir, timeoutMs: 20_000 },
      )
      expect(r.code, r.stderr).toBe(78)
      expectRmqStyle(r)
      expect(r.stderr).toContain(
        `rmq: cannot listen on 127.0.0.1:${port}: port ${port} is already in use (EADDRINUSE)`,
      )
      expect(r.stderr).toMatch(/fix: stop the process listening on it .*or choose another with --port/)
      if (extra.length) expect(parseJson(r.stdout).error).toMatchObject({ code: 'CONFIG', exitCode: 78 })
      expect(fs.existsSync(dataDir)).toBe(false)
      expect(fs.readdirSync(dir)).toEqual([])
    },
  )
})
