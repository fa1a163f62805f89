import http from 'node:http'
import type net from 'node:net'
import { decodeBatch } from './fake-broker.js'

/**
 * The ways a broker (or something in front of it) can answer a batch with
 * something that is not its acknowledgement. `forwarded` lies reach the real
 * broker first (it stored the batch; the edge must resend and be
 * deduplicated), the others never do (nothing stored; the edge must keep
 * everything). Each names what the edge's error must say.
 */
export const LIE_KINDS = {
  /** 200 with a JSON object that is not an ack (no batch id, no count). */
  'not-an-ack': /without an acknowledgement|acknowledg/,
  /** 200 text/html (a captive portal, a default web server page). */
  html: /content type "text\/html"/,
  /** 204, no body. */
  'no-body': /status 204, expected 200/,
  /** 200 JSON cut short (valid HTTP, invalid JSON). */
  truncated: /not JSON|JSON|acknowledg/,
  /** The real ack with another batch id. */
  'other-batch': /acknowledges batch "b-someone-else"/,
  /** The real ack with accepted + duplicates one more than what was sent. */
  miscount: /counts|accepted|duplicates/,
  /** 307 to the real broker: the edge must not follow it. */
  redirect: /broker answered 307 \(a redirect/,
  /** The real ack behind 1 MiB of leading spaces: valid JSON, over the cap. */
  huge: /larger than the cap/,
  /** Headers and half a body, then silence (until the client gives up). */
  hang: /no answer from .* within/,
} as const

export type LieKind = keyof typeof LIE_KINDS
export const LIES = Object.keys(LIE_KINDS) as LieKind[]

export interface Lie {
  kind: LieKind
  /** Let the real broker store the batch first (only kinds that alter its ack may be both). */
  forwarded: boolean
}

/** Kinds that need the real ack: always forwarded. */
const NEEDS_ACK: ReadonlySet<LieKind> = new Set(['other-batch', 'miscount', 'huge'])

const MAX_REQUEST = 8 << 20
const MAX_REPLY = 1 << 20
/** A hung reply is cut off after this, whatever the client does (bounded in time). */
const HANG_MS = 15_000

/**
 * An HTTP proxy on 127.0.0.1 in front of a broker (or a FaultProxy in front
 * of it) that answers some requests with a lie instead of the broker's
 * answer: `decide` is asked for each request (the node is known by its
 * bearer token) and returns a lie or undefined (pass the broker's answer
 * through). Counts the lies told per node.
 */
export class LyingProxy {
  port = 0
  /**
   * Lies told about batches that carried messages, by node (from the bearer
   * token); `toldEmpty` about requests without (heartbeats, closing reports),
   * and `told` by `kind` / `kind (forwarded)`.
   */
  readonly toldTo = new Map<string, number>()
  readonly toldEmpty = new Map<string, number>()
  readonly told = new Map<string, number>()
  decide: (node: string, messages: number) => Lie | undefined = () => undefined
  private server?: http.Server
  private readonly sockets = new Set<net.Socket>()
  private readonly timers = new Set<NodeJS.Timeout>()

  constructor(
    private readonly upstream: { host: string; port: number },
    private readonly nodeOf: (token: string) => string | undefined,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  /** Pass everything through from now on. */
  honest(): void {
    this.decide = () => undefined
  }

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => void this.handle(req, res).catch(() => res.destroy()))
    this.server.on('connection', (s) => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve))
    this.port = (this.server!.address() as net.AddressInfo).port
    return this
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    let size = 0
    for await (const c of req) {
      size += (c as Buffer).length
      if (size > MAX_REQUEST) return void res.destroy()
      chunks.push(c as Buffer)
    }
    const body = Buffer.concat(chunks)
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1]
    const node = (token && this.nodeOf(token)) ?? '?'
    let messages = 0
    if (req.method === 'POST')
      try {
        messages = (await decodeBatch(req.headers, body)).messages.length
      } catch {
        messages = 0 // not a batch: the broker will say so
      }
    const lie = req.method === 'POST' ? this.decide(node, messages) : undefined
    const forward = !lie || lie.forwarded || NEEDS_ACK.has(lie.kind)
    const real = forward ? await this.forward(req, body) : undefined
    if (!lie || (real && real.status !== 200)) {
      // The honest answer (a broker's own refusal is no lie: relayed as it is).
      if (!real) return void res.destroy()
      res.writeHead(real.status, real.headers)
      return void res.end(real.body)
    }
    const to = messages > 0 ? this.toldTo : this.toldEmpty
    to.set(node, (to.get(node) ?? 0) + 1)
    const name = `${lie.kind}${forward ? ' (forwarded)' : ''}`
    this.told.set(name, (this.told.get(name) ?? 0) + 1)
    this.lie(lie.kind, res, real?.body)
  }

  private lie(kind: LieKind, res: http.ServerResponse, realBody: Buffer | undefined): void {
    const json = (status: number, body: string) => {
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    }
    const ack = () => JSON.parse(realBody!.toString('utf8')) as Record<string, number | string | null>
    switch (kind) {
      case 'not-an-ack':
        return json(200, '{"accepted":0}')
      case 'html':
        res.writeHead(200, { 'content-type': 'text/html' })
        return void res.end('<html><body>Welcome to nginx!</body></html>')
      case 'no-body':
        res.writeHead(204)
        return void res.end()
      case 'truncated': {
        const text = realBody ? realBody.toString('utf8') : '{"accepted":20,"duplicates":0,"batch":"b-1"}'
        return json(200, text.slice(0, Math.floor(text.length / 2)))
      }
      case 'other-batch':
        return json(200, JSON.stringify({ ...ack(), batch: 'b-someone-else' }))
      case 'miscount': {
        const a = ack()
        // One more than the broker took: accepted + duplicates is then never the count sent.
        return json(200, JSON.stringify({ ...a, accepted: Number(a.accepted) + 1 }))
      }
      case 'redirect':
        res.writeHead(307, { location: `http://${this.upstream.host}:${this.upstream.port}/v1/batches` })
        return void res.end()
      case 'huge':
        return json(200, ' '.repeat(1 << 20) + realBody!.toString('utf8'))
      case 'hang': {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"accepted":')
        const t = setTimeout(() => res.destroy(), HANG_MS)
        this.timers.add(t)
        res.once('close', () => (clearTimeout(t), this.timers.delete(t)))
      }
    }
  }

  private forward(
    req: http.IncomingMessage,
    body: Buffer,
  ): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer } | undefined> {
    return new Promise((resolve) => {
      const up = http.request(
        {
          host: this.upstream.host,
          port: this.upstream.port,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, connection: 'close' },
        },
        (res) => {
          const parts: Buffer[] = []
          let n = 0
          res.on('data', (c: Buffer) => {
            n += c.length
            if (n > MAX_REPLY) return void up.destroy()
            parts.push(c)
          })
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(parts) }),
          )
          res.on('error', () => resolve(undefined))
        },
      )
      up.on('error', () => resolve(undefined))
      up.setTimeout(30_000, () => up.destroy())
      up.end(body)
    })
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t)
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()))
  }
}
