import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/core/config/load.js'
import { buildSchedule, type SchedulePlan } from '../../src/core/schedule.js'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'

const cleanups: Array<() => unknown> = []
afterEach(() => {
  while (cleanups.length) cleanups.pop()!()
})

const FIELDS: Array<[string, number, number]> = [
  ['minute', 0, 59],
  ['hour', 0, 23],
  ['day of month', 1, 31],
  ['month', 1, 12],
  ['day of week', 0, 7],
]

/** Problems with one crontab(5) line: 5 time fields (numbers, *, ranges, lists, steps), then a command. */
function cronProblems(line: string): string[] {
  const m = /^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.+)$/.exec(line)
  if (!m) return ['not 5 fields and a command']
  const out: string[] = []
  FIELDS.forEach(([name, lo, hi], i) => {
    for (const item of m[i + 1].split(',')) {
      const im = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(item)
      if (!im) {
        out.push(`${name}: bad item ${item}`)
        continue
      }
      const nums = [im[2], im[3]].filter((x) => x !== undefined).map(Number)
      if (nums.some((n) => n < lo || n > hi)) out.push(`${name}: ${item} outside ${lo}-${hi}`)
      if (nums.length === 2 && nums[0] > nums[1]) out.push(`${name}: reversed range ${item}`)
      if (im[4] !== undefined && Number(im[4]) < 1) out.push(`${name}: step 0`)
    }
  })
  // In the command field an unescaped % ends the command (the rest goes to stdin).
  if (/(^|[^\\])%/.test(m[6])) out.push('unescaped % in the command')
  return out
}

function cronLines(crontab: string): string[] {
  return crontab.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'))
}

/** Sections and Key=Value lines of a unit file. */
function parseUnit(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {}
  let section = ''
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const s = /^\[(\w+)\]$/.exec(line)
    if (s) {
      section = s[1]
      out[section] = {}
      continue
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line)
    if (!kv || !section) throw new Error(`not a unit file line: ${line}`)
    out[section][kv[1]] = kv[2]
  }
  return out
}

async function plan(
  options: Record<string, unknown>,
  cwd = '/srv/gw',
  configFile?: string,
): Promise<SchedulePlan> {
  const { config } = await loadConfig({ cwd, env: {}, dotenv: false, options })
  return buildSchedule({ config, cwd, configFile, node: '/usr/bin/node', bin: '/opt/rmq/bin/run.js' })
}

describe('buildSchedule', () => {
  it('makes valid crontab lines; a sub-minute sync.interval runs every minute and says so', async () => {
    const p = await plan({ 'sync.interval': '30s', 'cleanup.interval': '1h' })
    const lines = cronLines(p.crontab)
    expect(lines).toHaveLength(2)
    for (const l of lines) expect(cronProblems(l), l).toEqual([])
    expect(lines[0]).toBe(
      '* * * * * cd /srv/gw && mkdir -p /srv/gw/.rmq && /usr/bin/node /opt/rmq/bin/run.js sync >> /srv/gw/.rmq/rmq-sync.log 2>&1',
    )
    expect(lines[1]).toMatch(
      /^7 \* \* \* \* cd \/srv\/gw && .* cleanup >> \/srv\/gw\/\.rmq\/rmq-cleanup\.log 2>&1$/,
    )
    expect(p.notes.join('\n')).toMatch(/at most once a minute: sync\.interval 30s becomes every minute/)
    expect(p.jobs[0]).toMatchObject({ intervalMs: 30_000, cronIntervalMs: 60_000, systemdIntervalMs: 30_000 })
  })

  it('keeps intervals that divide the hour or day, rounds the others down and says so', async () => {
    const cases: Array<[string, string, string]> = [
      ['5m', '0-59/5 * * * *', '*-*-* *:00/5:00'],
      ['2h', '0 */2 * * *', '*-*-* 00/2:00:00'],
      ['1d', '0 3 * * *', '*-*-* 03:00:00'],
      ['7m', '0-59/6 * * * *', '*-*-* *:00/6:00'],
    ]
    for (const [interval, cron, calendar] of cases) {
      const p = await plan({ 'sync.interval': interval, 'cleanup.interval': '6h' })
      expect(p.jobs[0].cron).toBe(cron)
      expect(p.jobs[0].onCalendar).toBe(calendar)
      for (const l of cronLines(p.crontab)) expect(cronProblems(l), l).toEqual([])
      expect(p.jobs[1].cron).toBe('7 */6 * * *')
    }
    const odd = await plan({ 'sync.interval': '7m' })
    expect(odd.notes.join('\n')).toMatch(
      /sync\.interval 7m does not divide the hour or day evenly: .* every 6m/,
    )
    const tenS = await plan({ 'sync.interval': '7s' })
    expect(tenS.jobs[0].onCalendar).toBe('*-*-* *:*:00/6')
  })

  it('quotes paths with spaces and escapes % for cron and systemd; passes the config file', async () => {
    const p = await plan({}, '/srv/my gw/100%', '/etc/rmq/my gw.json')
    const lines = cronLines(p.crontab)
    for (const l of lines) expect(cronProblems(l), l).toEqual([])
    expect(lines[0]).toContain(`cd '/srv/my gw/100\\%' && mkdir -p`)
    expect(lines[0]).toContain(`sync --config '/etc/rmq/my gw.json' >>`)
    const service = parseUnit(p.units.find((u) => u.name === 'rmq-sync.service')!.text)
    expect(service.Service.WorkingDirectory).toBe('"/srv/my gw/100%%"')
    expect(service.Service.ExecStart).toBe(
      '/usr/bin/node /opt/rmq/bin/run.js sync --config "/etc/rmq/my gw.json"',
    )
  })

  it('makes oneshot services and persistent, randomized timers for sync and cleanup', async () => {
    const p = await plan({ 'sync.interval': '30s', 'cleanup.interval': '1h' })
    expect(p.units.map((u) => u.name)).toEqual([
      'rmq-sync.service',
      'rmq-sync.timer',
      'rmq-cleanup.service',
      'rmq-cleanup.timer',
    ])
    const units = Object.fromEntries(p.units.map((u) => [u.name, parseUnit(u.text)]))
    for (const cmd of ['sync', 'cleanup']) {
      const s = units[`rmq-${cmd}.service`]
      expect(s.Service).toMatchObject({
        Type: 'oneshot',
        WorkingDirectory: '/srv/gw',
        ExecStart: `/usr/bin/node /opt/rmq/bin/run.js ${cmd}`,
        SyslogIdentifier: `rmq-${cmd}`,
      })
      const t = units[`rmq-${cmd}.timer`]
      expect(t.Timer).toMatchObject({ Persistent: 'true' })
      expect(t.Timer.RandomizedDelaySec).toMatch(/^\d+(s|min)$/)
      expect(t.Install).toEqual({ WantedBy: 'timers.target' })
    }
    expect(units['rmq-sync.service'].Unit.After).toBe('network-online.target')
    expect(units['rmq-sync.timer'].Timer).toMatchObject({
      OnCalendar: '*-*-* *:*:00/30',
      RandomizedDelaySec: '6s',
      AccuracySec: '1s',
    })
    expect(units['rmq-cleanup.timer'].Timer).toMatchObject({
      OnCalendar: '*-*-* *:07:00',
      RandomizedDelaySec: '5min',
    })
    expect(units['rmq-cleanup.service'].Service).toMatchObject({ Nice: '10', IOSchedulingClass: 'idle' })
  })
})

