/**
 * The PostgreSQL store's applied migrations are never edited
 * (postgres-schema.ts): a database records only how many it has run, so an
 * edited one would silently never reach the databases that ran it. Their
 * texts are pinned here by digest; a change to the schema or to the release
 * pass is a new migration, appended, with its digest added below.
 * (Migration 12 was changed once, the same day, before any stop landed it.)
 */
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { MIGRATIONS } from '../../src/broker/store/postgres-schema.js'

/** sha256 of each migration's text, first 16 hex digits, in order (the test prints new ones to add). */
const APPLIED: string[] = [
  '5f8e0fe3dca8ec86',
  'fe895a89b3bda862',
  '357d4827095ae843',
  '6ffc36e948331ac9',
  '2573bf80ae3aed41',
  'b153024bf6fa76f5',
  '993ccc7a4869df88',
  'f2e254dabc11f122',
  '53dc09326ad08b28',
  'f45bc98a348f4db4',
  'afdbbcbe28b8d8a1', // 11: the release pass from batch offsets
  '1161613db940dfc7', // 12: the watermark stops below batches above the horizon (rmq_batches.min_ts)
]

describe('PostgreSQL migrations', () => {
  it('every applied migration keeps its text; new ones are appended', () => {
    const digests = MIGRATIONS.map((m) => createHash('sha256').update(m).digest('hex').slice(0, 16))
    expect(
      digests.slice(0, APPLIED.length),
      'an applied migration was edited: append a new one instead',
    ).toEqual(APPLIED)
    expect(digests.length, `digests to pin: ${JSON.stringify(digests.slice(APPLIED.length))}`).toBe(
      APPLIED.length,
    )
  })
})
