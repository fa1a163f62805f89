/**
 * What `rmq mqtt forward` puts on the wire for one message, and what a
 * refusal of it means (docs/mqtt.md, "User properties" and the exit codes).
 */
import { BrokerUnavailableError, ConfigError, RmqError, ValidationError } from '../../shared/errors.js'
import type { ConsumedMessage } from '../consumer.js'
import type { PropertyValue } from './publish-packet.js'

/** The MQTT 5 user properties every forwarded message carries (docs/mqtt.md), in this order. */
export function forwardProperties(m: ConsumedMessage): Array<[string, PropertyValue]> {
  return [
    ['node', m.node],
    ['epoch', m.epoch],
    ['seq', m.seq],
    ['ts', m.ts],
    ['position', m.position],
    ['late', m.late],
  ]
}

/** The payload exactly as published to rmq: a UTF-8 string, or the bytes of a base64 one. */
export function payloadOf(m: ConsumedMessage): string | Buffer {
  return m.enc === 'base64' ? Buffer.from(m.payload, 'base64') : m.payload
}

/** A PUBACK reason code >= 0x80 as an rmq error: not authorized 78, a refused topic or payload 65, else 69. */
export function pubackError(code: number, url: string, m: ConsumedMessage, topic: string): RmqError {
  const what = `the MQTT broker ${url} refused ${m.node}:${m.seq} on ${topic} (PUBACK reason 0x${code.toString(16)})`
  const details = { url, reasonCode: code, node: m.node, seq: m.seq, position: m.position, topic }
  if (code === 0x87)
    return new ConfigError(`${what}: not authorized`, {
      suggestion: 'allow this MQTT user to publish under mqtt.forward.topicPrefix (the broker ACL)',
      details,
    })
  if (code === 0x90 || code === 0x99)
    return new ValidationError(
      `${what}: ${code === 0x90 ? 'topic name invalid' : 'payload format invalid'}`,
      {
        suggestion:
          'set mqtt.forward.topicPrefix (or --topic-prefix) so the MQTT topic is one the broker accepts',
        details,
      },
    )
  return new BrokerUnavailableError(what, { suggestion: 'check the MQTT broker log and limits', details })
}

/** A message the MQTT broker cannot take as it is: exit 65, nothing past it committed. */
export const tooLarge = (what: string) =>
  new ValidationError(`cannot forward ${what}`, {
    suggestion: 'raise the MQTT broker message_size_limit / max_packet_size, or filter the topic out',
  })
