/**
 * The ingest's array literals (postgres-arrays.ts) read back by a real
 * PostgreSQL as the values they were made from, whatever the text holds.
 */
import pgmod from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { integerArray, textArray } from '../../src/broker/store/postgres-arrays.js'
import { postgresAvailability, startPgCluster, type PgCluster } from '../helpers/postgres.js'

const pg = postgresAvailability()

describe.skipIf(!pg.ok)('postgres array literals', () => {
  let cluster: PgCluster
  let client: pgmod.Client
  beforeAll(async () => {
    cluster = await startPgCluster()
    client = new pgmod.Client({ connectionString: cluster.adminUrl })
    await client.connect()
  })
  afterAll(async () => {
    await client?.end()
    await cluster?.stop()
  })

  it('text: quotes, backslashes, commas, braces, spaces, "NULL", empty and non-ASCII text stay as they were', async () => {
    const values = [
      'plant/line1/temp',
      'a"b',
      'back\\slash',
      '\\"both\\"',
      'x,y',
      '{braces}',
      ' spaced ',
      'NULL',
      '',
      'zaïre/温度/🌡',
      '{"k":"v\\n"}',
      null,
    ]
    const r = await client.query<{ a: (string | null)[] }>('SELECT $1::text[] AS a', [textArray(values)])
    expect(r.rows[0].a).toEqual(values)
  })

  it('integers: seqs and millisecond timestamps up to 2^53 - 1, negatives and NULL', async () => {
    const values = [0, 1, -5, 1_764_000_000_000, Number.MAX_SAFE_INTEGER, null, 42]
    const r = await client.query<{ a: (string | null)[] }>('SELECT $1::bigint[]::text[] AS a', [
      integerArray(values),
    ])
    expect(r.rows[0].a).toEqual(values.map((v) => (v === null ? null : String(v))))
    const empty = await client.query<{ n: number }>('SELECT cardinality($1::bigint[]) AS n', [
      integerArray([]),
    ])
    expect(empty.rows[0].n).toBe(0)
  })
})
