/**
 * `rmq doctor`: every check an operator runs by hand when a gateway
 * misbehaves, in one report (docs/operations.md "Checking a node"): the
 * outbox's integrity, schema, size and permissions, free disk, the node id,
 * the clock, the broker, the token, the last sync and the backlog, and the
 * schedule. Each check is ok, a warning or an error, with the fix.
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { edgeNow } from '../shared/clock.js'
import { ExitCode } from '../shared/errors.js'
import { formatAge, formatBytes } from '../shared/units.js'
import type { LoadedConfig } from './config/load.js'
import { brokerRequest } from './http-client.js'
import { NODE_ID_STATE } from './identity.js'
import { tlsFromConfig } from './tls.js'
import { openOutbox } from './outbox.js'
import { readSyncStats } from './sync.js'

export type CheckState = 'ok' | 'warning' | 'error'

export interface DoctorCheck {
  name: string
  state: CheckState
  detail: string
  /** What to do about a warning or an error. */
  fix?: string
  /** The exit code an error of this check gives (sysexits, README "Exit codes"). */
  exitCode?: number
}

export interface DoctorReport {
  checks: DoctorCheck[]
  warnings: number
  errors: number
  /** 0 all passed (or warnings only); otherwise the first error's code. */
  exitCode: number
}

export interface DoctorOptions {
  /** integrity_check instead of quick_check. */
  full?: boolean
  /** Skip the broker and token checks (offline). */
  offline?: boolean
  now?: number
}

/** A clock before this is an unset real-time clock (boards without a battery boot in 1970). */
const SANE_CLOCK = Date.UTC(2020, 0, 1)
const LOW_DISK_BYTES = 64 * 1024 * 1024

export async function runDoctor(loaded: LoadedConfig, o: DoctorOptions = {}): Promise<DoctorReport> {
  const { config, cwd } = loaded
  const now = o.now ?? edgeNow()
  const checks: DoctorCheck[] = []
  const add = (c: DoctorCheck) => checks.push(c)

  add({
    name: 'config',
    state: 'ok',
    detail: loaded.filePath ? `valid (${loaded.filePath})` : 'valid (defaults, .env and environment)',
  })
  add(
    now < SANE_CLOCK
      ? {
          name: 'clock',
          state: 'warning',
          detail: `the clock says ${new Date(now).toISOString()}: an unset real-time clock`,
          fix: 'set the time (NTP, or an RTC battery); timestamps taken now will be wrong and arrive late',
        }
      : { name: 'clock', state: 'ok', detail: new Date(now).toISOString() },
  )

  const file = config.storage.driver === 'memory' ? null : path.resolve(cwd, config.storage.path)
  const builtin = config.storage.driver === 'sqlite'
  if (builtin && file && !fs.existsSync(file)) {
    add({ name: 'outbox', state: 'ok', detail: `none yet at ${file} (the first publish creates it)` })
  } else {
    let driver: Awaited<ReturnType<typeof openOutbox>> | undefined
    try {
      driver = await openOutbox(config, cwd, { readOnly: true })
    } catch (err) {
      add({
        name: 'outbox',
        state: 'error',
        detail: (err as Error).message,
        fix:
          (err as { exitCode?: number }).exitCode === ExitCode.corrupt
            ? REPAIR_FIX
            : 'move the damaged file aside (keep it for recovery) and point storage.path at a new file',
        exitCode: (err as { exitCode?: number }).exitCode ?? ExitCode.ioError,
      })
    }
    if (driver) {
      try {
        await outboxChecks(driver, file, config.nodeId, now, !!o.full, add)
      } catch (err) {
        // A check that reads a damaged page (stats, state): the report still comes out whole.
        const exitCode = (err as { exitCode?: number }).exitCode ?? ExitCode.ioError
        add({
          name: 'outbox',
          state: 'error',
          detail: (err as Error).message,
          fix: exitCode === ExitCode.corrupt ? REPAIR_FIX : 'check the outbox file and the disk',
          exitCode,
        })
      } finally {
        await driver.close()
      }
    }
  }
  if (file) diskCheck(path.dirname(file), add)
  if (!o.offline) await brokerChecks(loaded, add)
  scheduleCheck(add)

  const errors = checks.filter((c) => c.state === 'error')
  return {
    checks,
    warnings: checks.filter((c) => c.state === 'warning').length,
    errors: errors.length,
    exitCode: errors[0]?.exitCode ?? 0,
  }
}

