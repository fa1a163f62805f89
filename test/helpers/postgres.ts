/**
 * A throwaway PostgreSQL cluster for tests: initdb into a temp dir, listen on
 * 127.0.0.1 on a free port (unix socket in the same temp dir), fsync on.
 * PostgreSQL refuses to run as root, so under root the server runs as the
 * `postgres` system user (the temp dir is handed to it).
 *
 *   const pg = postgresAvailability()
 *   describe.skipIf(!pg.ok)('...', () => {
 *     let cluster: PgCluster
 *     beforeAll(async () => (cluster = await startPgCluster()))
 *     afterAll(() => cluster?.stop())
 *     it('...', async () => { const db = await cluster.createDatabase(); ... await db.drop() })
 *   })
 *
 * One cluster per test file, a fresh database per test. Where PostgreSQL
 * cannot be started the reason is printed (console.warn), never skipped silently.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { MIGRATIONS } from '../../src/broker/store/postgres-schema.js'

export interface PgAvailability {
  ok: boolean
  /** Why PostgreSQL cannot be started here (when !ok). */
  reason: string
  bin: string
}

export interface PgDatabase {
  name: string
  url: string
  drop(): Promise<void>
}

export interface PgCluster {
  port: number
  dir: string
  /** Superuser URL of the `postgres` maintenance database. */
  adminUrl: string
  urlFor(database: string): string
  /** A new empty database, dropped by `drop()`. */
  createDatabase(prefix?: string): Promise<PgDatabase>
  /** Run SQL as superuser in the maintenance database. */
  admin(sql: string): Promise<void>
  /** The rows of one query, as superuser in the maintenance database. */
  rows<T = Record<string, unknown>>(sql: string): Promise<T[]>
  /**
   * A streaming-replication standby of this cluster: `pg_basebackup -R`
   * (primary_conninfo and standby.signal written), started on its own port.
   */
  startStandby(): Promise<PgCluster>
  /** SIGKILL the postmaster (a crashed database host); its backends exit on their own. */
  killPostmaster(): Promise<void>
  /** `pg_ctl promote -w`: a standby becomes a primary. */
  promote(): void
  stop(): Promise<void>
}

const SUPERUSER = 'postgres'

function pgBinDir(): string | undefined {
  if (process.env.PG_BIN && fs.existsSync(path.join(process.env.PG_BIN, 'initdb'))) return process.env.PG_BIN
  const base = '/usr/lib/postgresql'
  if (!fs.existsSync(base)) return undefined
  const versions = fs
    .readdirSync(base)
    .filter((v) => fs.existsSync(path.join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a))
  return versions.length ? path.join(base, versions[0], 'bin') : undefined
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0

function systemUser(name: string): { uid: number; gid: number } | undefined {
  const r = spawnSync('id', ['-u', name], { encoding: 'utf8' })
  const g = spawnSync('id', ['-g', name], { encoding: 'utf8' })
  if (r.status !== 0 || g.status !== 0) return undefined
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) }
}

let cached: PgAvailability | undefined

/** Whether a private cluster can be started on this machine, and why not. */
export function postgresAvailability(): PgAvailability {
  if (cached) return cached
  const bin = pgBinDir()
  if (!bin)
    cached = {
      ok: false,
      bin: '',
      reason:
        'PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, PG_BIN unset): ' +
        'install the Debian package `postgresql`',
    }
  else if (isRoot() && !systemUser('postgres'))
    cached = {
      ok: false,
      bin,
      reason: 'running as root and there is no `postgres` system user to run the server as',
    }
  else cached = { ok: true, bin, reason: '' }
  if (!cached.ok) console.warn(`PostgreSQL tests skipped: ${cached.reason}`)
  return cached
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
  })
}

/** Run a server binary, as the `postgres` user when we are root. */
function runPg(bin: string, tool: string, args: string[]): string {
  const exe = path.join(bin, tool)
  const [cmd, argv] = isRoot() ? ['runuser', ['-u', 'postgres', '--', exe, ...args]] : [exe, args]
  try {
    return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 })
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string }
    throw new Error(`${tool} failed: ${e.stderr || e.stdout || e.message}`, { cause: err })
  }
}

async function adminRows<T>(url: string, sql: string): Promise<T[]> {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query(sql)).rows as T[]
  } finally {
    await client.end()
  }
}

const adminQuery = async (url: string, sql: string) => void (await adminRows(url, sql))

let dbCounter = 0

/** Clusters still running: stopped at exit even when a test run ends abruptly (timeout, error). */
const live = new Set<() => void>()
process.once('exit', () => {
  for (const stop of live) stop()
})

