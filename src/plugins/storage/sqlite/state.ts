/**
 * The small tables beside the queue: state keys (epoch, sync.last, backoff,
 * lease owners), counters (sync statistics) and leases.
 */
import { StorageError } from '../../../shared/errors.js'
import type { SqliteConnection } from './connection.js'

export async function getState(c: SqliteConnection, key: string): Promise<string | undefined> {
  const r = c.guard(() => c.stmt('SELECT value FROM state WHERE key = ?').get(key)) as
    { value: string } | undefined
  return r?.value
}

export async function setState(c: SqliteConnection, key: string, value: string | undefined): Promise<void> {
  if (key === 'epoch') throw new StorageError('the outbox epoch is fixed when the store is created')
  c.write(() => setStateIn(c, key, value))
}

export function setStateIn(c: SqliteConnection, key: string, value: string | undefined): void {
  if (key === 'epoch') throw new StorageError('the outbox epoch is fixed when the store is created')
  if (value === undefined) c.stmt('DELETE FROM state WHERE key = ?').run(key)
  else
    c.stmt(
      'INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    ).run(key, value)
}

export async function addCounters(c: SqliteConnection, deltas: Record<string, number>): Promise<void> {
  if (Object.keys(deltas).length === 0) return
  c.write(() => addCountersIn(c, deltas))
}

export function addCountersIn(c: SqliteConnection, deltas: Record<string, number>): void {
  const up = c.stmt(
    'INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value',
  )
  for (const [k, v] of Object.entries(deltas)) up.run(k, v)
}

export async function getCounters(c: SqliteConnection): Promise<Record<string, number>> {
  const rows = c.guard(() => c.stmt('SELECT name, value FROM counters').all()) as Array<{
    name: string
    value: number
  }>
  return Object.fromEntries(rows.map((r) => [r.name, r.value]))
}

export async function acquireLease(
  c: SqliteConnection,
  name: string,
  owner: string,
  ttlMs: number,
  now: number,
): Promise<boolean> {
  return c.write(() => {
    const r = c.stmt('SELECT owner, expires_at FROM leases WHERE name = ?').get(name) as
      { owner: string; expires_at: number } | undefined
    if (r && r.owner !== owner && r.expires_at > now) return false
    c.stmt(
      `INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at`,
    ).run(name, owner, now + ttlMs)
    return true
  })
}

export async function releaseLease(c: SqliteConnection, name: string, owner: string): Promise<void> {
  c.write(() => c.stmt('DELETE FROM leases WHERE name = ? AND owner = ?').run(name, owner))
}
