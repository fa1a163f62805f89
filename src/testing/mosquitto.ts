/**
 * Real Mosquitto brokers for tests and benchmarks of MQTT integrations
 * (Debian's `mosquitto`; rmq's `.ci/run` installs it): a config in a temp dir, a free port on 127.0.0.1, optional users and
 * on-disk persistence. No queue limits: a test's backlog must never be
 * dropped by the broker itself (Mosquitto's default queue is 1,000).
 *
 *   const m = await startMosquitto({ users: { dev: 'secret' } })
 *   ... m.url ... await m.stop()
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

async function freePort(): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address() as net.AddressInfo
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return port
}

export const MOSQUITTO_BIN =
  ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => fs.existsSync(p)) ?? 'mosquitto'

/** Whether Mosquitto can run here, and why not (tests then fail loudly: .ci/run installs it). */
export function mosquittoAvailability(): { ok: boolean; reason: string } {
  const r = spawnSync(MOSQUITTO_BIN, ['-h'], { encoding: 'utf8' })
  if (r.error)
    return {
      ok: false,
      reason: `mosquitto not found (${r.error.message}); apt-get install mosquitto mosquitto-clients`,
    }
  return { ok: true, reason: '' }
}

export interface MosquittoOptions {
  /** user -> password; with users, anonymous clients are refused. */
  users?: Record<string, string>
  /** Keep sessions and queued messages on disk (autosave on every change). */
  persistence?: boolean
  /** Reuse this port (a restart of the same broker). */
  port?: number
  /** Reuse this dir (its persistence file survives a restart). */
  dir?: string
  /** Extra mosquitto.conf lines. */
  extra?: string[]
}

export interface Mosquitto {
  port: number
  url: string
  dir: string
  pid: number
  /** The log so far (connections, refusals), for failure messages. */
  log(): string
  /** SIGTERM and wait (persistence is written). */
  stop(): Promise<void>
  /** SIGKILL and wait. */
  kill(): Promise<void>
  /** Start again on the same port and dir. */
  restart(): Promise<Mosquitto>
}

function waitForPort(
  port: number,
  child: ChildProcess,
  log: () => string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (child.exitCode !== null) return reject(new Error(`mosquitto exited ${child.exitCode}: ${log()}`))
      const s = net.connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve()
      })
      s.once('error', () => {
        s.destroy()
        if (Date.now() > deadline) reject(new Error(`mosquitto did not listen on ${port}: ${log()}`))
        else setTimeout(attempt, 50)
      })
    }
    attempt()
  })
}

export async function startMosquitto(opts: MosquittoOptions = {}): Promise<Mosquitto> {
  // A clear error instead of an unhandled spawn ENOENT when it is not installed.
  const available = mosquittoAvailability()
  if (!available.ok) throw new Error(available.reason)
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-mosquitto-'))
  const port = opts.port ?? (await freePort())
  const lines = [
    `listener ${port} 127.0.0.1`,
    'max_queued_messages 0',
    'max_queued_bytes 0',
    'max_inflight_messages 0',
    'persistent_client_expiration 1d',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    'connection_messages true',
  ]
  if (process.getuid?.() === 0) lines.push('user root')
  if (opts.persistence) lines.push('persistence true', `persistence_location ${dir}/`, 'autosave_interval 1')
  if (opts.users) {
    const pw = path.join(dir, 'passwd')
    fs.writeFileSync(pw, '')
    for (const [user, pass] of Object.entries(opts.users)) {
      const r = spawnSync('mosquitto_passwd', ['-b', pw, user, pass], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`mosquitto_passwd failed: ${r.stderr}`)
    }
    lines.push('allow_anonymous false', `password_file ${pw}`)
  } else lines.push('allow_anonymous true')
  lines.push(...(opts.extra ?? []))
  const conf = path.join(dir, 'mosquitto.conf')
  fs.writeFileSync(conf, lines.join('\n') + '\n')
  const child = spawn(MOSQUITTO_BIN, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
  let output = ''
  child.stderr!.on('data', (d: Buffer) => {
    output = (output + d.toString()).slice(-20_000)
  })
  const log = () => output
  await waitForPort(port, child, log)
  const exited = () =>
    child.exitCode !== null || child.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((r) => child.once('exit', () => r()))
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    await exited()
  }
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    dir,
    pid: child.pid!,
    log,
    stop: () => end('SIGTERM'),
    kill: () => end('SIGKILL'),
    restart: () => startMosquitto({ ...opts, port, dir }),
  }
}
