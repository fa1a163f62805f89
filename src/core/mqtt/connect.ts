/**
 * One way to open an MQTT connection for `rmq mqtt ingest` and `rmq mqtt
 * forward`: the `mqtt.*` keys to MQTT.js options, the first connection with a
 * bound on its time, and its failures in rmq's exit codes (unreachable 69,
 * refused credentials 78, like a refused broker token). MQTT.js is imported
 * here only, and only when a command calls it, so `rmq publish` never loads it.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { IClientOptions, MqttClient } from 'mqtt'
import { BrokerUnavailableError, ConfigError, RmqError } from '../../shared/errors.js'
import type { RmqConfig } from '../config/schema.js'

export interface MqttConnection {
  url: string
  username?: string
  password?: string
  clientId: string
  /** false: a persistent session (the broker queues QoS 1 messages while we are away). */
  clean: boolean
  tls?: { ca?: string; cert?: string; key?: string }
  connectTimeout: number
  /** MQTT 5 Receive Maximum we announce: the most unacknowledged QoS 1 messages the broker may send us. */
  receiveMaximum?: number
  /** Session expiry (s) asked of an MQTT 5 broker for clean=false; 0 ends the session with the connection. */
  sessionExpiry?: number
}

/** The `mqtt.*` keys of `config` as a connection, with `overrides` (flags) on top; paths resolved against cwd. */
export function mqttConnectionFrom(
  config: RmqConfig,
  defaults: { clientId: string; clean: boolean },
  cwd = process.cwd(),
  overrides: Partial<MqttConnection> = {},
): MqttConnection {
  const m = config.mqtt
  const abs = (p: string) => (p ? path.resolve(cwd, p) : undefined)
  return {
    url: m.url,
    username: m.username || undefined,
    password: m.password || undefined,
    clientId: m.clientId || defaults.clientId,
    clean: defaults.clean,
    tls: { ca: abs(m.tls.ca), cert: abs(m.tls.cert), key: abs(m.tls.key) },
    connectTimeout: m.connectTimeout,
    // A week: long enough for any outage between timer runs; the broker's own limits still apply.
    sessionExpiry: defaults.clean ? 0 : 7 * 24 * 3600,
    ...overrides,
  }
}

/** A URL with its password left out, for messages and logs. */
export function redactedUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString().replace(/\/$/, '')
  } catch {
    return url
  }
}

function readPem(file: string | undefined, key: string): Buffer | undefined {
  if (!file) return undefined
  try {
    return fs.readFileSync(file)
  } catch (err) {
    throw new ConfigError(`cannot read ${key} ${file}: ${(err as Error).message}`, {
      suggestion: `set ${key} to a readable PEM file`,
    })
  }
}

/** MQTT 3.1.1 CONNACK return codes and MQTT 5 reason codes that mean "your credentials or client id". */
const REFUSED: Record<number, string> = {
  2: 'client id rejected',
  4: 'bad user name or password',
  5: 'not authorized',
  133: 'client id not valid',
  134: 'bad user name or password',
  135: 'not authorized',
  138: 'banned',
  140: 'bad authentication method',
}

/** What a failed first connection means to the user, as an rmq error. */
export function connectError(err: unknown, conn: MqttConnection): RmqError {
  const url = redactedUrl(conn.url)
  const code = (err as { code?: unknown }).code
  if (typeof code === 'number' && REFUSED[code])
    return new ConfigError(`the MQTT broker ${url} refused the connection: ${REFUSED[code]} (code ${code})`, {
      suggestion:
        code === 2 || code === 133
          ? 'set mqtt.clientId to an id the broker accepts'
          : 'check mqtt.username and mqtt.password (or the client certificate mqtt.tls.cert) and the broker ACL',
      details: { url, reasonCode: code },
    })
  const message = (err as Error)?.message ?? String(err)
  if (/certificate|self.signed|SSL|TLS|CERT_/i.test(message))
    return new ConfigError(`TLS to the MQTT broker ${url} failed: ${message}`, {
      suggestion: 'set mqtt.tls.ca to the PEM of the CA that signed the broker certificate',
      details: { url },
    })
  return new BrokerUnavailableError(`cannot reach the MQTT broker at ${url}: ${message}`, {
    suggestion: 'check that the MQTT broker runs and mqtt.url (or --url) names it',
    details: { url, ...(typeof code === 'string' ? { errno: code } : {}) },
  })
}

/**
 * Connect once (no automatic reconnect: the caller decides what a lost
 * connection means) and resolve when the broker accepted the session.
 * `prepare` runs on the client before its first packet, to hook handlers
 * that must see the very first PUBLISH of a resumed session.
 */
