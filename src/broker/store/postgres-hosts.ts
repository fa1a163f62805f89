/**
 * `broker.postgres.url` with several hosts, as libpq accepts it:
 *
 *   postgres://user:pass@h1:5432,h2:5433,[::1]:5434/rmq?target_session_attrs=read-write&sslmode=require
 *
 * node-postgres (pg 8) takes one host per connection string, so the URL is
 * split here into one single-host URL per host (same credentials, database
 * and query parameters, target_session_attrs removed: it is ours to honour)
 * and the store picks the host to use (postgres-primary.ts). Pure: no I/O.
 */
import { ConfigError } from '../../shared/errors.js'

export type TargetSessionAttrs = 'any' | 'read-write' | 'primary'

export interface PgHost {
  host: string
  port: number
  /** `host:port`, IPv6 in brackets: for logs and messages (no credentials). */
  label: string
  /** A node-postgres connection string for this host alone. */
  url: string
}

export interface PgTarget {
  hosts: PgHost[]
  user?: string
  password?: string
  database?: string
  /**
   * Which server a connection may use: `any` (the first that answers),
   * `read-write`/`primary` (one not in recovery). libpq's default is `any`;
   * with several hosts ours is `read-write`, since a broker can only ingest
   * on a primary.
   */
  targetSessionAttrs: TargetSessionAttrs
  /** Whether the host list is searched again when the database fails (several hosts, or read-write asked). */
  failover: boolean
  /** The query parameters passed to the driver (sslmode, application_name...). */
  params: Array<[string, string]>
}

const KEY = 'broker.postgres.url'
const DEFAULT_PORT = 5432
const ATTRS: readonly string[] = ['any', 'read-write', 'primary']

function bad(problem: string): ConfigError {
  return new ConfigError(`${KEY} (RMQ_BROKER_POSTGRES_URL) is not a valid PostgreSQL URL: ${problem}`, {
    suggestion:
      'write it as postgres://USER:PASSWORD@HOST[:PORT][,HOST2[:PORT2]...]/DATABASE[?target_session_attrs=read-write], ' +
      'IPv6 addresses in [brackets], special characters in the user or password percent-encoded (@ as %40)',
  })
}

function decode(part: string, what: string): string {
  try {
    return decodeURIComponent(part)
  } catch {
    throw bad(`the ${what} has a malformed percent-encoding`)
  }
}

function parseHost(text: string): { host: string; port: number; hostText: string } {
  let host: string
  let portText: string | undefined
  let hostText: string
  if (text.startsWith('[')) {
    const end = text.indexOf(']')
    if (end < 0) throw bad(`the IPv6 address in "${text}" has no closing bracket`)
    host = text.slice(1, end)
    hostText = text.slice(0, end + 1)
    const rest = text.slice(end + 1)
    if (rest !== '' && !rest.startsWith(':')) throw bad(`unexpected "${rest}" after ${hostText}`)
    portText = rest === '' ? undefined : rest.slice(1)
    if (!/^[0-9a-f:.]+(%[\w.-]+)?$/i.test(host)) throw bad(`"${host}" is not an IPv6 address`)
  } else {
    const colon = text.lastIndexOf(':')
    host = colon < 0 ? text : text.slice(0, colon)
    portText = colon < 0 ? undefined : text.slice(colon + 1)
    hostText = host
    if (host.includes(':')) throw bad(`write the IPv6 address "${host}" in brackets: [${host}]`)
  }
  if (host === '') throw bad('a host is empty (two commas, or a comma at either end?)')
  if (/[\s/?#@[\]]/.test(host)) throw bad(`"${host}" is not a host name`)
  let port = DEFAULT_PORT
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535)
      throw bad(`port "${portText}" of ${hostText} is not a number from 1 to 65535`)
    port = Number(portText)
  }
  return { host, port, hostText }
}

