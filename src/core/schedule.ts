/**
 * `rmq schedule`: ready-to-install crontab lines and systemd .service +
 * .timer units that run `rmq sync` every sync.interval and `rmq cleanup`
 * every cleanup.interval, with the absolute paths of node, the rmq binary,
 * the working directory and the config file in effect. No flock: `rmq sync`
 * takes a lease in the outbox and `rmq cleanup` another, so an overlapping
 * run exits 0 at once. Operations guide: docs/operations.md.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { RmqConfig } from './config/schema.js'
import { UsageError } from '../shared/errors.js'
import { formatDuration } from '../shared/units.js'
import { mqttNotes, mqttServices, type MqttScheduleInput } from './schedule-mqtt.js'

export interface ScheduleInput {
  config: Pick<RmqConfig, 'sync' | 'cleanup' | 'storage'>
  /** Working directory the jobs run in (where .env and the config file are found). */
  cwd: string
  /** The config file in effect (absolute), passed with --config. */
  configFile?: string
  /** Node.js executable; default the running one. */
  node?: string
  /** The rmq entry script; default this package's bin/run.js. */
  bin?: string
  /** systemd User=; default the current user (omitted for root). */
  user?: string
  /** Prefix of the unit names and syslog identifiers; default `rmq`. */
  name?: string
  /** Directory of the cron log files; default the outbox directory. */
  logDir?: string
  /** Optional systemd EnvironmentFile (settings); default /etc/rmq/<name>.env. */
  envFile?: string
  /**
   * The token file systemd hands to `rmq sync` as the credential `rmq-token`
   * (LoadCredential=): readable by root only, never in the environment or a
   * config file; default /etc/rmq/<name>.token.
   */
  tokenCredential?: string
  /** MQTT jobs (`--mqtt-ingest`, `--mqtt-forward`), each resident or timer-driven (schedule-mqtt.ts). */
  mqtt?: Omit<MqttScheduleInput, 'idleMs'> & { idleMs?: number }
}

export interface ScheduleJob {
  command: 'sync' | 'cleanup'
  /** The configured interval and the one the schedule really uses, ms. */
  intervalMs: number
  cronIntervalMs: number
  systemdIntervalMs: number
  cron: string
  onCalendar: string
}

export interface SystemdUnit {
  name: string
  text: string
}

export interface SchedulePlan {
  cwd: string
  node: string
  bin: string
  configFile: string | null
  jobs: ScheduleJob[]
  /** The crontab lines (with a header comment), ready for `crontab -e` or /etc/cron.d (add a user field). */
  crontab: string
  units: SystemdUnit[]
  /** Where the configured intervals could not be kept exactly, and why. */
  notes: string[]
}

const MINUTE = 60_000
const HOUR = 3_600_000
const DAY = 86_400_000
/** Steps that divide the next unit evenly, so runs stay evenly spaced. */
const SECOND_STEPS = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30]
const MINUTE_STEPS = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30]
const HOUR_STEPS = [1, 2, 3, 4, 6, 8, 12]

/** Largest step in `steps` (times `unit`) not above `ms`; the smallest one when ms is below all. */
function fit(ms: number, unit: number, steps: number[]): number {
  let best = steps[0]
  for (const s of steps) if (s * unit <= ms) best = s
  return best
}

/** The period (ms) a schedule can keep: at most the interval (never runs less often), evenly spaced. */
export function schedulePeriod(ms: number, granularity: 'second' | 'minute'): number {
  if (granularity === 'second' && ms < MINUTE) return fit(ms, 1000, SECOND_STEPS) * 1000
  if (ms < HOUR) return fit(ms, MINUTE, MINUTE_STEPS) * MINUTE
  if (ms < DAY) return fit(ms, HOUR, HOUR_STEPS) * HOUR
  return DAY
}

