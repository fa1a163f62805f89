import { describe, expect, it } from 'vitest'
import { parse } from 'pg-connection-string'
import { describeTargets, parsePostgresUrl } from '../../src/broker/store/postgres-hosts.js'
import { ConfigError } from '../../src/shared/errors.js'

/** What node-postgres makes of one host's connection string. */
const driverSees = (url: string) => {
  const c = parse(url)
  return { host: c.host, port: c.port, user: c.user, password: c.password, database: c.database }
}

describe('parsePostgresUrl', () => {
  it('splits a multi-host URL into one driver URL per host, in order, defaulting to read-write', () => {
    const t = parsePostgresUrl('postgres://u:p@h1:5432,h2:5433/rmq?target_session_attrs=read-write')
    expect(t.targetSessionAttrs).toBe('read-write')
    expect(t.failover).toBe(true)
    expect(t.hosts.map((h) => [h.host, h.port, h.label])).toEqual([
      ['h1', 5432, 'h1:5432'],
      ['h2', 5433, 'h2:5433'],
    ])
    expect(t.hosts.map((h) => driverSees(h.url))).toEqual([
      { host: 'h1', port: '5432', user: 'u', password: 'p', database: 'rmq' },
      { host: 'h2', port: '5433', user: 'u', password: 'p', database: 'rmq' },
    ])
    // target_session_attrs is ours: the driver never sees it.
    for (const h of t.hosts) expect(h.url).not.toContain('target_session_attrs')
    expect(parsePostgresUrl('postgres://h1,h2/rmq').targetSessionAttrs).toBe('read-write')
    expect(describeTargets(t)).toBe('h1:5432,h2:5433/rmq')
  })

  it('accepts primary and any; a single host defaults to any and is used as written', () => {
    expect(parsePostgresUrl('postgres://a,b/db?target_session_attrs=primary').targetSessionAttrs).toBe(
      'primary',
    )
    const any = parsePostgresUrl('postgres://a,b/db?target_session_attrs=any')
    expect([any.targetSessionAttrs, any.failover]).toEqual(['any', true])
    const url = 'postgresql://rmq:secret@db.example:6432/rmq?sslmode=require'
    const one = parsePostgresUrl(url)
    expect([one.targetSessionAttrs, one.failover, one.hosts.length]).toEqual(['any', false, 1])
    expect(one.hosts[0].url).toBe(url)
    const rw = parsePostgresUrl('postgres://db/rmq?target_session_attrs=read-write')
    expect([rw.failover, rw.hosts[0].url]).toEqual([true, 'postgres://db:5432/rmq'])
  })

  it('defaults ports to 5432 and reads IPv6 addresses in brackets', () => {
    const t = parsePostgresUrl('postgres://u@[::1]:5434,[fe80::1%25eth0],10.0.0.2,db/rmq')
    expect(t.hosts.map((h) => [h.host, h.port, h.label])).toEqual([
      ['::1', 5434, '[::1]:5434'],
      ['fe80::1%25eth0', 5432, '[fe80::1%25eth0]:5432'],
      ['10.0.0.2', 5432, '10.0.0.2:5432'],
      ['db', 5432, 'db:5432'],
    ])
    expect(driverSees(t.hosts[0].url)).toMatchObject({
      host: '::1',
      port: '5434',
      user: 'u',
      database: 'rmq',
    })
  })

  it('decodes percent-encoded user and password and re-encodes them for each host', () => {
    const t = parsePostgresUrl('postgres://r%40mq:p%3Aa%2Fss%40w%25rd@h1,h2:5433/my%20db')
    expect([t.user, t.password, t.database]).toEqual(['r@mq', 'p:a/ss@w%rd', 'my db'])
    for (const h of t.hosts)
      expect(driverSees(h.url)).toMatchObject({ user: 'r@mq', password: 'p:a/ss@w%rd', database: 'my db' })
  })

  it('passes the other query parameters through to every host', () => {
    const t = parsePostgresUrl(
      'postgres://u@h1,h2/rmq?sslmode=verify-full&target_session_attrs=read-write&application_name=a%20b',
    )
    expect(t.params).toEqual([
      ['sslmode', 'verify-full'],
      ['application_name', 'a b'],
    ])
    for (const h of t.hosts) {
      const c = parse(h.url) as Record<string, unknown>
      expect([c.sslmode, c.application_name]).toEqual(['verify-full', 'a b'])
    }
  })

  it('leaves a URL without a host to the driver defaults', () => {
    const t = parsePostgresUrl('postgres:///rmq')
    expect([t.failover, t.hosts[0].url, t.database]).toEqual([false, 'postgres:///rmq', 'rmq'])
  })

  it.each([
    ['mysql://h/db', 'must start with postgres://'],
    ['h1:5432/rmq', 'must start with postgres://'],
    ['postgres://h1,,h2/rmq', 'a host is empty'],
    ['postgres://h1,/rmq', 'a host is empty'],
    ['postgres://h1:99999/rmq', 'port "99999"'],
    ['postgres://h1:abc/rmq', 'port "abc"'],
    ['postgres://::1/rmq', 'in brackets'],
    ['postgres://[::1/rmq', 'no closing bracket'],
    ['postgres://h1,h2/rmq?target_session_attrs=standby', 'target_session_attrs=standby'],
    ['postgres://u:p%zz@h1/rmq', 'password has a malformed percent-encoding'],
    ['postgres://u:p#w@h1/rmq', '"#"'],
  ])('%s -> ConfigError naming broker.postgres.url (%s)', (url, why) => {
    let err: unknown
    try {
      parsePostgresUrl(url)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    const e = err as ConfigError
    expect(e.message).toContain('broker.postgres.url')
    expect(e.message).toContain(why)
    expect(e.suggestion).toContain('postgres://USER:PASSWORD@HOST')
    // Never the password in the message.
    if (url.includes('u:p')) expect(e.message).not.toContain('p%zz')
  })
})
