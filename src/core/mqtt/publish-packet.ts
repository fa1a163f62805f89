/**
 * MQTT 5 PUBLISH packets with QoS 1, encoded into one buffer each.
 *
 * `rmq mqtt forward` writes these to the connection itself instead of calling
 * MQTT.js's `publish()`. That path writes every field as its own stream write,
 * logs through `debug` several times per field, and clones each packet into
 * its outgoing store; in a profile of the forwarder, that cost more CPU than
 * everything else together (docs/mqtt.md, "Throughput"). MQTT.js still owns
 * the connection: CONNECT, keep-alive, and reading packets, of which the
 * forwarder takes the PUBACKs (`packetreceive`).
 *
 * The layout follows MQTT 5.0 §3.3. `test/core/mqtt-publish-packet.test.ts`
 * checks it byte for byte against mqtt-packet, MQTT.js's own encoder.
 */
import { ValidationError } from '../../shared/errors.js'

export interface PublishFields {
  topic: string
  /** Packet identifier, 1..65535. */
  messageId: number
  /** A string is sent as its UTF-8 bytes. */
  payload: string | Buffer
  contentType?: string
  /** MQTT 5 user properties, in this order. */
  userProperties: ReadonlyArray<readonly [string, string]>
}

/** The largest Remaining Length MQTT allows (a 4-byte variable byte integer). */
const MAX_REMAINING = 268_435_455
const MAX_STRING = 65_535
const PUBLISH_QOS1 = 0x32
const CONTENT_TYPE = 0x03
const USER_PROPERTY = 0x26

const varintLength = (n: number) => (n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4)

function writeVarint(buf: Buffer, offset: number, n: number): number {
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 128
    buf[offset++] = byte
  } while (n > 0)
  return offset
}

function stringLength(s: string, what: string): number {
  const n = Buffer.byteLength(s)
  if (n > MAX_STRING)
    throw new ValidationError(`${what} is ${n} bytes of UTF-8; MQTT strings hold at most ${MAX_STRING}`)
  return n
}

function writeString(buf: Buffer, offset: number, s: string, length: number): number {
  buf.writeUInt16BE(length, offset)
  buf.write(s, offset + 2, length, 'utf8')
  return offset + 2 + length
}

/** One complete PUBLISH packet (fixed header included). */
export function encodePublish(f: PublishFields): Buffer {
  if (!Number.isInteger(f.messageId) || f.messageId < 1 || f.messageId > 65_535)
    throw new RangeError(`MQTT packet identifier out of range: ${f.messageId}`)
  const topicLength = stringLength(f.topic, `the topic ${f.topic.slice(0, 80)}`)
  const typeLength = f.contentType === undefined ? -1 : stringLength(f.contentType, 'the content type')
  let properties = typeLength < 0 ? 0 : 3 + typeLength
  const lengths: number[] = []
  for (const [k, v] of f.userProperties) {
    const kl = stringLength(k, `the user property ${k.slice(0, 40)}`)
    const vl = stringLength(v, `the value of user property ${k.slice(0, 40)}`)
    lengths.push(kl, vl)
    properties += 5 + kl + vl
  }
  const payloadLength = typeof f.payload === 'string' ? Buffer.byteLength(f.payload) : f.payload.length
  const remaining = 2 + topicLength + 2 + varintLength(properties) + properties + payloadLength
  if (remaining > MAX_REMAINING)
    throw new ValidationError(`a ${payloadLength}-byte payload does not fit in one MQTT packet`)
  const buf = Buffer.allocUnsafe(1 + varintLength(remaining) + remaining)
  buf[0] = PUBLISH_QOS1
  let o = writeVarint(buf, 1, remaining)
  o = writeString(buf, o, f.topic, topicLength)
  buf.writeUInt16BE(f.messageId, o)
  o = writeVarint(buf, o + 2, properties)
  if (typeLength >= 0) {
    buf[o++] = CONTENT_TYPE
    o = writeString(buf, o, f.contentType!, typeLength)
  }
  for (let i = 0; i < f.userProperties.length; i++) {
    const [k, v] = f.userProperties[i]
    buf[o++] = USER_PROPERTY
    o = writeString(buf, o, k, lengths[2 * i])
    o = writeString(buf, o, v, lengths[2 * i + 1])
  }
  if (typeof f.payload === 'string') buf.write(f.payload, o, payloadLength, 'utf8')
  else f.payload.copy(buf, o)
  return buf
}
