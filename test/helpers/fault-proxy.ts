import net from 'node:net'

/**
 * What the proxy does with connections, switchable at run time with
 * `setMode`. Byte thresholds count client -> upstream bytes per connection.
 * - pass: forward both ways.
 * - delay: forward both ways, each chunk held `ms` first (latency).
 * - stall: forward the first `afterBytes` (default 0), then hold everything:
 *   the connection stays open and silent (a hung link mid-body).
 * - reset: forward the first `afterBytes`, then reset both sides (RST).
 * - blackhole: accept and swallow everything; never contact upstream.
 * - refuse: reset every new connection at once (a host that is down).
 * - partition: nothing passes on any connection, open or new, either way,
 *   not even a close or a reset (a link that drops packets silently): a
 *   connection held by it stays held after the mode changes, and is no
 *   longer read from, so a peer's large send backs up as over a link that
 *   acknowledges nothing.
 * - mute-new: connections made from now on pass their first chunk up (a
 *   startup message) and everything down, then nothing more up: the
 *   connection is made, but its first statement never arrives. Open
 *   connections pass as before.
 */
export type FaultMode =
  | { kind: 'pass' }
  | { kind: 'delay'; ms: number }
  | { kind: 'stall'; afterBytes?: number }
  | { kind: 'reset'; afterBytes?: number }
  | { kind: 'blackhole' }
  | { kind: 'refuse' }
  | { kind: 'partition' }
  | { kind: 'mute-new' }

export interface FaultProxyStats {
  connections: number
  /** Bytes client -> upstream and upstream -> client actually forwarded. */
  bytesUp: number
  bytesDown: number
  resets: number
  /** Connections held silent by stall/blackhole. */
  stalls: number
}

interface Conn {
  client: net.Socket
  upstream?: net.Socket
  up: number
  held: boolean
  /** Held by a partition: a close from either side is not passed on either. */
  silent?: boolean
  /** Made under mute-new: chunks up after the first are dropped. */
  muted?: boolean
  chunksUp?: number
}

/** A small TCP proxy on 127.0.0.1 for fault injection in front of a real server. */
export class FaultProxy {
  port = 0
  readonly stats: FaultProxyStats = { connections: 0, bytesUp: 0, bytesDown: 0, resets: 0, stalls: 0 }
  private mode: FaultMode
  private server?: net.Server
  private readonly conns = new Set<Conn>()

  constructor(
    private target: { host: string; port: number },
    mode: FaultMode = { kind: 'pass' },
  ) {
    this.mode = mode
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  /** Change what happens from now on (existing connections included, except those already held). */
  setMode(mode: FaultMode): void {
    this.mode = mode
    // A partition holds the open connections at once, not only at their next byte.
    if (mode.kind === 'partition') for (const c of this.conns) this.hold(c, true)
  }

  /** Point new connections at another upstream (e.g. a restarted broker on a new port). */
  setTarget(target: { host: string; port: number }): void {
    this.target = target
  }

  async start(port = 0): Promise<this> {
    this.server = net.createServer((client) => this.accept(client))
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject)
      this.server!.listen(port, '127.0.0.1', () => resolve())
    })
    this.port = (this.server.address() as net.AddressInfo).port
    return this
  }

  private accept(client: net.Socket): void {
    this.stats.connections++
    client.on('error', () => {})
    const mode = this.mode
    if (mode.kind === 'refuse') {
      this.stats.resets++
      client.resetAndDestroy()
      return
    }
    const conn: Conn = { client, up: 0, held: false, muted: mode.kind === 'mute-new', chunksUp: 0 }
    this.conns.add(conn)
    client.on('close', () => {
      if (conn.silent) return // the partition swallows it; stop() closes the upstream side
      this.conns.delete(conn)
      conn.upstream?.destroy()
    })
    if (mode.kind === 'partition') {
      // Held from the start, as the open ones: nothing read, no close passed on.
      this.hold(conn, true)
      return
    }
    if (mode.kind === 'blackhole') {
      this.stats.stalls++
      client.on('data', () => {})
      return
    }
    const upstream = net.connect(this.target.port, this.target.host)
    conn.upstream = upstream
    upstream.on('error', () => conn.silent || client.destroy())
    upstream.on('close', () => conn.silent || client.destroy())
    client.on('data', (chunk: Buffer) => this.forwardUp(conn, chunk))
    upstream.on('data', (chunk: Buffer) => this.forwardDown(conn, chunk))
  }

  private forwardUp(conn: Conn, chunk: Buffer): void {
    if (conn.held) return
    if (conn.muted && (conn.chunksUp = (conn.chunksUp ?? 0) + 1) > 1) return
    const mode = this.mode
    if (mode.kind === 'partition') return this.hold(conn, true)
    if (mode.kind === 'stall' || mode.kind === 'reset') {
      const allowed = Math.max(0, (mode.afterBytes ?? 0) - conn.up)
      const part = chunk.subarray(0, allowed)
      if (part.length > 0) this.write(conn, conn.upstream!, part, 'up')
      if (part.length < chunk.length) {
        if (mode.kind === 'stall') this.hold(conn)
        else this.reset(conn)
      }
      return
    }
    if (mode.kind === 'blackhole') return
    this.write(conn, conn.upstream!, chunk, 'up', mode.kind === 'delay' ? mode.ms : 0)
  }

  private forwardDown(conn: Conn, chunk: Buffer): void {
    if (conn.held) return
    const mode = this.mode
    if (mode.kind === 'partition') return this.hold(conn, true)
    if (mode.kind === 'stall' || mode.kind === 'blackhole') {
      this.hold(conn)
      return
    }
    this.write(conn, conn.client, chunk, 'down', mode.kind === 'delay' ? mode.ms : 0)
  }

  private write(conn: Conn, to: net.Socket, chunk: Buffer, dir: 'up' | 'down', delayMs = 0): void {
    const send = () => {
      if (to.destroyed) return
      to.write(chunk)
      if (dir === 'up') {
        conn.up += chunk.length
        this.stats.bytesUp += chunk.length
      } else this.stats.bytesDown += chunk.length
    }
    if (delayMs > 0) setTimeout(send, delayMs)
    else send()
  }

  private hold(conn: Conn, silent = false): void {
    if (!conn.held) this.stats.stalls++
    conn.held = true
    if (silent) {
      conn.silent = true
      conn.client.pause()
      conn.upstream?.pause()
    }
  }

  private reset(conn: Conn): void {
    this.stats.resets++
    conn.held = true
    conn.upstream?.resetAndDestroy()
    conn.client.resetAndDestroy()
  }

  /** Reset every open connection now. */
  resetAll(): void {
    for (const c of this.conns) this.reset(c)
  }

  async stop(): Promise<void> {
    for (const c of this.conns) {
      c.client.destroy()
      c.upstream?.destroy()
    }
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()))
  }
}
