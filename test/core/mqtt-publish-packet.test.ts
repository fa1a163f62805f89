import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import { encodePublish } from '../../src/core/mqtt/publish-packet.js'
import { ValidationError } from '../../src/shared/errors.js'

// mqtt-packet is MQTT.js's own encoder and parser (a dependency of mqtt).
const require = createRequire(import.meta.url)
const mqttPacket = require('mqtt-packet') as {
  generate(packet: object, opts: { protocolVersion: number }): Buffer
  parser(opts: { protocolVersion: number }): {
    on(event: 'packet', f: (p: Record<string, unknown>) => void): void
    on(event: 'error', f: (e: Error) => void): void
    parse(buf: Buffer): number
  }
}

const props: Array<[string, string]> = [
  ['node', 'gw-1'],
  ['epoch', 'e1'],
  ['seq', '42'],
  ['ts', '1764979200000'],
  ['position', '7'],
  ['late', 'false'],
]

function reference(topic: string, messageId: number, payload: Buffer, contentType?: string): Buffer {
  return mqttPacket.generate(
    {
      cmd: 'publish',
      topic,
      payload,
      qos: 1,
      retain: false,
      dup: false,
      messageId,
      properties: {
        ...(contentType ? { contentType } : {}),
        userProperties: Object.fromEntries(props),
      },
    },
    { protocolVersion: 5 },
  )
}

describe('encodePublish (MQTT 5 PUBLISH, QoS 1)', () => {
  const cases: Array<[string, string, number, string | Buffer, string | undefined]> = [
    ['small JSON', 'plant/line1/temp', 1, '{"v":21.5}', 'application/json'],
    ['no content type, empty payload', 'a', 65_535, '', undefined],
    ['UTF-8 topic and payload', 'usine/étage-2/température', 300, 'été ✓ 温度', 'text/plain; charset=utf-8'],
    ['binary payload', 'bin/x', 2, Buffer.from([0, 255, 1, 254, 128]), 'application/octet-stream'],
    // Remaining Length crosses the 1-, 2- and 3-byte varint boundaries.
    ['127-byte boundary', 't', 9, 'x'.repeat(127 - 2 - 1 - 2 - 1 - 83), undefined],
    ['16 KiB payload', 'big/a', 1000, 'y'.repeat(16_384), 'application/json'],
    ['3 MB payload', 'big/b', 4242, Buffer.alloc(3_000_000, 7), undefined],
  ]
  for (const [name, topic, id, payload, type] of cases)
    it(`matches mqtt-packet byte for byte: ${name}`, () => {
      const ours = encodePublish({
        topic,
        messageId: id,
        payload,
        ...(type ? { contentType: type } : {}),
        userProperties: props,
      })
      const bytes = typeof payload === 'string' ? Buffer.from(payload) : payload
      expect(ours.equals(reference(topic, id, bytes, type))).toBe(true)
    })

  it('parses back to the same fields', () => {
    const buf = encodePublish({
      topic: 'plant/x',
      messageId: 77,
      payload: '{"a":1}',
      contentType: 'application/json',
      userProperties: props,
    })
    const parser = mqttPacket.parser({ protocolVersion: 5 })
    const packets: Array<Record<string, unknown>> = []
    parser.on('packet', (p) => packets.push(p))
    parser.on('error', (e) => {
      throw e
    })
    expect(parser.parse(buf)).toBe(0)
    expect(packets).toHaveLength(1)
    const p = packets[0] as {
      topic: string
      messageId: number
      qos: number
      payload: Buffer
      properties: { contentType: string; userProperties: Record<string, string> }
    }
    expect(p.topic).toBe('plant/x')
    expect(p.messageId).toBe(77)
    expect(p.qos).toBe(1)
    expect(p.payload.toString()).toBe('{"a":1}')
    expect(p.properties.contentType).toBe('application/json')
    expect(p.properties.userProperties).toEqual(Object.fromEntries(props))
  })

  it('writes number and boolean values as their decimal text, the same bytes as the strings', () => {
    const typed: Array<[string, string | number | boolean]> = [
      ['node', 'gw-1'],
      ['epoch', 'e1'],
      ['seq', 42],
      ['ts', 1764979200000],
      ['position', 7],
      ['late', false],
    ]
    const fields = {
      topic: 'plant/line1/temp',
      messageId: 5,
      payload: '{"v":1}',
      contentType: 'application/json',
    }
    const ours = encodePublish({ ...fields, userProperties: typed })
    expect(ours.equals(encodePublish({ ...fields, userProperties: props }))).toBe(true)
    expect(ours.equals(reference(fields.topic, 5, Buffer.from(fields.payload), fields.contentType))).toBe(
      true,
    )
  })

  it('keeps the same bytes for strings it has seen, across more distinct strings than it keeps', () => {
    // 5,000 distinct topics and node ids (more than the encoder keeps), then the first ones again.
    const packet = (i: number) =>
      encodePublish({
        topic: `site/dev-${i}/été`,
        messageId: (i % 65_535) + 1,
        payload: `p${i}`,
        userProperties: [
          ['node', `gw-${i}`],
          ['seq', i],
        ],
      })
    const first = Array.from({ length: 5000 }, (_, i) => packet(i))
    for (const i of [0, 1, 4095, 4096, 4999]) {
      const expected = mqttPacket.generate(
        {
          cmd: 'publish',
          topic: `site/dev-${i}/été`,
          payload: Buffer.from(`p${i}`),
          qos: 1,
          retain: false,
          dup: false,
          messageId: (i % 65_535) + 1,
          properties: { userProperties: { node: `gw-${i}`, seq: String(i) } },
        },
        { protocolVersion: 5 },
      )
      expect(first[i].equals(expected)).toBe(true)
      expect(packet(i).equals(expected)).toBe(true)
    }
  })

  it('refuses a user property value over 65,535 bytes, seen before or not', () => {
    const long = 'v'.repeat(65_536)
    for (let i = 0; i < 2; i++)
      expect(() =>
        encodePublish({ topic: 't', messageId: 1, payload: '', userProperties: [['k', long]] }),
      ).toThrow(/user property k .*65,?535/)
  })

  it('refuses what MQTT cannot carry: an out-of-range packet id, a string over 65,535 bytes', () => {
    expect(() => encodePublish({ topic: 't', messageId: 0, payload: '', userProperties: [] })).toThrow(
      RangeError,
    )
    expect(() => encodePublish({ topic: 't', messageId: 65_536, payload: '', userProperties: [] })).toThrow(
      RangeError,
    )
    expect(() =>
      encodePublish({ topic: 'é'.repeat(40_000), messageId: 1, payload: '', userProperties: [] }),
    ).toThrow(ValidationError)
  })
})