/** 5-field crontab schedule for a period from schedulePeriod(…, 'minute'); `offset` spreads jobs (minutes). */
export function cronExpression(period: number, offset: number): string {
  if (period < HOUR) {
    const m = period / MINUTE
    if (m === 1) return '* * * * *'
    return `${offset % m}-59/${m} * * * *`
  }
  if (period < DAY) {
    const h = period / HOUR
    return h === 1 ? `${offset} * * * *` : `${offset} */${h} * * *`
  }
  return `${offset} 3 * * *`
}

/** systemd OnCalendar= for a period from schedulePeriod(…, 'second'). */
export function onCalendarExpression(period: number, offsetMinutes: number): string {
  if (period < MINUTE) return `*-*-* *:*:00/${period / 1000}`
  if (period < HOUR) {
    const m = period / MINUTE
    return `*-*-* *:${String(offsetMinutes % m).padStart(2, '0')}/${m}:00`
  }
  if (period < DAY) {
    const h = period / HOUR
    const mm = String(offsetMinutes).padStart(2, '0')
    return h === 1 ? `*-*-* *:${mm}:00` : `*-*-* 00/${h}:${mm}:00`
  }
  return `*-*-* 03:${String(offsetMinutes).padStart(2, '0')}:00`
}

/** Single-quote for /bin/sh. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`
}

/** Quote an ExecStart= / WorkingDirectory= argument for systemd. */
function systemdQuote(s: string): string {
  const escaped = s.replaceAll('\\', '\\\\').replaceAll('%', '%%')
  return /[\s"']/.test(escaped) ? `"${escaped.replaceAll('"', '\\"')}"` : escaped
}

function defaultBin(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/run.js')
}

function currentUser(): string | undefined {
  try {
    const u = os.userInfo()
    return u.uid === 0 ? undefined : u.username
  } catch {
    return undefined
  }
}

/** Build the crontab lines and systemd units for the given configuration. */
export function buildSchedule(input: ScheduleInput): SchedulePlan {
  const name = input.name ?? 'rmq'
  const node = input.node ?? process.execPath
  const rawBin = input.bin ?? defaultBin()
  const bin = fs.existsSync(rawBin) ? fs.realpathSync(rawBin) : rawBin
  const cwd = path.resolve(input.cwd)
  const configFile = input.configFile ? path.resolve(cwd, input.configFile) : null
  const logDir = input.logDir ?? path.dirname(path.resolve(cwd, input.config.storage.path))
  const user = input.user ?? currentUser()
  const envFile = input.envFile ?? `/etc/rmq/${name}.env`
  const tokenCredential = input.tokenCredential ?? `/etc/rmq/${name}.token`
  const notes: string[] = []

  const specs = [
    { command: 'sync' as const, intervalMs: input.config.sync.interval, offset: 0 },
    // Cleanup a few minutes off the hour so it seldom starts together with other hourly jobs.
    { command: 'cleanup' as const, intervalMs: input.config.cleanup.interval, offset: 7 },
  ]
  const jobs: ScheduleJob[] = specs.map((s) => {
    const key = s.command === 'sync' ? 'sync.interval' : 'cleanup.interval'
    const cronIntervalMs = schedulePeriod(s.intervalMs, 'minute')
    const systemdIntervalMs = schedulePeriod(s.intervalMs, 'second')
    if (s.intervalMs < MINUTE)
      notes.push(
        `crontab runs jobs at most once a minute: ${key} ${formatDuration(s.intervalMs)} becomes every minute ` +
          `in the crontab lines (the systemd timer keeps ${formatDuration(systemdIntervalMs)}; ` +
          '`rmq sync --watch` keeps any interval)',
      )
    else if (cronIntervalMs !== s.intervalMs)
      notes.push(
        `${key} ${formatDuration(s.intervalMs)} does not divide the hour or day evenly: the crontab lines run ` +
          `every ${formatDuration(cronIntervalMs)}`,
      )
    if (s.intervalMs >= MINUTE && systemdIntervalMs !== s.intervalMs && systemdIntervalMs !== cronIntervalMs)
      notes.push(`${key}: the systemd timer runs every ${formatDuration(systemdIntervalMs)}`)
    else if (s.intervalMs < MINUTE && systemdIntervalMs !== s.intervalMs)
      notes.push(
        `${key} ${formatDuration(s.intervalMs)} does not divide the minute evenly: the systemd timer runs every ` +
          `${formatDuration(systemdIntervalMs)}`,
      )
    return {
      command: s.command,
      intervalMs: s.intervalMs,
      cronIntervalMs,
      systemdIntervalMs,
      cron: cronExpression(cronIntervalMs, s.offset),
      onCalendar: onCalendarExpression(systemdIntervalMs, s.offset),
    }
  })

  const args = (command: string) => [command, ...(configFile ? ['--config', configFile] : [])]

  // crontab: `%` is a newline in the command field and must be escaped.
  const cronEscape = (s: string) => s.replaceAll('%', '\\%')
  const cronLines = jobs.map((j) => {
    const log = path.join(logDir, `${name}-${j.command}.log`)
    const cmd =
      `cd ${shellQuote(cwd)} && mkdir -p ${shellQuote(logDir)} && ${shellQuote(node)} ${shellQuote(bin)} ${args(j.command).map(shellQuote).join(' ')}` +
      ` >> ${shellQuote(log)} 2>&1`
    return `${j.cron} ${cronEscape(cmd)}`
  })
  const mqtt = mqttServices({ ...input.mqtt, idleMs: input.mqtt?.idleMs ?? 30_000 })
  const syncCron = jobs[0].cron
  for (const m of mqtt.filter((x) => x.mode === 'timer')) {
    const log = path.join(logDir, `${name}-${m.job}.log`)
    const all = [...m.args, ...(configFile ? ['--config', configFile] : [])]
    cronLines.push(
      `${syncCron} ${cronEscape(`cd ${shellQuote(cwd)} && mkdir -p ${shellQuote(logDir)} && ${shellQuote(node)} ${shellQuote(bin)} ${all.map(shellQuote).join(' ')} >> ${shellQuote(log)} 2>&1`)}`,
    )
  }
  notes.push(...mqttNotes(mqtt))
  const crontab = [
    `# rmq: forward the edge outbox every ${formatDuration(jobs[0].cronIntervalMs)}, clean it up every ` +
      `${formatDuration(jobs[1].cronIntervalMs)}. Install with \`crontab -e\` (as the user owning ${cwd}).`,
    '# Overlapping runs are safe: a second `rmq sync` or `rmq cleanup` exits 0 at once.',
    ...cronLines,
  ].join('\n')

  const exec = (command: string) => [node, bin, ...args(command)].map(systemdQuote).join(' ')
  const units: SystemdUnit[] = []
  for (const j of jobs) {
    const isSync = j.command === 'sync'
    const unit = `${name}-${j.command}`
    const service = [
      '[Unit]',
      isSync
        ? 'Description=rmq sync: forward the edge outbox to the broker'
        : 'Description=rmq cleanup: delete sent and expired messages, shrink the outbox',
      ...(isSync ? ['Wants=network-online.target', 'After=network-online.target'] : []),
      '',
      '[Service]',
      'Type=oneshot',
      ...(user ? [`User=${user}`] : []),
      `WorkingDirectory=${systemdQuote(cwd)}`,
      `EnvironmentFile=-${systemdQuote(envFile)}`,
      // The token as a credential: rmq reads $CREDENTIALS_DIRECTORY/rmq-token when `token` is not set.
      ...(isSync ? [`LoadCredential=rmq-token:${systemdQuote(tokenCredential)}`] : []),
      `ExecStart=${exec(j.command)}`,
      // A run that hangs must not hold back the next ones for ever (SIGTERM stops between batches).
      `TimeoutStartSec=${isSync ? '15min' : '1h'}`,
      ...(isSync ? [] : ['Nice=10', 'IOSchedulingClass=idle']),
      `SyslogIdentifier=${unit}`,
      '',
    ].join('\n')
    const period = j.systemdIntervalMs
    const delay = Math.max(1000, Math.min(Math.floor(period / 5), 5 * MINUTE))
    const timer = [
      '[Unit]',
      `Description=Run ${unit}.service every ${formatDuration(period)}`,
      '',
      '[Timer]',
      `OnCalendar=${j.onCalendar}`,
      // Catch up on a run missed while the gateway was off; spread a fleet's requests over time.
      'Persistent=true',
      `RandomizedDelaySec=${formatSystemdSpan(delay)}`,
      `AccuracySec=${period < MINUTE ? '1s' : formatSystemdSpan(Math.min(MINUTE, delay))}`,
      '',
      '[Install]',
      'WantedBy=timers.target',
      '',
    ].join('\n')
    units.push({ name: `${unit}.service`, text: service }, { name: `${unit}.timer`, text: timer })
  }
  for (const m of mqtt) {
    const unit = `${name}-${m.job}`
    const all = [node, bin, ...m.args, ...(configFile ? ['--config', configFile] : [])]
    const service = [
      '[Unit]',
      `Description=${m.description}`,
      ...(m.network ? ['Wants=network-online.target', 'After=network-online.target'] : []),
      ...(m.mode === 'resident' ? ['StartLimitIntervalSec=0'] : []),
      '',
      '[Service]',
      m.mode === 'resident' ? 'Type=simple' : 'Type=oneshot',
      ...(user ? [`User=${user}`] : []),
      `WorkingDirectory=${systemdQuote(cwd)}`,
      `EnvironmentFile=-${systemdQuote(envFile)}`,
      ...(m.network ? [`LoadCredential=rmq-token:${systemdQuote(tokenCredential)}`] : []),
      `ExecStart=${all.map(systemdQuote).join(' ')}`,
      // Resident: back after any exit (the MQTT broker restarted, a crash); 78 is a configuration to fix first.
      ...(m.mode === 'resident'
        ? ['Restart=always', 'RestartSec=2s', 'RestartPreventExitStatus=78']
        : ['TimeoutStartSec=15min']),
      `SyslogIdentifier=${unit}`,
      '',
      ...(m.mode === 'resident' ? ['[Install]', 'WantedBy=multi-user.target', ''] : []),
    ].join('\n')
    units.push({ name: `${unit}.service`, text: service })
    if (m.mode === 'timer') {
      const period = jobs[0].systemdIntervalMs
      units.push({
        name: `${unit}.timer`,
        text: [
          '[Unit]',
          `Description=Run ${unit}.service every ${formatDuration(period)}`,
          '',
          '[Timer]',
          `OnCalendar=${jobs[0].onCalendar}`,
          'Persistent=true',
          `AccuracySec=${period < MINUTE ? '1s' : '1min'}`,
          '',
          '[Install]',
          'WantedBy=timers.target',
          '',
        ].join('\n'),
      })
    }
  }
  notes.push(
    `systemd: put this node's token in ${tokenCredential} (owned by root, chmod 600; an empty file when the broker ` +
      `needs no token): the sync service gets it as the credential rmq-token (LoadCredential=), so the token is in ` +
      `no config file and no environment; the unit does not start without that file`,
  )
  return { cwd, node, bin, configFile, jobs, crontab, units, notes }
}

/** A systemd time span: `30s`, `5min`, `1h`. */
function formatSystemdSpan(ms: number): string {
  if (ms % HOUR === 0) return `${ms / HOUR}h`
  if (ms % MINUTE === 0) return `${ms / MINUTE}min`
  if (ms % 1000 === 0) return `${ms / 1000}s`
  return `${ms}ms`
}

/** Write the unit files into `dir` (created when missing); returns the paths written. */
export function writeUnits(plan: SchedulePlan, dir: string): string[] {
  const target = path.resolve(dir)
  try {
    fs.mkdirSync(target, { recursive: true })
    return plan.units.map((u) => {
      const p = path.join(target, u.name)
      fs.writeFileSync(p, u.text)
      return p
    })
  } catch (err) {
    throw new UsageError(`cannot write the systemd units into ${target}: ${(err as Error).message}`, {
      suggestion: 'run as root (sudo) for /etc/systemd/system, or choose a writable --write DIR',
      cause: err,
    })
  }
}
