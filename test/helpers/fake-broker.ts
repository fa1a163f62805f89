import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { codecForEncoding } from '../../src/core/compression/registry.js'
import {
  BROKER_FEATURES,
  decodeFrames,
  FRAMES_CONTENT_TYPE,
  type BatchBody,
} from '../../src/protocol/batch.js'

export interface ReceivedBatch {
  body: BatchBody
  headers: http.IncomingHttpHeaders
  wireBytes: number
  /** Requests in progress at this fake when this one's body was read (this one included). */
  inProgress: number
}

/** A POST /v1/batches body as the edge sent it (any codec, JSON or frames), decoded. */
export async function decodeBatch(headers: http.IncomingHttpHeaders, wire: Buffer): Promise<BatchBody> {
  const codec = await codecForEncoding(headers['content-encoding'])
  const raw = await codec.decompress(wire, { maxOutputBytes: 64 << 20 })
  const frames = headers['content-type'] === FRAMES_CONTENT_TYPE
  const body = frames ? decodeFrames(raw) : (JSON.parse(raw.toString()) as BatchBody)
  // The same messages whichever the body: frames' `size` is framing, not part of a message.
  if (frames) for (const m of body.messages) delete (m as { size?: number }).size
  return body
}

/** What the fake answers to one request; undefined: 200 with an ack. */
export type Reply =
  | undefined
  | { status: number; body?: unknown; headers?: Record<string, string>; delayMs?: number }
  | { hang: true }

/**
 * An in-process stand-in for the broker's POST /v1/batches on 127.0.0.1 and
 * a free port: it decompresses and parses every request, records it, and
 * answers what `reply` says (200 with an ack by default). Accepted messages
 * are deduplicated on (node, epoch, seq) like the real broker.
 */
export class FakeBroker {
  readonly received: ReceivedBatch[] = []
  /** Accepted messages by `node:epoch:seq`, first acceptance only. */
  readonly accepted = new Map<string, BatchBody['messages'][number]>()
  reply: (req: ReceivedBatch, n: number) => Reply | Promise<Reply> = () => undefined
  /**
   * Listed in every ack: BROKER_FEATURES by default, as the real broker;
   * undefined for an older broker. Without `frames`, a frames body gets the
   * 415 an older broker's HTTP framework gives a content type it has no
   * parser for.
   */
  features: string[] | undefined = [...BROKER_FEATURES]
  /** The most requests this fake had in progress at once. */
  maxInProgress = 0
  private inProgress = 0
  private server?: http.Server
  private readonly sockets = new Set<import('node:net').Socket>()
  port = 0

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => void this.handle(req, res))
    this.server.on('connection', (s) => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve))
    this.port = (this.server!.address() as AddressInfo).port
    return this
  }

  /** Batches that carried messages (not heartbeats). */
  get batches(): ReceivedBatch[] {
    return this.received.filter((r) => r.body.messages.length > 0)
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.inProgress++
    res.once('close', () => this.inProgress--)
    this.maxInProgress = Math.max(this.maxInProgress, this.inProgress)
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    const wire = Buffer.concat(chunks)
    const body = await decodeBatch(req.headers, wire)
    const rec: ReceivedBatch = {
      body,
      headers: req.headers,
      wireBytes: wire.length,
      inProgress: this.inProgress,
    }
    this.received.push(rec)
    const reply = await this.reply(rec, this.received.length)
    if (reply && 'hang' in reply) return
    if (reply?.delayMs) await new Promise((r) => setTimeout(r, reply.delayMs))
    if (reply && reply.status !== 200) {
      res.writeHead(reply.status, { 'content-type': 'application/json', ...(reply.headers ?? {}) })
      res.end(JSON.stringify(reply.body ?? { error: { message: `status ${reply.status}` } }))
      return
    }
    if (req.headers['content-type'] === FRAMES_CONTENT_TYPE && !this.features?.includes('frames')) {
      res.writeHead(415, { 'content-type': 'application/json' })
      res.end(
        JSON.stringify({
          statusCode: 415,
          code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE',
          error: 'Unsupported Media Type',
          message: `Unsupported Media Type: ${FRAMES_CONTENT_TYPE}`,
        }),
      )
      return
    }
    let dup = 0
    for (const m of body.messages) {
      const id = `${body.node}:${body.epoch}:${m.seq}`
      if (this.accepted.has(id)) dup++
      else this.accepted.set(id, m)
    }
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(
      JSON.stringify({
        accepted: body.messages.length - dup,
        duplicates: dup,
        late: 0,
        watermark: null,
        batch: body.batch,
        count: body.messages.length,
        ...(this.features ? { features: this.features } : {}),
      }),
    )
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()))
  }
}
