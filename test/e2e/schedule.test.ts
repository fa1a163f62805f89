/**
 * `rmq schedule` as a user runs it: crontab lines and systemd units for the
 * working directory and config; the units pass systemd-analyze where it is
 * installed. buildSchedule itself: test/core/schedule.test.ts.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { makeTempDir, parseJson, runCli } from '../helpers/cli.js'
import { cronLines, cronProblems, parseUnit } from '../helpers/schedule.js'

const HAS_SYSTEMD_ANALYZE = spawnSync('sh', ['-c', 'command -v systemd-analyze']).status === 0

const cleanups: Array<() => unknown> = []
afterEach(() => {
  while (cleanups.length) cleanups.pop()!()
})

describe('rmq schedule (CLI)', () => {
  it('prints crontab lines and units for this directory and config', async () => {
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
  })

  it.skipIf(!HAS_SYSTEMD_ANALYZE)(
    'the units it writes pass systemd-analyze verify and calendar (needs systemd-analyze)',
    async () => {
      const tmp = makeTempDir('rmq-schedule-')
      cleanups.push(tmp.cleanup)
      fs.writeFileSync(path.join(tmp.dir, '.rmqrc.json'), JSON.stringify({ nodeId: 'gw-sched' }))
      const unitsDir = path.join(tmp.dir, 'units')
      const sd = await runCli(['schedule', '--systemd', '--write', unitsDir, '--json'], { cwd: tmp.dir })
      expect(sd.code, sd.stderr).toBe(0)
      const result = parseJson(sd.stdout)
      const files = result.written as string[]
      expect(files).toHaveLength(4)
      // verify exits non-zero and prints the problem for any bad key, value or missing executable.
      const v = spawnSync('systemd-analyze', ['verify', ...files], { encoding: 'utf8' })
      expect(v.status, v.stderr).toBe(0)
      expect(v.stderr + v.stdout).not.toMatch(/rmq-(sync|cleanup)\.(service|timer)/)
      for (const u of result.units.filter((x: { name: string }) => x.name.endsWith('.timer'))) {
        const cal = /OnCalendar=(.*)/.exec(u.text)![1]
        const c = spawnSync('systemd-analyze', ['calendar', cal], { encoding: 'utf8' })
        expect(c.status, c.stderr).toBe(0)
      }
    },
  )

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
