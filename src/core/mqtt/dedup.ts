/**
 * How `rmq mqtt ingest` recognises a redelivery of a message it already
 * stored (a crash, or a lost connection, between the outbox commit and the
 * PUBACK), without ever taking a distinct message for one.
 *
 * Every stored message carries headers `mqtt-client` (the client id) and
 * `mqtt-pid` (its MQTT packet id), written in the same transaction as the
 * message itself, so the record cannot be lost apart from it. A message is a
 * duplicate only if all of these hold:
 *   1. it comes with DUP=1 (the broker says it sent it before);
 *   2. a message with the same packet id is among the last W (2 x Receive
 *      Maximum) messages stored by this client id in this MQTT session;
 *   3. that message has the same rmq topic and the same payload bytes.
 * Why no distinct message is dropped: the broker may reuse a packet id only
 * after it received the PUBACK of its earlier message, and ingest sends a
 * PUBACK only after the commit. A redelivered message whose first copy was
 * stored is unacknowledged, and at most Receive Maximum messages are
 * unacknowledged at once, so its first copy is among the last R stored.
 * For a distinct message to match, the broker would have to reuse the packet
 * id within W messages (Mosquitto hands them out in sequence: 65,535 before
 * one comes back) and the new message would have to carry the same topic and
 * payload. Where a check cannot be made (the first copy was already removed
 * by cleanup, another driver without browse), the message is stored again:
 * a duplicate, never a loss.
 */
import type { CompleteDriver } from '../storage/complete-driver.js'
import type { NewMessage } from '../storage/driver.js'

export const CLIENT_HEADER = 'mqtt-client'
export const PID_HEADER = 'mqtt-pid'
/** Outbox state key (+ client id): the last seq stored before the client's current MQTT session began. */
export const SESSION_STATE_PREFIX = 'mqtt.ingest.session.'

export function withIngestHeaders(m: NewMessage, clientId: string, pid: number | undefined): NewMessage {
  if (pid === undefined) return m
  return { ...m, headers: { ...(m.headers ?? {}), [CLIENT_HEADER]: clientId, [PID_HEADER]: String(pid) } }
}

export function sameMessage(
  a: { topic: string; payload: Uint8Array },
  b: { topic: string; payload: Uint8Array },
): boolean {
  return (
    a.topic === b.topic &&
    Buffer.from(a.payload.buffer, a.payload.byteOffset, a.payload.byteLength).equals(b.payload)
  )
}

/** The packet ids of the last `size` messages this client stored: pid -> seq. */
export class DedupWindow {
  private readonly seqs = new Map<number, { seq: number; n: number }>()
  private n = 0
  private floor: number

  constructor(
    private readonly clientId: string,
    readonly size: number,
    /** Seqs at or below this belong to an earlier session: never matched. */
    floor = 0,
  ) {
    this.floor = floor
  }

  /** The window as the outbox holds it (newest `size` messages of `clientId` after the session's floor). */
  static async load(
    outbox: CompleteDriver,
    clientId: string,
    size: number,
    sessionState: string | undefined,
  ): Promise<DedupWindow> {
    const floor = Number(sessionState ?? 0) || 0
    const w = new DedupWindow(clientId, size, floor)
    const found: Array<{ pid: number; seq: number }> = []
    let after: number | undefined
    // Other writers (rmq publish) may interleave: scan a bounded multiple of the window.
    for (let scanned = 0; found.length < size && scanned < 4 * size;) {
      let page
      try {
        page = await outbox.browse({
          status: 'all',
          order: 'desc',
          limit: 1000,
          afterSeq: after,
          now: Date.now(),
        })
      } catch {
        break // a driver that cannot list every status: no window, redeliveries are stored again
      }
      if (page.length === 0) break
      for (const msg of page) {
        if (msg.seq <= floor) return w.fill(found)
        const h = msg.headers
        if (h?.[CLIENT_HEADER] === clientId && h[PID_HEADER] !== undefined)
          found.push({ pid: Number(h[PID_HEADER]), seq: msg.seq })
        if (found.length >= size) break
      }
      scanned += page.length
      after = page[page.length - 1].seq
    }
    return w.fill(found)
  }

  private fill(newestFirst: Array<{ pid: number; seq: number }>): DedupWindow {
    for (let i = newestFirst.length - 1; i >= 0; i--) this.add(newestFirst[i].pid, newestFirst[i].seq)
    return this
  }

  add(pid: number, seq: number): void {
    this.seqs.set(pid, { seq, n: ++this.n })
  }

  /** A new MQTT session: what came before can never be redelivered in it. */
  clear(floor: number): void {
    this.seqs.clear()
    this.floor = floor
  }

  /** The seq of the message with `pid` within the window, if any. */
  seqOf(pid: number): number | undefined {
    const e = this.seqs.get(pid)
    return e && this.n - e.n < this.size && e.seq > this.floor ? e.seq : undefined
  }

  /** Whether the outbox holds `m` as the message with `pid` in the window (rule 2 and 3 above). */
  async holds(outbox: CompleteDriver, pid: number, m: NewMessage): Promise<boolean> {
    const seq = this.seqOf(pid)
    if (seq === undefined) return false
    const [stored] = await outbox.browse({
      status: 'all',
      order: 'asc',
      afterSeq: seq - 1,
      limit: 1,
      now: Date.now(),
    })
    return (
      stored !== undefined &&
      stored.seq === seq &&
      stored.headers?.[CLIENT_HEADER] === this.clientId &&
      sameMessage(stored, m)
    )
  }
}
