/**
 * The package as a user gets it: `npm pack`, install the tarball in a fresh
 * project, import it from plain JavaScript (ESM and CommonJS) and from TypeScript (types
 * checked with tsc against the installed declarations), send messages in
 * both modes against a real broker, and run the shipped conformance suites
 * (`rmq/testing`) against a third-party driver.
 *
 * dist/ must be current (`npm test` builds it first; `npm pack` alone would
 * run prepack = build). The install reuses this machine's npm cache
 * (--prefer-offline; only the npm registry if something is missing) and skips
 * install scripts: the native addons (better-sqlite3, zstd-napi) take about
 * 75 s to compile here, so their builds are copied from this checkout when
 * the versions match, and rebuilt otherwise.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { ROOT, cleanEnv, makeTempDir } from '../helpers/cli.js'

const NATIVE = [
  { name: 'better-sqlite3', addon: 'build/Release/better_sqlite3.node' },
  { name: 'zstd-napi', addon: 'build/Release/binding.node' },
]

const version = (dir: string) =>
  (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version

function sh(cmd: string, args: string[], cwd: string, timeout = 120_000): string {
  return execFileSync(cmd, args, {
    cwd,
    env: cleanEnv({ npm_config_update_notifier: 'false' }),
    encoding: 'utf8',
    timeout,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}

/**
 * One plain JavaScript app, for ES modules and for CommonJS (require() of the ES module entry: Node
 * 20.19 and later load ES modules without top-level await); `load` brings rmq's exports in.
 */
const jsApp = (load: string, name: string) => `
${load}

;(async () => {
  const base = { cwd: process.cwd(), env: {}, brokerUrl: process.env.BROKER_URL, nodeId: 'pkg-${name}' }
  const edge = await createProducer({ ...base, storage: { path: 'outbox-${name}.db' } })
  const stored = await edge.send('pkg/${name}', JSON.stringify({ v: 1 }), { contentType: 'application/json' })
  await edge.close()
  const direct = await createProducer({ ...base, mode: 'direct' })
  const sent = await direct.send('pkg/${name}', 'hello from plain JavaScript')
  let invalid
  try {
    await direct.send('bad/#', 'x')
  } catch (err) {
    invalid = err instanceof ValidationError ? err.exitCode : 'wrong class'
  }
  await direct.close()
  console.log(JSON.stringify({ stored, sent, invalid, typed: typeof BrokerUnavailableError }))
})()
`
const EXPORTS = '{ createProducer, BrokerUnavailableError, ValidationError }'

const TS_APP = `
import { createProducer, RejectedError, type Producer, type SendReceipt, type ProducerOptions } from 'rmq'

const options: ProducerOptions = {
  mode: 'direct',
  nodeId: 'pkg-ts',
  brokerUrl: process.env.BROKER_URL,
  env: {},
  sync: { timeout: '5s' },
}
const producer: Producer = await createProducer(options)
const receipt: SendReceipt = await producer.send('pkg/ts', new Uint8Array([104, 105]), { priority: 5, ttl: '10m' })
const status: 'sent' | 'stored' = receipt.status
const many: SendReceipt[] = await producer.sendMany([{ topic: 'pkg/ts', payload: 'two', timestamp: new Date() }])
await producer.flush()
await producer.close()
console.log(JSON.stringify({ status, id: receipt.id, many: many.length, rejected: RejectedError.name }))
`