describe('rmq schedule (CLI)', () => {
  it('prints crontab lines and units for this directory and config; the units pass systemd-analyze verify', async () => {
    const tmp = makeTempDir('rmq-schedule-')
    cleanups.push(tmp.cleanup)
    const rc = path.join(tmp.dir, '.rmqrc.json')
    fs.writeFileSync(
      rc,
      JSON.stringify({ nodeId: 'gw-sched', sync: { interval: '20s' }, cleanup: { interval: '30m' } }),
    )

    const cron = await runCli(['schedule', '--cron'], { cwd: tmp.dir })
    expect(cron.code, cron.stderr).toBe(0)
    const lines = cronLines(cron.stdout)
    expect(lines).toHaveLength(2)
    for (const l of lines) expect(cronProblems(l), l).toEqual([])
    expect(lines[0]).toContain(`cd ${tmp.dir} && mkdir -p ${tmp.dir}/.rmq && ${process.execPath} `)
    expect(lines[0]).toContain(`bin/run.js sync --config ${rc} >>`)
    expect(lines[1]).toMatch(/^7-59\/30 \* \* \* \* /)
    expect(cron.stdout).toMatch(/^# note: crontab runs jobs at most once a minute: sync\.interval 20s/m)
    expect(cron.stdout).not.toContain('[Unit]')

    const unitsDir = path.join(tmp.dir, 'units')
    const sd = await runCli(['schedule', '--systemd', '--write', unitsDir, '--json'], { cwd: tmp.dir })
    expect(sd.code, sd.stderr).toBe(0)
    const result = parseJson(sd.stdout)
    expect(result.written.map((p: string) => path.basename(p))).toEqual([
      'rmq-sync.service',
      'rmq-sync.timer',
      'rmq-cleanup.service',
      'rmq-cleanup.timer',
    ])
    expect(result.configFile).toBe(rc)
    const timer = parseUnit(fs.readFileSync(path.join(unitsDir, 'rmq-sync.timer'), 'utf8'))
    expect(timer.Timer.OnCalendar).toBe('*-*-* *:*:00/20')
    const bin = fs.realpathSync(path.resolve('bin/run.js'))
    expect(
      parseUnit(fs.readFileSync(path.join(unitsDir, 'rmq-cleanup.service'), 'utf8')).Service.ExecStart,
    ).toBe(`${process.execPath} ${bin} cleanup --config ${rc}`)

    const analyze = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' })
    if (analyze.status !== 0) {
      console.log(
        'SKIPPED systemd-analyze verify: systemd-analyze is not installed here (unit structure checked above)',
      )
      return
    }
    const files = result.written as string[]
    // verify exits non-zero and prints the problem for any bad key, value or missing executable.
    const v = spawnSync('systemd-analyze', ['verify', ...files], { encoding: 'utf8' })
    expect(v.status, v.stderr).toBe(0)
    expect(v.stderr + v.stdout).not.toMatch(/rmq-(sync|cleanup)\.(service|timer)/)
    for (const u of result.units.filter((x: { name: string }) => x.name.endsWith('.timer'))) {
      const cal = /OnCalendar=(.*)/.exec(u.text)![1]
      const c = spawnSync('systemd-analyze', ['calendar', cal], { encoding: 'utf8' })
      expect(c.status, c.stderr).toBe(0)
    }
  })

  it('with no flag prints both; --cron and --systemd exclude each other', async () => {
    const tmp = makeTempDir('rmq-schedule-')
    cleanups.push(tmp.cleanup)
    const both = await runCli(['schedule'], { cwd: tmp.dir })
    expect(both.code, both.stderr).toBe(0)
    expect(both.stdout).toContain('* * * * * cd ')
    expect(both.stdout).toContain('# ---- rmq-cleanup.timer')
    const bad = await runCli(['schedule', '--cron', '--systemd'], { cwd: tmp.dir })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--cron and --systemd exclude each other/)
  })
})
