import { describe, expect, it } from 'vitest'
import { fromColumns, toColumns, transferList } from '../../src/broker/store/batch-columns.js'
import { batchOf, wireMessage } from '../../src/testing/index.js'

describe('batch columns (how a batch reaches the writer thread)', () => {
  it('round-trips every field, with defaults made explicit, and keeps one entry per distinct shape', () => {
    const plain = (seq: number) => wireMessage(seq, 1000 + seq, `t/${seq % 3}`, `{"v":${seq}}`)
    const messages = [
      plain(1),
      plain(2),
      { ...plain(3), priority: 9 },
      { ...plain(4), headers: { a: '1' } },
      { ...plain(5), headers: { a: '1' } },
      { ...plain(6), enc: 'base64' as const, payload: 'AAE=' },
      { ...plain(7), expiresAt: 5000, contentType: null },
      plain(8),
      { seq: 9, topic: 't/x', ts: 7, payload: 'p', enc: 'utf8' as const } as never,
    ]
    const batch = batchOf('gw', messages, { clock: 42, stats: { a: 1 }, direct: true })
    const cols = toColumns(batch)
    expect(cols.shapes).toHaveLength(6)
    expect(transferList(cols).every((b) => b instanceof ArrayBuffer)).toBe(true)
    const back = fromColumns(structuredClone(cols))
    const { messages: got, ...envelope } = back
    const { messages: _, ...expected } = batch
    expect(envelope).toEqual(expected)
    expect(got).toEqual(
      messages.map((m) => ({
        seq: m.seq,
        topic: m.topic,
        ts: m.ts,
        payload: m.payload,
        enc: m.enc,
        expiresAt: m.expiresAt ?? null,
        priority: m.priority ?? 4,
        contentType: m.contentType === undefined ? null : m.contentType,
        headers: m.headers ?? null,
      })),
    )
  })

  it('an empty batch (a heartbeat) has no messages and no shapes', () => {
    const cols = toColumns(batchOf('gw', []))
    expect(cols.shapes).toEqual([])
    expect(fromColumns(cols).messages).toEqual([])
  })
})
