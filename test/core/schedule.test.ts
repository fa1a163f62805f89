import { afterEach, describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/core/config/load.js'
import { buildSchedule, type SchedulePlan } from '../../src/core/schedule.js'
import { cronLines, cronProblems, parseUnit } from '../helpers/schedule.js'

const cleanups: Array<() => unknown> = []
afterEach(() => {
  while (cleanups.length) cleanups.pop()!()
})

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

  it('adds rmq mqtt ingest as a resident service (Restart=always, no crontab line) or a timer run with --until-idle', async () => {
    const { config } = await loadConfig({
      cwd: '/srv/gw',
      env: {},
      dotenv: false,
      options: { 'sync.interval': '5m' },
    })
    const base = { config, cwd: '/srv/gw', node: '/usr/bin/node', bin: '/opt/rmq/bin/run.js' }
    const resident = buildSchedule({ ...base, mqtt: { ingest: 'resident' } })
    const r = Object.fromEntries(resident.units.map((u) => [u.name, parseUnit(u.text)]))
    expect(r['rmq-mqtt-ingest.service'].Service).toMatchObject({
      Type: 'simple',
      Restart: 'always',
      RestartPreventExitStatus: '78',
      ExecStart: '/usr/bin/node /opt/rmq/bin/run.js mqtt ingest',
    })
    expect(r['rmq-mqtt-ingest.timer']).toBeUndefined()
    expect(cronLines(resident.crontab).some((l) => l.includes('mqtt ingest'))).toBe(false)
    expect(resident.notes.join('\n')).toMatch(/mqtt ingest \(resident\).*Restart=always/)

    const timer = buildSchedule({ ...base, mqtt: { ingest: 'timer', idleMs: 10_000 } })
    const t = Object.fromEntries(timer.units.map((u) => [u.name, parseUnit(u.text)]))
    expect(t['rmq-mqtt-ingest.service'].Service).toMatchObject({
      Type: 'oneshot',
      ExecStart: '/usr/bin/node /opt/rmq/bin/run.js mqtt ingest --until-idle 10s',
    })
    expect(t['rmq-mqtt-ingest.timer'].Timer.OnCalendar).toBe('*-*-* *:00/5:00')
    const line = cronLines(timer.crontab).find((l) => l.includes('mqtt ingest'))!
    expect(cronProblems(line)).toEqual([])
    expect(line).toMatch(
      /^0-59\/5 \* \* \* \* cd \/srv\/gw && .* mqtt ingest --until-idle 10s >> .*rmq-mqtt-ingest\.log 2>&1$/,
    )
    expect(timer.notes.join('\n')).toMatch(/local MQTT broker holds the messages/)
  })

  it('adds rmq mqtt forward with the broker token credential', async () => {
    const { config } = await loadConfig({ cwd: '/srv/c', env: {}, dotenv: false, options: {} })
    const p = buildSchedule({
      config,
      cwd: '/srv/c',
      node: '/usr/bin/node',
      bin: '/opt/rmq/bin/run.js',
      mqtt: { forward: 'resident' },
    })
    const f = parseUnit(p.units.find((u) => u.name === 'rmq-mqtt-forward.service')!.text)
    expect(f.Service).toMatchObject({ Restart: 'always', LoadCredential: 'rmq-token:/etc/rmq/rmq.token' })
    expect(f.Unit.After).toBe('network-online.target')
  })
})