const REPAIR_FIX =
  'stop `rmq sync --watch` and the timers, then run `rmq doctor --repair` (copies every readable message ' +
  'into a fresh outbox, keeps the damaged file)'

async function outboxChecks(
  driver: Awaited<ReturnType<typeof openOutbox>>,
  file: string | null,
  nodeId: string,
  now: number,
  full: boolean,
  add: (c: DoctorCheck) => void,
): Promise<void> {
  let integrity: Awaited<ReturnType<NonNullable<typeof driver.checkIntegrity>>> | undefined
  try {
    integrity = await driver.checkIntegrity?.(full)
  } catch (err) {
    // The check itself hit a damaged page (SQLITE_CORRUPT): the same verdict as a failed check.
    integrity = { problems: [(err as Error).message] }
  }
  if (!integrity)
    add({ name: 'integrity', state: 'ok', detail: `the ${driver.name} driver has no integrity check` })
  else if (integrity.problems.length > 0)
    add({
      name: 'integrity',
      state: 'error',
      detail: `${full ? 'integrity_check' : 'quick_check'}: ${integrity.problems.slice(0, 3).join('; ')}`,
      fix: REPAIR_FIX,
      exitCode: ExitCode.corrupt,
    })
  else
    add({
      name: 'integrity',
      state: 'ok',
      detail:
        `${full ? 'integrity_check' : 'quick_check'} ok, schema ${integrity.schemaVersion ?? '?'}` +
        (integrity.currentSchemaVersion !== undefined &&
        integrity.schemaVersion !== integrity.currentSchemaVersion
          ? ` (this rmq writes ${integrity.currentSchemaVersion}; the next write upgrades it)`
          : ''),
    })
  const s = await driver.stats(now)
  const used = s.maxBytes > 0 ? s.totalBytes / s.maxBytes : 0
  const wal = file && fs.existsSync(file + '-wal') ? fs.statSync(file + '-wal').size : 0
  add({
    name: 'size',
    state: used > 0.9 ? 'warning' : 'ok',
    detail:
      `${formatBytes(s.totalBytes)} of ${formatBytes(s.maxBytes)} (${Math.round(used * 100)}%)` +
      (s.fileBytes !== null ? `, file ${formatBytes(s.fileBytes)}` : '') +
      (wal ? `, WAL ${formatBytes(wal)}` : ''),
    ...(used > 0.9
      ? { fix: 'the outbox is nearly full: sync (is the broker reachable?), or raise storage.maxBytes' }
      : {}),
  })
  if (file) {
    const mode = fs.statSync(file).mode & 0o777
    add(
      mode & 0o077
        ? {
            name: 'permissions',
            state: 'warning',
            detail: `${file} is ${mode.toString(8).padStart(3, '0')}: readable by others (it holds payloads)`,
            fix: `chmod 600 ${file}*`,
          }
        : { name: 'permissions', state: 'ok', detail: `${file} is ${mode.toString(8).padStart(3, '0')}` },
    )
  }
  const recorded = await driver.getState(NODE_ID_STATE)
  add(
    recorded !== undefined && recorded !== nodeId
      ? {
          name: 'node id',
          state: 'error',
          detail: `nodeId is ${nodeId}, but the outbox stores for ${recorded}: sync refuses to send it`,
          fix: `set nodeId back to ${recorded}, or run \`rmq outbox rename-node ${nodeId}\``,
          exitCode: ExitCode.config,
        }
      : { name: 'node id', state: 'ok', detail: nodeId },
  )
  const sync = await readSyncStats(driver)
  if (sync.lastSuccessAt !== null && sync.lastSuccessAt > now + 60_000)
    add({
      name: 'clock',
      state: 'warning',
      detail: `the clock is behind the last successful sync (${new Date(sync.lastSuccessAt).toISOString()})`,
      fix: 'the clock stepped back: check NTP; messages stamped now arrive late',
    })
  const backlogAge = s.oldestPendingTs === null ? null : Math.max(0, now - s.oldestPendingTs)
  const stale = sync.lastSuccessAt === null ? null : now - sync.lastSuccessAt
  add({
    name: 'sync',
    state: sync.backoff || (backlogAge !== null && backlogAge > 3_600_000) ? 'warning' : 'ok',
    detail:
      (sync.lastSuccessAt === null ? 'never synced' : `last success ${formatAge(stale!)} ago`) +
      `; ${s.pending} pending` +
      (backlogAge !== null ? `, the oldest ${formatAge(backlogAge)} old` : '') +
      (sync.backoff ? `; backing off after ${sync.backoff.failures} failure(s): ${sync.backoff.reason}` : ''),
    ...(sync.backoff || (backlogAge !== null && backlogAge > 3_600_000)
      ? { fix: 'see the broker check below; `rmq sync --force` tries now' }
      : {}),
  })
}

