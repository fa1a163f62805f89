/**
 * MQTT 5 PUBLISH packets with QoS 1, encoded into one buffer each.
 *
 * `rmq mqtt forward` writes these to the connection itself instead of calling
 * MQTT.js's `publish()`. That path writes every field as its own stream write,
 * logs through `debug` several times per field, and clones each packet into
 * its outgoing store; in a profile of the forwarder, that cost more CPU than
 * everything else together (docs/mqtt.md, "Throughput"). MQTT.js still owns
 * the connection: CONNECT, keep-alive, and reading every packet but the
 * PUBACKs, which the forwarder takes off the socket first (puback-tap.ts).
 *
 * The layout follows MQTT 5.0 §3.3. `test/core/mqtt-publish-packet.test.ts`
 * checks it byte for byte against mqtt-packet, MQTT.js's own encoder.
 */
import { ValidationError } from '../../shared/errors.js'

/** A user property value: numbers and booleans are sent as their decimal text (always ASCII). */
export type PropertyValue = string | number | boolean

export interface PublishFields {
  topic: string
  /** Packet identifier, 1..65535. */
  messageId: number
  /** A string is sent as its UTF-8 bytes. */
  payload: string | Buffer
  contentType?: string
  /** MQTT 5 user properties, in this order. */
  userProperties: ReadonlyArray<readonly [string, PropertyValue]>
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

/**
 * The UTF-8 bytes of the strings of a packet other than the payload, kept:
 * topics, content types, property names and values such as node ids repeat
 * from one packet to the next, and converting each again was most of the
 * encoder's time. Bounded (emptied when full).
 */
const kept = new Map<string, Buffer>()
const KEPT_MAX = 4096

function utf8(s: string): Buffer {
  let b = kept.get(s)
  if (b === undefined) {
    b = Buffer.from(s, 'utf8')
    if (kept.size >= KEPT_MAX) kept.clear()
    kept.set(s, b)
  }
  return b
}

/** A string MQTT cannot carry (over 65,535 bytes): `what` names it. Called only then, so no message is built per packet. */
function tooLong(what: string, bytes: number): never {
  throw new ValidationError(`${what} is ${bytes} bytes of UTF-8; MQTT strings hold at most ${MAX_STRING}`)
}

/** A string's 2-byte length and bytes; `text` is ASCII (a number's or boolean's decimal text). */
function put(buf: Buffer, o: number, s: Buffer | string): number {
  buf[o] = s.length >> 8
  buf[o + 1] = s.length & 0xff
  if (typeof s === 'string') buf.write(s, o + 2, 'latin1')
  else buf.set(s, o + 2)
  return o + 2 + s.length
}

/** One complete PUBLISH packet (fixed header included). */
export function encodePublish(f: PublishFields): Buffer {
  if (!Number.isInteger(f.messageId) || f.messageId < 1 || f.messageId > 65_535)
    throw new RangeError(`MQTT packet identifier out of range: ${f.messageId}`)
  const topic = utf8(f.topic)
  if (topic.length > MAX_STRING) tooLong(`the topic ${f.topic.slice(0, 80)}`, topic.length)
  const type = f.contentType === undefined ? undefined : utf8(f.contentType)
  if (type && type.length > MAX_STRING) tooLong('the content type', type.length)
  let properties = type ? 3 + type.length : 0
  const n = f.userProperties.length
  const strings: (Buffer | string)[] = new Array(2 * n)
  for (let i = 0; i < n; i++) {
    const [k, v] = f.userProperties[i]
    const key = utf8(k)
    if (key.length > MAX_STRING) tooLong(`the user property ${k.slice(0, 40)}`, key.length)
    const value = typeof v === 'string' ? utf8(v) : String(v)
    if (value.length > MAX_STRING) tooLong(`the value of user property ${k.slice(0, 40)}`, value.length)
    strings[2 * i] = key
    strings[2 * i + 1] = value
    properties += 5 + key.length + value.length
  }
  const payloadLength = typeof f.payload === 'string' ? Buffer.byteLength(f.payload) : f.payload.length
  const remaining = 2 + topic.length + 2 + varintLength(properties) + properties + payloadLength
  if (remaining > MAX_REMAINING)
    throw new ValidationError(`a ${payloadLength}-byte payload does not fit in one MQTT packet`)
  const buf = Buffer.allocUnsafe(1 + varintLength(remaining) + remaining)
  buf[0] = PUBLISH_QOS1
  let o = writeVarint(buf, 1, remaining)
  o = put(buf, o, topic)
  buf[o] = f.messageId >> 8
  buf[o + 1] = f.messageId & 0xff
  o = writeVarint(buf, o + 2, properties)
  if (type) {
    buf[o++] = CONTENT_TYPE
    o = put(buf, o, type)
  }
  for (let i = 0; i < 2 * n; i += 2) {
    buf[o++] = USER_PROPERTY
    o = put(buf, o, strings[i])
    o = put(buf, o, strings[i + 1])
  }
  if (typeof f.payload === 'string') buf.write(f.payload, o, payloadLength, 'utf8')
  else f.payload.copy(buf, o)
  return buf
}
