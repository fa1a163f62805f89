import { describe, expect, it } from 'vitest'
import {
  mapPublish,
  parseRule,
  rewriteTopic,
  PUBACK_PAYLOAD_FORMAT_INVALID,
  PUBACK_TOPIC_NAME_INVALID,
  type MappingOptions,
} from '../../src/core/mqtt/mapping.js'
import { DedupWindow, sameMessage, withIngestHeaders } from '../../src/core/mqtt/dedup.js'
import { ConfigError } from '../../src/shared/errors.js'

const NOW = Date.UTC(2026, 0, 1)
const opts = (o: Partial<MappingOptions> = {}): MappingOptions => ({
  prefix: '',
  rules: [],
  tsField: '',
  onBadTimestamp: 'arrival',
  retained: false,
  sys: false,
  publish: { nodeId: 'gw', maxBytes: 1024, defaultTtl: 0 },
  ...o,
})
const bytes = (s: string) => Buffer.from(s, 'utf8')

describe('mqtt mapping', () => {
  it('keeps the topic and the payload bytes exactly, ts = arrival by default', () => {
    const payload = Buffer.from([0, 255, 10, 13, 0xc3])
    const r = mapPublish({ topic: 'plant/l1/temp', payload }, opts(), NOW)
    expect(r.kind).toBe('store')
    const s = r as Extract<typeof r, { kind: 'store' }>
    expect(s.message.topic).toBe('plant/l1/temp')
    expect(Buffer.compare(Buffer.from(s.message.payload), payload)).toBe(0)
    expect(s.message.ts).toBe(NOW)
    expect(s.message.priority).toBe(4)
    expect(s.message.contentType).toBeNull()
    expect(s.badTimestamp).toBeUndefined()
  })

  it('adds mqtt.topicPrefix and takes the MQTT 5 content type', () => {
    const r = mapPublish(
      { topic: 'a/b', payload: bytes('{"x":1}'), properties: { contentType: 'application/json' } },
      opts({ prefix: 'site1/' }),
      NOW,
    )
    expect(r).toMatchObject({
      kind: 'store',
      message: { topic: 'site1/a/b', contentType: 'application/json' },
    })
  })

  it('event time: user property ts wins over the JSON field, both ms and ISO 8601', () => {
    const o = opts({ tsField: 'ts' })
    const iso = '2025-11-26T10:00:00.000Z'
    expect(mapPublish({ topic: 't', payload: bytes('{"ts":1700000000000}') }, o, NOW)).toMatchObject({
      message: { ts: 1700000000000 },
    })
    expect(mapPublish({ topic: 't', payload: bytes(`{"ts":"${iso}"}`) }, o, NOW)).toMatchObject({
      message: { ts: Date.parse(iso) },
    })
    expect(
      mapPublish(
        { topic: 't', payload: bytes('{"ts":1}'), properties: { userProperties: { ts: '1700000000123' } } },
        o,
        NOW,
      ),
    ).toMatchObject({ message: { ts: 1700000000123 } })
    expect(
      mapPublish({ topic: 't', payload: bytes('{"m":{"t":5}}') }, opts({ tsField: 'm.t' }), NOW),
    ).toMatchObject({
      message: { ts: 5 },
    })
  })

  it('a bad timestamp: arrival time and flagged, or refused with reason code 153', () => {
    for (const payload of ['not json', '{"other":1}', '{"ts":"yesterday"}', '{"ts":1e20}']) {
      const a = mapPublish({ topic: 't', payload: bytes(payload) }, opts({ tsField: 'ts' }), NOW)
      expect(a.kind).toBe('store')
      if (a.kind === 'store') {
        expect(a.message.ts).toBe(NOW)
        expect(a.badTimestamp).toMatch(/ts|JSON/)
      }
      const r = mapPublish(
        { topic: 't', payload: bytes(payload) },
        opts({ tsField: 'ts', onBadTimestamp: 'reject' }),
        NOW,
      )
      expect(r).toMatchObject({
        kind: 'refuse',
        reason: 'badTimestamp',
        reasonCode: PUBACK_PAYLOAD_FORMAT_INVALID,
      })
    }
    const up = mapPublish(
      { topic: 't', payload: bytes('x'), properties: { userProperties: { ts: 'soon' } } },
      opts({ onBadTimestamp: 'reject' }),
      NOW,
    )
    expect(up).toMatchObject({ kind: 'refuse', reason: 'badTimestamp' })
  })

  it('skips retained and $SYS messages unless asked', () => {
    expect(mapPublish({ topic: 'a', payload: bytes('x'), retain: true }, opts(), NOW)).toEqual({
      kind: 'skip',
      reason: 'retained',
    })
    expect(
      mapPublish({ topic: 'a', payload: bytes('x'), retain: true }, opts({ retained: true }), NOW).kind,
    ).toBe('store')
    expect(mapPublish({ topic: '$SYS/broker/uptime', payload: bytes('1') }, opts(), NOW)).toEqual({
      kind: 'skip',
      reason: 'sys',
    })
    expect(
      mapPublish({ topic: '$SYS/broker/uptime', payload: bytes('1') }, opts({ sys: true }), NOW).kind,
    ).toBe('store')
  })

  it('rules: first match wins; rewrite with +N and #, priority, ttl, skip', () => {
    const rules = [
      parseRule('debug/# skip'),
      parseRule('sensors/+/+/temp topic=plant/+2/+1/temperature priority=7 ttl=1h'),
      parseRule('sensors/# topic=raw/# priority=2'),
    ]
    const o = opts({ rules })
    expect(mapPublish({ topic: 'debug/x', payload: bytes('x') }, o, NOW)).toEqual({
      kind: 'skip',
      reason: 'rule',
    })
    expect(mapPublish({ topic: 'sensors/a/b/temp', payload: bytes('x') }, o, NOW)).toMatchObject({
      message: { topic: 'plant/b/a/temperature', priority: 7, expiresAt: NOW + 3_600_000 },
    })
    expect(mapPublish({ topic: 'sensors/a/b/hum', payload: bytes('x') }, o, NOW)).toMatchObject({
      message: { topic: 'raw/a/b/hum', priority: 2, expiresAt: null },
    })
    expect(rewriteTopic(parseRule('a/# topic=b/#'), 'a')).toBe('b')
  })

  it('a topic the rules map to an invalid rmq topic is refused with reason code 144', () => {
    const o = opts({ rules: [parseRule('x/+ topic=bad/+/+1')] })
    const r = mapPublish({ topic: 'x/1', payload: bytes('p') }, o, NOW)
    expect(r).toMatchObject({ kind: 'refuse', reason: 'invalidTopic', reasonCode: PUBACK_TOPIC_NAME_INVALID })
    if (r.kind === 'refuse') expect(r.problem).toContain('"bad/+/1"')
    const long = mapPublish({ topic: 'y', payload: bytes('p') }, opts({ prefix: 'p'.repeat(1100) }), NOW)
    expect(long).toMatchObject({ kind: 'refuse', reason: 'invalidTopic' })
  })

  it('a payload over message.maxBytes, or not JSON under a JSON content type, is refused (153)', () => {
    expect(mapPublish({ topic: 't', payload: Buffer.alloc(2000) }, opts(), NOW)).toMatchObject({
      kind: 'refuse',
      reason: 'invalidPayload',
      reasonCode: PUBACK_PAYLOAD_FORMAT_INVALID,
    })
    expect(
      mapPublish(
        { topic: 't', payload: bytes('{'), properties: { contentType: 'application/json' } },
        opts(),
        NOW,
      ),
    ).toMatchObject({ kind: 'refuse', reason: 'invalidPayload' })
  })

  it('bad rules are configuration errors naming the rule', () => {
    for (const bad of [
      '',
      'a/#/b skip',
      'a/+ topic=+2',
      'a priority=10',
      'a ttl=soon',
      'a color=red',
      'a',
      'a topic=#',
    ])
      expect(() => parseRule(bad), bad).toThrow(ConfigError)
    expect(() => parseRule('a priority=10')).toThrow(/mqtt.rules entry "a priority=10"/)
  })
})

describe('mqtt dedup window', () => {
  it('matches a packet id only within the window, after the session floor', () => {
    const w = new DedupWindow('c', 3, 10)
    w.add(1, 11)
    w.add(2, 12)
    expect(w.seqOf(1)).toBe(11)
    w.add(3, 13)
    w.add(4, 14) // pid 1 is now 4 messages back: out of a window of 3
    expect(w.seqOf(1)).toBeUndefined()
    expect(w.seqOf(4)).toBe(14)
    w.add(2, 15)
    expect(w.seqOf(2)).toBe(15)
    w.clear(15)
    expect(w.seqOf(2)).toBeUndefined()
  })

  it('headers name the client and packet id; content compares topic and bytes', () => {
    const m = withIngestHeaders({ topic: 't', payload: bytes('x'), ts: 1 }, 'cid', 7)
    expect(m.headers).toEqual({ 'mqtt-client': 'cid', 'mqtt-pid': '7' })
    expect(sameMessage(m, { topic: 't', payload: bytes('x') })).toBe(true)
    expect(sameMessage(m, { topic: 't', payload: bytes('y') })).toBe(false)
    expect(sameMessage(m, { topic: 'u', payload: bytes('x') })).toBe(false)
  })
})
