/**
 * The forwarder's PUBACK tap (src/core/mqtt/puback-tap.ts): PUBACKs are taken
 * out of the byte stream whatever the read boundaries, every other frame
 * reaches MQTT.js byte for byte and in order, and malformed input turns the
 * tap off so that MQTT.js sees it and reports the protocol error.
 */
import { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import { tapPubacks } from '../../src/core/mqtt/puback-tap.js'

const require = createRequire(import.meta.url)
const mqttPacket = require('mqtt-packet') as {
  generate(packet: object, opts: { protocolVersion: number }): Buffer
}
const gen = (p: object) => mqttPacket.generate(p, { protocolVersion: 5 })

/** A stream that records what reaches a 'data' listener (MQTT.js's pipe) and the PUBACKs taken. */
function tapped() {
  const stream = new EventEmitter()
  const seen: Buffer[] = []
  const acks: Array<[number, number]> = []
  stream.on('data', (b: Buffer) => seen.push(Buffer.from(b)))
  const tap = tapPubacks(stream, (id, code) => acks.push([id, code]))
  return { stream, seen: () => Buffer.concat(seen), acks, tap }
}

// What a broker sends a forwarder: CONNACK, PUBACKs (short form, with reason codes, with properties),
// a PINGRESP between them, and a DISCONNECT whose properties take a 2-byte length.
const frames: Array<{ bytes: Buffer; ack?: [number, number] }> = [
  {
    bytes: gen({ cmd: 'connack', sessionPresent: false, reasonCode: 0, properties: { receiveMaximum: 20 } }),
  },
  { bytes: gen({ cmd: 'puback', messageId: 1, reasonCode: 0 }), ack: [1, 0] },
  { bytes: gen({ cmd: 'puback', messageId: 258, reasonCode: 0x10 }), ack: [258, 0x10] },
  { bytes: gen({ cmd: 'pingresp' }) },
  {
    bytes: gen({
      cmd: 'puback',
      messageId: 65_535,
      reasonCode: 0x87,
      properties: { reasonString: 'not allowed' },
    }),
    ack: [65_535, 0x87],
  },
  { bytes: Buffer.from([0x40, 0x02, 0x00, 0x07]), ack: [7, 0] },
  {
    bytes: gen({ cmd: 'disconnect', reasonCode: 0x8b, properties: { reasonString: 'bye '.repeat(60) } }),
  },
  { bytes: gen({ cmd: 'puback', messageId: 9, reasonCode: 0 }), ack: [9, 0] },
]
const all = Buffer.concat(frames.map((f) => f.bytes))
const others = Buffer.concat(frames.filter((f) => !f.ack).map((f) => f.bytes))
const acks = frames.filter((f) => f.ack).map((f) => f.ack)

describe('tapPubacks', () => {
  it('takes the PUBACKs out of one read and passes every other frame on unchanged', () => {
    const t = tapped()
    t.stream.emit('data', all)
    expect(t.acks).toEqual(acks)
    expect(t.seen().equals(others)).toBe(true)
    expect(t.tap.passed).toBe(others.length)
    expect(t.tap.off).toBe(false)
  })

  it('gives the same result at every split into two reads', () => {
    for (let cut = 1; cut < all.length; cut++) {
      const t = tapped()
      t.stream.emit('data', all.subarray(0, cut))
      t.stream.emit('data', all.subarray(cut))
      expect(t.acks, `cut at ${cut}`).toEqual(acks)
      expect(t.seen().equals(others), `cut at ${cut}`).toBe(true)
    }
  })

  it('gives the same result one byte at a time and in random reads', () => {
    const one = tapped()
    for (let i = 0; i < all.length; i++) one.stream.emit('data', all.subarray(i, i + 1))
    expect(one.acks).toEqual(acks)
    expect(one.seen().equals(others)).toBe(true)
    let x = 7
    for (let round = 0; round < 200; round++) {
      const t = tapped()
      for (let i = 0; i < all.length;) {
        x = (x * 1103515245 + 12345) % 2 ** 31
        const n = 1 + (x % 40)
        t.stream.emit('data', all.subarray(i, i + n))
        i += n
      }
      expect(t.acks).toEqual(acks)
      expect(t.seen().equals(others)).toBe(true)
    }
  })

  it('leaves other events alone', () => {
    const t = tapped()
    let closed = 0
    t.stream.on('close', () => closed++)
    t.stream.emit('close')
    expect(closed).toBe(1)
  })

  it('turns off at a length over 4 bytes or a PUBACK without a packet id: MQTT.js gets the rest', () => {
    for (const bad of [Buffer.from([0x40, 0xff, 0xff, 0xff, 0xff, 0x01]), Buffer.from([0x40, 0x01, 0x00])]) {
      const t = tapped()
      const ack = gen({ cmd: 'puback', messageId: 3, reasonCode: 0 })
      const input = Buffer.concat([ack, bad, ack])
      t.stream.emit('data', input)
      expect(t.acks).toEqual([[3, 0]])
      expect(t.tap.off).toBe(true)
      expect(t.seen().equals(Buffer.concat([bad, ack]))).toBe(true)
      // From then on, everything as it comes.
      t.stream.emit('data', ack)
      expect(t.acks).toHaveLength(1)
      expect(t.seen().equals(Buffer.concat([bad, ack, ack]))).toBe(true)
    }
  })
})