describe('the packed package, installed like a user would', () => {
  let broker: BrokerProcess
  let tmp: { dir: string; cleanup: () => void }
  let app: string
  beforeAll(async () => {
    broker = await startBrokerProcess({ auth: 'none' })
    tmp = makeTempDir('rmq-package-')
    expect(fs.existsSync(path.join(ROOT, 'dist/index.js')), 'run `npm run build` first').toBe(true)
    const packed = sh('npm', ['pack', '--ignore-scripts', '--pack-destination', tmp.dir], ROOT)
    const tarball = path.join(tmp.dir, packed.trim().split('\n').pop()!)
    app = path.join(tmp.dir, 'app')
    fs.mkdirSync(app)
    fs.writeFileSync(
      path.join(app, 'package.json'),
      JSON.stringify({ name: 'consumer', version: '1.0.0', type: 'module', private: true }),
    )
    sh(
      'npm',
      [
        'install',
        tarball,
        '--no-audit',
        '--no-fund',
        '--prefer-offline',
        '--ignore-scripts',
        '--loglevel=error',
      ],
      app,
      180_000,
    )
    const stale: string[] = []
    for (const { name, addon } of NATIVE) {
      const mine = path.join(ROOT, 'node_modules', name)
      const theirs = path.join(app, 'node_modules', name)
      if (version(mine) === version(theirs) && fs.existsSync(path.join(mine, addon))) {
        fs.mkdirSync(path.dirname(path.join(theirs, addon)), { recursive: true })
        fs.copyFileSync(path.join(mine, addon), path.join(theirs, addon))
      } else stale.push(name)
    }
    if (stale.length > 0) sh('npm', ['rebuild', ...stale], app, 300_000)
  }, 600_000)
  afterAll(async () => {
    await broker?.cleanup()
    tmp?.cleanup()
  })

  it('exports only the built entry point and its declarations', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(app, 'node_modules/rmq/package.json'), 'utf8'))
    expect(pkg.exports['.']).toEqual({
      types: './dist/index.d.ts',
      import: './dist/index.js',
      default: './dist/index.js',
    })
    for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/core/producer.d.ts', 'bin/run.js'])
      expect(fs.existsSync(path.join(app, 'node_modules/rmq', f)), f).toBe(true)
    // Compiled code only: no TypeScript sources of the library, no tests.
    for (const f of ['src/core', 'src/index.ts', 'test'])
      expect(fs.existsSync(path.join(app, 'node_modules/rmq', f)), f).toBe(false)
  })

  it('rmq/testing runs the storage conformance suite against a tiny third-party driver, and fails a broken one', () => {
    // The third party's own test runner: this checkout's vitest, linked (the suites are vitest suites).
    fs.symlinkSync(path.join(ROOT, 'node_modules/vitest'), path.join(app, 'node_modules/vitest'), 'dir')
    fs.mkdirSync(path.join(app, 'conformance'), { recursive: true })
    // A driver as a third party might publish one: the basic methods only, on top of rmq's memory
    // store, counting appends (a metrics decorator). `broken` loses every mark of a message as sent.
    fs.writeFileSync(
      path.join(app, 'conformance/tiny-driver.mjs'),
      `import { createMemoryStorage } from 'rmq'
const BASIC = ['append', 'nextBatch', 'markSent', 'recordAttempt', 'purge', 'enforceLimits', 'compact', 'stats',
  'getState', 'setState', 'addCounters', 'getCounters', 'acquireLease', 'releaseLease', 'close']
export function createTinyStorage(options, { broken = false } = {}) {
  const inner = createMemoryStorage(options)
  const d = { name: 'tiny', capabilities: inner.capabilities, epoch: inner.epoch, appends: 0 }
  for (const k of BASIC) d[k] = inner[k].bind(inner)
  const append = d.append
  d.append = (messages) => (d.appends++, append(messages))
  if (broken) d.markSent = async () => 0
  return d
}
export default (options) => createTinyStorage(options)
`,
    )
    const suite = (broken: boolean) => `import { storageConformance } from 'rmq/testing'
import { createTinyStorage } from './tiny-driver.mjs'
storageConformance({
  name: 'tiny${broken ? ' (broken)' : ''}',
  factory: (o) => createTinyStorage(o, { broken: ${broken} }),
  durable: false,
  fastPaths: [],
})
`
    fs.writeFileSync(path.join(app, 'conformance/tiny.test.mjs'), suite(false))
    fs.writeFileSync(path.join(app, 'conformance/broken.test.mjs'), suite(true))
    const vitest = (file: string) =>
      spawnSync(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', file, '--reporter=json'], {
        cwd: app,
        env: cleanEnv({ CI: '1' }),
        encoding: 'utf8',
        timeout: 120_000,
      })
    const report = (out: string) =>
      JSON.parse(out.slice(out.indexOf('{'))) as {
        numPassedTests: number
        numFailedTests: number
        numTotalTests: number
        success: boolean
        testResults: Array<{
          message?: string
          assertionResults: Array<{ fullName: string; status: string; failureMessages: string[] }>
        }>
      }
    const failures = (r: ReturnType<typeof report>) =>
      r.testResults.flatMap((f) => [
        ...(f.message ? [f.message] : []),
        ...f.assertionResults
          .filter((a) => a.status === 'failed')
          .map((a) => `${a.fullName}: ${a.failureMessages[0]}`),
      ])
    const ok = vitest('conformance/tiny.test.mjs')
    const good = report(ok.stdout)
    expect(failures(good).join('\n').slice(0, 2000) || ok.stderr).toBe('')
    expect(ok.status, ok.stderr).toBe(0)
    expect(good.success).toBe(true)
    expect(good.numPassedTests).toBeGreaterThan(20)
    expect(good.numFailedTests).toBe(0)
    const bad = vitest('conformance/broken.test.mjs')
    expect(bad.status).not.toBe(0)
    expect(report(bad.stdout).numFailedTests).toBeGreaterThan(0)
  }, 240_000)

  it.each([
    { system: 'ES modules', file: 'app.mjs', name: 'esm', load: `import ${EXPORTS} from 'rmq'` },
    { system: 'CommonJS', file: 'app.cjs', name: 'cjs', load: `const ${EXPORTS} = require('rmq')` },
  ])(
    'plain JavaScript, $system: edge mode stores, direct mode sends, typed errors',
    ({ file, name, load }) => {
      fs.writeFileSync(path.join(app, file), jsApp(load, name))
      const result = spawnSync(process.execPath, [file], {
        cwd: app,
        env: cleanEnv({ BROKER_URL: broker.url }),
        encoding: 'utf8',
        timeout: 30_000,
      })
      expect(result.stderr).toBe('')
      const out = JSON.parse(result.stdout)
      expect(out.stored).toMatchObject({ status: 'stored', topic: `pkg/${name}`, seq: 1 })
      expect(out.sent).toMatchObject({ status: 'sent', topic: `pkg/${name}`, seq: 1 })
      expect(out.sent.id).toMatch(new RegExp(`^pkg-${name}:[0-9a-f-]{36}:1$`))
      expect(out).toMatchObject({ invalid: 65, typed: 'function' })
      expect(fs.existsSync(path.join(app, `outbox-${name}.db`))).toBe(true)
    },
  )

  it('TypeScript: tsc --noEmit against the installed types, then it runs and sends', () => {
    fs.writeFileSync(path.join(app, 'app.ts'), TS_APP)
    fs.writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          // The consumer's own @types/node (borrowed from this checkout to stay offline).
          typeRoots: [path.join(ROOT, 'node_modules/@types')],
          types: ['node'],
        },
        files: ['app.ts'],
      }),
    )
    const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc')
    try {
      execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json'], {
        cwd: app,
        encoding: 'utf8',
        timeout: 60_000,
      })
    } catch (err) {
      throw new Error(`tsc failed:\n${(err as { stdout?: string }).stdout}`)
    }
    const out = JSON.parse(
      execFileSync(path.join(ROOT, 'node_modules/.bin/tsx'), ['app.ts'], {
        cwd: app,
        env: cleanEnv({ BROKER_URL: broker.url }),
        encoding: 'utf8',
        timeout: 30_000,
      }),
    )
    expect(out).toMatchObject({ status: 'sent', many: 1, rejected: 'RejectedError' })
  })
})
