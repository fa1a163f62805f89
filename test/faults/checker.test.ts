/** The checker and the failpoint parser themselves: a checker that cannot fail proves nothing. */
import { describe, expect, it } from 'vitest'
import { parseFailpoints } from '../../src/shared/failpoints.js'
import { checkQueue, violations, type Attempt, type Delivered } from './checker.js'

let pos = 0
const msg = (key: string, over: Partial<Delivered> = {}): Delivered => ({
  node: 'n1',
  epoch: 'e1',
  seq: ++pos,
  ts: 1000 + pos,
  position: pos,
  late: false,
  payload: JSON.stringify({ k: key }),
  ...over,
})
const ok = (key: string, node = 'n1'): Attempt => ({ key, node, status: 'ok' })

describe('checkQueue', () => {
  it('passes a clean history and counts unknown attempts that were delivered', () => {
    const r = checkQueue(
      [
        ok('a'),
        ok('b'),
        { key: 'c', node: 'n1', status: 'unknown' },
        { key: 'd', node: 'n1', status: 'unknown' },
      ],
      [msg('a'), msg('b'), msg('c')],
    )
    expect(violations(r)).toEqual([])
    expect(r).toMatchObject({ acknowledged: 2, unknown: 2, deliveredOnce: 3, unknownDelivered: 1 })
  })

  it('finds lost, duplicated, unexpected, phantom and mismatched ids', () => {
    const a = msg('a')
    const r = checkQueue(
      [{ ...ok('a'), id: 'n1:e1:999' }, ok('lost'), { key: 'f', node: 'n1', status: 'failed' }, ok('dup')],
      [a, msg('dup'), msg('dup'), msg('f'), msg('stranger'), { ...msg('x'), payload: 'not json' }],
    )
    expect(r.lost).toEqual(['lost'])
    expect(r.duplicated).toEqual(['dup x2'])
    expect(r.phantom).toEqual(['f'])
    expect(r.unexpected).toHaveLength(2)
    expect(r.idMismatch).toHaveLength(1)
    expect(violations(r)).toHaveLength(5)
  })

  it('finds event-order and per-node order violations but accepts late messages out of order', () => {
    const late = checkQueue([ok('a'), ok('b')], [msg('a', { ts: 500 }), msg('b', { ts: 100, late: true })])
    expect(late.orderViolations).toEqual([])
    expect(late.late).toBe(1)
    const bad = checkQueue(
      [ok('a'), ok('b'), ok('c'), ok('d')],
      [
        msg('a', { ts: 500, seq: 9 }),
        msg('b', { ts: 100 }),
        msg('c', { ts: 700, seq: 5, late: true }),
        msg('d', { ts: 700, seq: 4, late: true }),
      ],
    )
    expect(bad.orderViolations).toHaveLength(2)
    expect(bad.orderViolations.join('\n')).toMatch(/event order/)
    expect(bad.orderViolations.join('\n')).toMatch(/per-node order/)
  })
})

describe('parseFailpoints', () => {
  it('reads name=action[@N] entries and bare names', () => {
    const p = parseFailpoints('sync.after-read=crash@2, sqlite.maxPageCount=64,x=delay:50,bare')
    expect(p.get('sync.after-read')).toMatchObject({ action: 'crash', at: 2 })
    expect(p.get('sqlite.maxPageCount')).toMatchObject({ action: '64', at: 0 })
    expect(p.get('x')).toMatchObject({ action: 'delay:50' })
    expect(p.get('bare')).toMatchObject({ action: '' })
    expect(parseFailpoints(undefined).size).toBe(0)
  })
})
