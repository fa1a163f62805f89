/**
 * BrokerStore conformance, credentials: token hashes by name with a role,
 * grants, an expiry, and rotation (the rotated-out hash found as `previous`
 * until replaced or revoked). Run by brokerStoreConformance.
 */
import { expect, it } from 'vitest'
import type { NewTokenRecord } from '../broker/store/types.js'
import { T0, type StoreHandle } from './broker-store-fixtures.js'

export function tokenConformance(handle: () => StoreHandle): void {
  const store = () => handle().store

  it('stores token hashes: put, find, touch, list, revoke', async () => {
    const nodeToken = (name: string): NewTokenRecord => ({
      name,
      role: 'node',
      topics: [],
      groups: [],
      expiresAt: null,
    })
    await store().putToken(nodeToken('gw-1'), 'h1', T0)
    await store().putToken(nodeToken('gw-2'), 'h2', T0 + 1)
    expect(await store().findToken('h1')).toEqual({
      name: 'gw-1',
      role: 'node',
      topics: [],
      groups: [],
      createdAt: T0,
      lastUsedAt: null,
      expiresAt: null,
      previousUntil: null,
      previous: false,
    })
    expect(await store().findToken('nope')).toBeUndefined()
    await store().touchToken('gw-1', T0 + 5)
    expect((await store().findToken('h1'))!.lastUsedAt).toBe(T0 + 5)
    await store().putToken(nodeToken('gw-1'), 'h1b', T0 + 9)
    expect(await store().findToken('h1')).toBeUndefined()
    expect((await store().listTokens()).map((t) => t.name)).toEqual(['gw-1', 'gw-2'])
    expect(await store().revokeToken('gw-2')).toBe(true)
    expect(await store().revokeToken('gw-2')).toBe(false)
    expect(await store().findToken('h2')).toBeUndefined()
  })

  it('stores a credential role, grants and expiry, and rotates it with a grace deadline', async () => {
    await store().putToken(
      {
        name: 'etl',
        role: 'consumer',
        topics: ['plant/7/#', 'alarms/#'],
        groups: ['billing'],
        expiresAt: T0 + 99,
      },
      'c1',
      T0,
    )
    await store().putToken(
      { name: 'ops', role: 'monitor', topics: [], groups: [], expiresAt: null },
      'm1',
      T0,
    )
    expect(await store().findToken('c1')).toMatchObject({
      name: 'etl',
      role: 'consumer',
      topics: ['plant/7/#', 'alarms/#'],
      groups: ['billing'],
      expiresAt: T0 + 99,
      previous: false,
    })
    expect(await store().rotateToken('etl', 'c2', T0 + 50)).toBe(true)
    expect(await store().rotateToken('nobody', 'x', T0 + 50)).toBe(false)
    // Both the new and the rotated-out digest find it, telling which one matched.
    expect(await store().findToken('c2')).toMatchObject({
      name: 'etl',
      previous: false,
      previousUntil: T0 + 50,
    })
    expect(await store().findToken('c1')).toMatchObject({
      name: 'etl',
      previous: true,
      previousUntil: T0 + 50,
    })
    expect((await store().listTokens()).map((t) => [t.name, t.role])).toEqual([
      ['etl', 'consumer'],
      ['ops', 'monitor'],
    ])
    // A second rotation keeps only the one before it.
    expect(await store().rotateToken('etl', 'c3', T0 + 70)).toBe(true)
    expect(await store().findToken('c1')).toBeUndefined()
    expect(await store().findToken('c2')).toMatchObject({ previous: true, previousUntil: T0 + 70 })
    // Replacing a credential ends its rotated-out token; revoking removes both.
    await store().putToken(
      { name: 'etl', role: 'consumer', topics: ['a/#'], groups: [], expiresAt: null },
      'c4',
      T0,
    )
    expect(await store().findToken('c2')).toBeUndefined()
    expect(await store().findToken('c4')).toMatchObject({ topics: ['a/#'], groups: [], previousUntil: null })
    expect(await store().rotateToken('etl', 'c5', T0 + 80)).toBe(true)
    expect(await store().revokeToken('etl')).toBe(true)
    expect(await store().findToken('c4')).toBeUndefined()
    expect(await store().findToken('c5')).toBeUndefined()
  })
}
