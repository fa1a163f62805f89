/**
 * `rmq publish` pays Node's start-up on every call from a shell script, so
 * what its bundle loads before it publishes is part of its contract
 * (bench/suites/publish.js times it). Loading node:crypto, node:os and
 * node:timers/promises through the lease module at require time cost ~5 ms
 * of CPU per publish once; network, TLS and compression modules belong to
 * sync and forward=immediate only.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'

const BUNDLE = path.resolve('dist/cli/publish-fast.cjs')
/** Built-ins the lean path may not load (lazily imported by the paths that need them). */
const NOT_ON_THE_PUBLISH_PATH = [
  'node:crypto',
  'node:http',
  'node:https',
  'node:tls',
  'node:net',
  'node:zlib',
  'node:worker_threads',
]

/**
 * The built-in and package modules a child loads when it requires the bundle
 * and, with `publish`, publishes one message to an outbox that exists (a new
 * one draws its epoch from node:crypto once).
 */
function modulesLoaded(publish: boolean): string[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-startup-'))
  const script = `
    const M = require('node:module'); const load = M._load; const seen = []
    M._load = function (request, ...rest) { seen.push(request); return load.call(this, request, ...rest) }
    const { runPublishCli } = require(${JSON.stringify(BUNDLE)})
    const done = () => process.stderr.write(JSON.stringify(seen))
    if (${publish}) runPublishCli(['t/start-up', 'hello']).then((code) => { process.exitCode = code; done() })
    else done()`
  const run = () =>
    spawnSync(process.execPath, ['-e', script], {
      cwd: dir,
      env: { ...process.env, RMQ_NODE_ID: 'gw-startup', RMQ_STORAGE_PATH: path.join(dir, 'outbox.db') },
      encoding: 'utf8',
    })
  try {
    if (publish) expect(run().status).toBe(0) // creates the outbox
    const r = run()
    expect(r.status, r.stderr).toBe(0)
    return JSON.parse(r.stderr) as string[]
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

describe('the rmq publish fast path', () => {
  it('loads no network, crypto or os module when its bundle is required', () => {
    const loaded = modulesLoaded(false)
    expect(loaded).toContain('node:fs')
    expect(loaded.filter((m) => NOT_ON_THE_PUBLISH_PATH.includes(m))).toEqual([])
  })

  it('publishes a message to the outbox (edge, forward=deferred) without loading them either', () => {
    const loaded = modulesLoaded(true)
    expect(loaded.some((m) => m.endsWith('better_sqlite3.node'))).toBe(true)
    expect(loaded.filter((m) => NOT_ON_THE_PUBLISH_PATH.includes(m))).toEqual([])
  })
})
