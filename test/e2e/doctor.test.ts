/**
 * `rmq doctor` on real files and a real broker process: a healthy node (all
 * ok), a broker that is down (error naming the URL, exit 69), a world-readable
 * outbox (warning; --strict exits 1), and a clock in 1970 (warning).
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, runCli } from '../helpers/cli.js'

interface Check {
  name: string
  state: 'ok' | 'warning' | 'error'
  detail: string
  fix?: string
}

describe('rmq doctor', () => {
  let broker: BrokerProcess
  let tmp: ReturnType<typeof makeTempDir>
  let env: Record<string, string>
  const doctor = async (args: string[] = [], extra: Record<string, string> = {}) => {
    const r = await runCli(['doctor', '--json', ...args], { cwd: tmp.dir, env: { ...env, ...extra } })
    const report = JSON.parse(r.stdout) as { checks: Check[]; errors: number; warnings: number }
    const by = (name: string) => report.checks.filter((c) => c.name === name)
    return { code: r.code, report, by, stderr: r.stderr }
  }

  beforeAll(async () => {
    broker = await startBrokerProcess({ auth: 'token' })
    tmp = makeTempDir('rmq-doctor-')
    // A crontab that lists `rmq sync` (the schedule check reads `crontab -l`; none is installed here).
    const bin = path.join(tmp.dir, 'bin')
    fs.mkdirSync(bin)
    fs.writeFileSync(path.join(bin, 'crontab'), '#!/bin/sh\necho "*/1 * * * * cd /srv && rmq sync"\n', {
      mode: 0o755,
    })
    env = {
      RMQ_NODE_ID: 'gw-doc',
      RMQ_BROKER_URL: broker.url,
      RMQ_TOKEN: await broker.createToken('gw-doc'),
      PATH: `${bin}:${process.env.PATH}`,
    }
    const rmq = (args: string[]) => runCli(args, { cwd: tmp.dir, env })
    expect((await rmq(['publish', 'plant/a', '1'])).code).toBe(0)
    expect((await rmq(['sync'])).code).toBe(0)
    for (const f of fs.readdirSync(path.join(tmp.dir, '.rmq')))
      fs.chmodSync(path.join(tmp.dir, '.rmq', f), 0o600)
  })
  afterAll(async () => {
    await broker?.cleanup()
    tmp?.cleanup()
  })

  it('a healthy node: every check ok, exit 0 (also with --strict)', async () => {
    const { code, report } = await doctor(['--strict'])
    expect(report.checks.filter((c) => c.state !== 'ok')).toEqual([])
    expect(report.checks.map((c) => c.name)).toEqual([
      'config',
      'clock',
      'integrity',
      'size',
      'permissions',
      'node id',
      'sync',
      'disk',
      'broker',
      'token',
      'schedule',
    ])
    expect(code).toBe(0)
  })

  it('the broker down: an error naming the URL, exit 69', async () => {
    const { code, by } = await doctor([], { RMQ_BROKER_URL: 'http://127.0.0.1:9' })
    expect(by('broker')[0]).toMatchObject({ state: 'error' })
    expect(by('broker')[0].detail).toContain('http://127.0.0.1:9')
    expect(code).toBe(69)
  })

  it('a world-readable outbox: a warning with the fix; exit 0, or 1 with --strict', async () => {
    const db = path.join(tmp.dir, '.rmq/outbox.db')
    fs.chmodSync(db, 0o644)
    try {
      const { code, by } = await doctor()
      expect(by('permissions')[0]).toMatchObject({ state: 'warning', fix: `chmod 600 ${db}*` })
      expect(by('permissions')[0].detail).toMatch(/644: readable by others/)
      expect(code).toBe(0)
      expect((await doctor(['--strict'])).code).toBe(1)
    } finally {
      fs.chmodSync(db, 0o600)
    }
  })

  it('a clock in 1970 (RMQ_CLOCK_OFFSET as the test hook): a warning naming an unset clock', async () => {
    const { by } = await doctor(['--offline'], { RMQ_CLOCK_OFFSET: String(-Date.now() + 86_400_000) })
    expect(by('clock')[0]).toMatchObject({ state: 'warning' })
    expect(by('clock')[0].detail).toMatch(/1970-01-0.* an unset real-time clock/)
  })
})
