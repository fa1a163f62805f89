/**
 * The PUBACKs of `rmq mqtt forward`, taken out of what the MQTT broker sends
 * before MQTT.js parses it.
 *
 * The forwarder writes its own PUBLISH packets (publish-packet.ts), so
 * MQTT.js has no use for their PUBACKs: it would parse each into an object,
 * look its id up in its outgoing store (where it is not), and give every
 * packet a tick of its own. In a profile of the forwarder that was the
 * largest cost per message after the encoder. The tap reads the frames of the
 * byte stream (MQTT 5.0 §2.1: a type byte and a variable byte integer
 * length), hands each PUBACK's packet id and reason code to the forwarder,
 * and passes every other byte on to MQTT.js unchanged and in order
 * (CONNACK, PINGRESP, DISCONNECT, AUTH). A frame split across reads is
 * handled: a PUBACK waits for its last byte, other frames pass through as
 * their bytes arrive. Anything malformed (a length over 4 bytes, a PUBACK
 * shorter than its packet id) turns the tap off: from there every byte goes
 * to MQTT.js, whose parser reports the protocol error as it always did.
 * MQTT.js's keep-alive still holds: seeing no PUBACKs, it sends a PINGREQ
 * once per keep-alive interval, and the PINGRESP reaches it.
 */

const PUBACK = 4

export interface PubackTap {
  /** Bytes handed to MQTT.js so far (for tests). */
  readonly passed: number
  /** True once malformed input turned the tap off. */
  readonly off: boolean
}

/** A stream whose 'data' events MQTT.js reads through pipe(). */
interface Emitter {
  emit(event: string | symbol, ...args: unknown[]): boolean
}

/**
 * Install the tap on `stream` (the client's socket, before the first PUBLISH
 * is written): each PUBACK goes to `onPuback` and no longer reaches MQTT.js.
 */
export function tapPubacks(
  stream: Emitter,
  onPuback: (messageId: number, reasonCode: number) => void,
): PubackTap {
  const emit = stream.emit.bind(stream)
  /** Bytes of a frame whose header or PUBACK body is not complete yet. */
  let held: Buffer | undefined
  /** Bytes of a frame being passed through that have not arrived yet. */
  let through = 0
  const state = { passed: 0, off: false }

  /** The bytes of `chunk` MQTT.js is to see (or undefined: none); PUBACKs are handed on. */
  const filter = (chunk: Buffer): Buffer | undefined => {
    let c = chunk
    if (held) {
      c = Buffer.concat([held, chunk])
      held = undefined
    }
    const out: Buffer[] = []
    let i = 0
    if (through > 0) {
      i = Math.min(through, c.length)
      out.push(c.subarray(0, i))
      through -= i
    }
    let runStart = i
    while (i < c.length) {
      // The fixed header: the type nibble and a 1-4 byte Remaining Length.
      let length = 0
      let multiplier = 1
      let j = i + 1
      let complete = false
      while (j < c.length && j <= i + 4) {
        const b = c[j++]
        length += (b & 127) * multiplier
        multiplier *= 128
        if (b < 128) {
          complete = true
          break
        }
      }
      if (!complete) {
        if (j > i + 4) return off(out, c.subarray(runStart))
        held = Buffer.from(c.subarray(i))
        break
      }
      const end = j + length
      if (c[i] >> 4 !== PUBACK) {
        // Passed on, joined with the frames around it that are passed on too.
        if (end > c.length) {
          through = end - c.length
          i = c.length
          break
        }
        i = end
        continue
      }
      if (length < 2) return off(out, c.subarray(runStart))
      if (end > c.length) {
        if (i > runStart) out.push(c.subarray(runStart, i))
        runStart = c.length
        held = Buffer.from(c.subarray(i))
        i = c.length
        break
      }
      if (i > runStart) out.push(c.subarray(runStart, i))
      onPuback((c[j] << 8) | c[j + 1], length >= 3 ? c[j + 2] : 0)
      i = end
      runStart = end
    }
    if (runStart < i) out.push(c.subarray(runStart, i))
    return join(out)
  }

  const off = (out: Buffer[], rest: Buffer): Buffer | undefined => {
    state.off = true
    held = undefined
    out.push(rest)
    return join(out)
  }

  const join = (out: Buffer[]): Buffer | undefined => {
    const bytes = out.length === 0 ? undefined : out.length === 1 ? out[0] : Buffer.concat(out)
    if (bytes && bytes.length === 0) return undefined
    if (bytes) state.passed += bytes.length
    return bytes
  }

  stream.emit = (event: string | symbol, ...args: unknown[]): boolean => {
    if (event !== 'data' || state.off || !Buffer.isBuffer(args[0])) return emit(event, ...args)
    const bytes = filter(args[0])
    return bytes ? emit('data', bytes) : true
  }

  return {
    get passed() {
      return state.passed
    },
    get off() {
      return state.off
    },
  }
}