function diskCheck(dir: string, add: (c: DoctorCheck) => void): void {
  try {
    const st = fs.statfsSync(fs.existsSync(dir) ? dir : path.dirname(dir))
    const free = st.bavail * st.bsize
    add({
      name: 'disk',
      state: free < LOW_DISK_BYTES ? 'warning' : 'ok',
      detail: `${formatBytes(free)} free`,
      ...(free < LOW_DISK_BYTES ? { fix: 'free space where the outbox lives, or move storage.path' } : {}),
    })
  } catch (err) {
    add({ name: 'disk', state: 'warning', detail: `cannot read free space: ${(err as Error).message}` })
  }
}

async function brokerChecks(loaded: LoadedConfig, add: (c: DoctorCheck) => void): Promise<void> {
  const { config } = loaded
  let tls
  try {
    tls = tlsFromConfig(config, loaded.cwd)
  } catch (err) {
    add({ name: 'tls', state: 'error', detail: (err as Error).message, exitCode: ExitCode.config })
    return
  }
  try {
    const health = await brokerRequest(config.brokerUrl, 'GET', 'healthz', { timeoutMs: 5000, tls })
    if (health.status !== 200) throw new Error(`/healthz answered ${health.status}`)
    add({ name: 'broker', state: 'ok', detail: `${config.brokerUrl} answers` })
  } catch (err) {
    add({
      name: 'broker',
      state: 'error',
      detail: `${config.brokerUrl}: ${(err as Error).message}`,
      fix: 'check brokerUrl (RMQ_BROKER_URL), the network, and that `rmq broker start` runs there',
      exitCode: ExitCode.unavailable,
    })
    return
  }
  try {
    const res = await brokerRequest(
      config.brokerUrl,
      'GET',
      `v1/nodes/${encodeURIComponent(config.nodeId)}`,
      {
        token: config.token || undefined,
        timeoutMs: 5000,
        tls,
      },
    )
    add(
      res.status === 401 || res.status === 403
        ? {
            name: 'token',
            state: 'error',
            detail: `the broker refuses the token (${res.status})`,
            fix: `set token (RMQ_TOKEN) to one made with \`rmq broker token create ${config.nodeId}\``,
            exitCode: ExitCode.config,
          }
        : { name: 'token', state: 'ok', detail: config.token ? 'accepted' : 'none needed' },
    )
  } catch (err) {
    add({ name: 'token', state: 'warning', detail: `not checked: ${(err as Error).message}` })
  }
}

/** Whether `rmq schedule` units are installed where this user can see them (systemd user/system, crontab). */
function scheduleCheck(add: (c: DoctorCheck) => void): void {
  const run = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 3000 })
    } catch {
      return ''
    }
  }
  const timers =
    run('systemctl', ['list-timers', '--all', '--no-legend']) +
    run('systemctl', ['--user', 'list-timers', '--all', '--no-legend'])
  const cron = run('crontab', ['-l'])
  const found = /rmq[\w-]*\.timer/.test(timers)
    ? 'systemd timers'
    : /\brmq (sync|drain)\b/.test(cron)
      ? 'crontab'
      : null
  add(
    found
      ? { name: 'schedule', state: 'ok', detail: `sync scheduled by ${found}` }
      : {
          name: 'schedule',
          state: 'warning',
          detail: 'no systemd timer or crontab line running `rmq sync` found',
          fix: 'install one with `rmq schedule --systemd` or `rmq schedule --cron` (or run `rmq sync --watch`)',
        },
  )
}