/** Parse a (possibly multi-host) PostgreSQL URL; ConfigError naming broker.postgres.url when malformed. */
export function parsePostgresUrl(url: string): PgTarget {
  const scheme = /^(postgres|postgresql):\/\//i.exec(url)
  if (!scheme) throw bad('it must start with postgres:// or postgresql://')
  const rest = url.slice(scheme[0].length)
  const hashAt = rest.indexOf('#')
  if (hashAt >= 0) throw bad('it must not contain "#" (percent-encode it as %23 in a password)')
  const authEnd = rest.search(/[/?]/)
  const authority = authEnd < 0 ? rest : rest.slice(0, authEnd)
  const tail = authEnd < 0 ? '' : rest.slice(authEnd)
  const qAt = tail.indexOf('?')
  const pathText = qAt < 0 ? tail : tail.slice(0, qAt)
  const queryText = qAt < 0 ? '' : tail.slice(qAt + 1)

  const at = authority.lastIndexOf('@')
  const userinfo = at < 0 ? undefined : authority.slice(0, at)
  const hostList = at < 0 ? authority : authority.slice(at + 1)
  let user: string | undefined
  let password: string | undefined
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(':')
    user = decode(colon < 0 ? userinfo : userinfo.slice(0, colon), 'user name') || undefined
    password = colon < 0 ? undefined : decode(userinfo.slice(colon + 1), 'password')
  }

  const database = pathText.length > 1 ? decode(pathText.slice(1), 'database name') : undefined
  if (database?.includes('/')) throw bad(`"${database}" is not a database name`)

  const params: Array<[string, string]> = []
  let attrs: string | undefined
  if (queryText !== '')
    for (const pair of queryText.split('&')) {
      if (pair === '') continue
      const eq = pair.indexOf('=')
      const k = decode(eq < 0 ? pair : pair.slice(0, eq), 'query parameter')
      const v = decode(eq < 0 ? '' : pair.slice(eq + 1).replace(/\+/g, ' '), 'query parameter')
      if (k === 'target_session_attrs') attrs = v
      else params.push([k, v])
    }
  if (attrs !== undefined && !ATTRS.includes(attrs))
    throw bad(`target_session_attrs=${attrs} is not one of ${ATTRS.join(', ')}`)

  if (hostList === '') {
    if (attrs !== undefined) throw bad('target_session_attrs needs at least one host')
    // postgres:///db: no host in the URL, the driver's defaults (PGHOST, localhost) apply.
    return {
      hosts: [{ host: '', port: DEFAULT_PORT, label: 'localhost', url }],
      user,
      password,
      database,
      targetSessionAttrs: 'any',
      failover: false,
      params,
    }
  }
  const parsed = hostList.split(',').map(parseHost)
  const targetSessionAttrs = (attrs ?? (parsed.length > 1 ? 'read-write' : 'any')) as TargetSessionAttrs
  const query = params.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')
  const credentials =
    user === undefined && password === undefined
      ? ''
      : `${encodeURIComponent(user ?? '')}${password === undefined ? '' : `:${encodeURIComponent(password)}`}@`
  const dbPath = database === undefined ? '' : `/${encodeURIComponent(database)}`
  const hosts = parsed.map(({ host, port, hostText }) => {
    const label = `${hostText}:${port}`
    return {
      host,
      port,
      label,
      // One host, nothing of ours in it: the URL as written, so the driver sees exactly what it always did.
      url:
        parsed.length === 1 && attrs === undefined
          ? url
          : `postgres://${credentials}${label}${dbPath}${query ? `?${query}` : ''}`,
    }
  })
  return {
    hosts,
    user,
    password,
    database,
    targetSessionAttrs,
    failover: hosts.length > 1 || targetSessionAttrs !== 'any',
    params,
  }
}

/** host:port[,host:port...]/database, without credentials (for messages and logs). */
export function describeTargets(t: PgTarget): string {
  return `${t.hosts.map((h) => h.label).join(',')}/${t.database ?? ''}`
}