export async function connectMqtt(
  conn: MqttConnection,
  prepare?: (client: MqttClient) => void,
): Promise<{ client: MqttClient; sessionPresent: boolean }> {
  const { connect } = await import('mqtt')
  const options: IClientOptions = {
    clientId: conn.clientId,
    clean: conn.clean,
    protocolVersion: 5,
    reconnectPeriod: 0,
    connectTimeout: conn.connectTimeout,
    manualConnect: true,
    // MQTT.js's default logger (debug) costs a namespace check per call, several per packet;
    // DEBUG=mqttjs* still turns it on.
    ...(/mqttjs/.test(process.env.DEBUG ?? '') ? {} : { log: () => {} }),
    ...(conn.username !== undefined ? { username: conn.username } : {}),
    ...(conn.password !== undefined ? { password: conn.password } : {}),
    ca: readPem(conn.tls?.ca, 'mqtt.tls.ca'),
    cert: readPem(conn.tls?.cert, 'mqtt.tls.cert'),
    key: readPem(conn.tls?.key, 'mqtt.tls.key'),
    properties: {
      ...(conn.receiveMaximum ? { receiveMaximum: conn.receiveMaximum } : {}),
      ...(conn.sessionExpiry ? { sessionExpiryInterval: conn.sessionExpiry } : {}),
    },
  }
  const client = connect(conn.url, options)
  prepare?.(client)
  return new Promise((resolve, reject) => {
    let settled = false
    const fail = (err: unknown) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      client.end(true)
      reject(connectError(err, conn))
    }
    // MQTT.js's connectTimeout covers the CONNACK; this also covers a TCP connect that never completes.
    const timer = setTimeout(
      () => fail(new Error(`no answer within ${conn.connectTimeout} ms (mqtt.connectTimeout)`)),
      conn.connectTimeout + 500,
    )
    client.once('connect', (connack) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve({ client, sessionPresent: Boolean(connack.sessionPresent) })
    })
    client.once('error', fail)
    client.once('close', () => fail(new Error('the connection closed before the broker accepted it')))
    client.connect()
    coalesceWrites((client as unknown as { stream?: unknown }).stream)
  })
}

type WriteCallback = (err?: Error | null) => void
interface SocketLike {
  _write?: (data: Buffer, encoding: string, cb: WriteCallback) => void
  _writev?: (chunks: Array<{ chunk: Buffer | string; encoding: BufferEncoding }>, cb: WriteCallback) => void
}

/**
 * MQTT.js writes each packet as a dozen small writes inside one cork, so a
 * socket hands libuv thousands of tiny buffers per tick (writev was a quarter
 * of `rmq mqtt forward`'s CPU). Join each corked run into one buffer instead.
 */
function coalesceWrites(stream: unknown): void {
  const s = stream as SocketLike | undefined
  const write = s?._write
  if (!s || typeof write !== 'function' || typeof s._writev !== 'function') return
  s._writev = function (this: SocketLike, chunks, cb) {
    const parts = chunks.map((c) =>
      typeof c.chunk === 'string' ? Buffer.from(c.chunk, c.encoding) : c.chunk,
    )
    write.call(this, Buffer.concat(parts), 'buffer', cb)
  }
}

/**
 * Hold every PUBACK MQTT.js would send at once, and send it when `release`
 * is called with its packet id: a QoS 1 message is acknowledged only after
 * the caller committed it. MQTT.js sends the PUBACK of a PUBLISH before it
 * reads the next packet, so holding it in `customHandleAcks` would take one
 * message per commit; holding the packet itself keeps the stream flowing.
 * (It wraps the client's one packet writer, `_sendPacket`, the only private
 * member used; `test/e2e/mqtt-*.test.ts` would fail if a release changed it.)
 */
export function holdPubacks(client: MqttClient): {
  /** Send the held PUBACKs of `ids`; `codes` gives an MQTT 5 reason code for some (default 0, success). */
  release(ids: Iterable<number>, codes?: ReadonlyMap<number, number>): void
  held(): number
} {
  type Packet = { cmd: string; messageId?: number; reasonCode?: number }
  type Send = (packet: Packet, cb?: () => void, cbStorePut?: () => void) => void
  const target = client as unknown as { _sendPacket: Send }
  const send = target._sendPacket.bind(client)
  if (typeof send !== 'function')
    throw new RmqError('this MQTT.js has no _sendPacket: PUBACK after commit is not possible')
  const held = new Map<number, Packet>()
  // Released before MQTT.js got to its PUBACK (a commit inside the 'message' handler): send it when it comes.
  const early = new Map<number, number | undefined>()
  const withCode = (p: Packet, code: number | undefined) => (code ? { ...p, reasonCode: code } : p)
  target._sendPacket = (packet, cb, cbStorePut) => {
    if (packet.cmd === 'puback' && packet.messageId !== undefined) {
      if (early.has(packet.messageId)) {
        const code = early.get(packet.messageId)
        early.delete(packet.messageId)
        return send(withCode(packet, code), cb, cbStorePut)
      }
      held.set(packet.messageId, packet)
      cb?.()
      return
    }
    send(packet, cb, cbStorePut)
  }
  return {
    release(ids, codes) {
      if (!client.connected) return // the broker resends them on the next connection
      for (const id of ids) {
        const p = held.get(id)
        if (!p) {
          early.set(id, codes?.get(id))
          continue
        }
        held.delete(id)
        send(withCode(p, codes?.get(id)))
      }
    },
    held: () => held.size,
  }
}