/** initdb + pg_ctl start a private cluster on 127.0.0.1 (WAL senders on: it can have standbys). */
/** A database's schema as a broker of schema `version` left it: migrations 1..version applied and recorded. */
export async function migrateTo(
  c: { query(sql: string, values?: unknown[]): Promise<unknown> },
  version: number,
): Promise<void> {
  await c.query(
    'CREATE TABLE rmq_schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
  )
  for (let v = 1; v <= version; v++) {
    await c.query(MIGRATIONS[v - 1])
    await c.query('INSERT INTO rmq_schema_version (version) VALUES ($1)', [v])
  }
}

export async function startPgCluster(): Promise<PgCluster> {
  return startCluster((avail, data) => {
    runPg(avail.bin, 'initdb', [
      '-D',
      data,
      '-U',
      SUPERUSER,
      '--auth=trust',
      '--encoding=UTF8',
      '--locale=C',
      '--no-instructions',
    ])
    // Streaming replication from 127.0.0.1 (initdb's default pg_hba has it; made sure of here).
    const hba = path.join(data, 'pg_hba.conf')
    if (!/^host\s+replication\s+all\s+127\.0\.0\.1\/32/m.test(fs.readFileSync(hba, 'utf8')))
      fs.appendFileSync(hba, 'host replication all 127.0.0.1/32 trust\n')
  })
}

/** Make the data directory (initdb, or pg_basebackup), then start a server on it. */
async function startCluster(makeData: (avail: PgAvailability, data: string) => void): Promise<PgCluster> {
  const avail = postgresAvailability()
  if (!avail.ok) throw new Error(`cannot start PostgreSQL: ${avail.reason}`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rmq-pg-'))
  const data = path.join(dir, 'data')
  if (isRoot()) {
    const u = systemUser('postgres')!
    fs.chownSync(dir, u.uid, u.gid)
  }
  const log = path.join(dir, 'server.log')
  let started = false
  const stopSync = () => {
    live.delete(stopSync)
    if (started) {
      started = false
      try {
        runPg(avail.bin, 'pg_ctl', ['stop', '-D', data, '-m', 'immediate', '-w'])
      } catch {
        // already gone
      }
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
  live.add(stopSync)
  const stop = async () => stopSync()
  try {
    makeData(avail, data)
    let port = 0
    for (let attempt = 0; ; attempt++) {
      port = await freePort()
      const opts = [
        `-p ${port}`,
        '-c listen_addresses=127.0.0.1',
        `-c unix_socket_directories=${dir}`,
        '-c fsync=on',
        '-c synchronous_commit=on',
        '-c max_connections=200',
        '-c shared_buffers=32MB',
        '-c wal_level=replica',
        '-c max_wal_senders=5',
        '-c hot_standby=on',
      ].join(' ')
      try {
        runPg(avail.bin, 'pg_ctl', ['start', '-D', data, '-w', '-t', '60', '-l', log, '-o', opts])
        started = true
        break
      } catch (err) {
        // Another process may have taken the port between the probe and the start.
        if (attempt >= 2) {
          const tail = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').slice(-2000) : ''
          throw new Error(`${(err as Error).message}\n${tail}`, { cause: err })
        }
      }
    }
    const urlFor = (database: string) => `postgres://${SUPERUSER}@127.0.0.1:${port}/${database}`
    const adminUrl = urlFor('postgres')
    return {
      port,
      dir,
      adminUrl,
      urlFor,
      admin: (sql) => adminQuery(adminUrl, sql),
      rows: <T>(sql: string) => adminRows<T>(adminUrl, sql),
      startStandby: () =>
        startCluster((_, standbyData) =>
          runPg(avail.bin, 'pg_basebackup', [
            '-h',
            '127.0.0.1',
            '-p',
            String(port),
            '-U',
            SUPERUSER,
            '-D',
            standbyData,
            '-R',
            '-X',
            'stream',
            '-c',
            'fast',
          ]),
        ),
      async killPostmaster() {
        const pid = Number(fs.readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0])
        process.kill(pid, 'SIGKILL')
        // Bounded: the postmaster is gone at once; its port is then free.
        for (let i = 0; i < 100; i++) {
          try {
            process.kill(pid, 0)
          } catch {
            return
          }
          await new Promise((r) => setTimeout(r, 50))
        }
        throw new Error(`postmaster ${pid} still alive after SIGKILL`)
      },
      promote: () => void runPg(avail.bin, 'pg_ctl', ['promote', '-D', data, '-w', '-t', '60']),
      async createDatabase(prefix = 'rmq_test') {
        const name = `${prefix}_${process.pid}_${++dbCounter}`
        await adminQuery(adminUrl, `CREATE DATABASE ${name}`)
        return {
          name,
          url: urlFor(name),
          drop: () => adminQuery(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
        }
      },
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}
