/**
 * Fault-injection harness: one real broker process, a TCP fault proxy in
 * front of it, and N edge nodes (each its own directory, outbox and
 * environment) driven only through the real CLI (`rmq publish`, `sync`,
 * `drain`, `cleanup`, `consume`). A workload recorder notes for every
 * publish whether it was acknowledged (exit 0 and an id), failed (a clear
 * non-zero exit: nothing stored) or unknown (the publisher was killed).
 * After the faults are removed, `settle()` drains every node, lets the
 * watermark release everything and reads the event stream for the checker.
 */
import type { ChildProcess } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { makeTempDir, parseJson, runCli, spawnCli, type CliResult } from '../helpers/cli.js'
import { FaultProxy, type FaultMode } from '../helpers/fault-proxy.js'
import { LyingProxy } from '../helpers/lying-proxy.js'
import { checkQueue, type Attempt, type CheckResult, type Delivered } from './checker.js'

export const FULL = process.env.RMQ_FAULTS === 'full'

/** Seeded PRNG (mulberry32), so a failing run can be replayed with its seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

export interface ProcResult extends CliResult {
  /** We sent SIGKILL to it. */
  killed: boolean
}

const children = new Set<ChildProcess>()
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL')
})

/** Run the real CLI; SIGKILL it after `killAfterMs` when given. */
export function runProc(
  args: string[],
  opts: {
    cwd: string
    env: Record<string, string>
    input?: string
    killAfterMs?: number
    timeoutMs?: number
  },
): Promise<ProcResult> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(args, { cwd: opts.cwd, env: opts.env })
    children.add(child)
    let stdout = ''
    let stderr = ''
    let killed = false
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const kill = () => {
      if (child.exitCode === null && child.signalCode === null) {
        killed = true
        child.kill('SIGKILL')
      }
    }
    const killer = opts.killAfterMs === undefined ? undefined : setTimeout(kill, opts.killAfterMs)
    const timeout = setTimeout(kill, opts.timeoutMs ?? 90_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(killer)
      clearTimeout(timeout)
      children.delete(child)
      resolve({ code, signal, stdout, stderr, killed })
    })
    child.stdin!.on('error', () => {})
    child.stdin!.end(opts.input ?? '')
  })
}

/** Counts for the tally: faults by kind, exits by code. */
export class Counter {
  readonly counts = new Map<string, number>()
  add(kind: string, n = 1): void {
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + n)
  }
}

export interface EdgeOptions {
  env?: Record<string, string>
  /** Outbox file (e.g. on a small tmpfs); default .rmq/outbox.db in the node's directory. */
  storagePath?: string
}

export class EdgeNode {
  readonly dir: string
  env: Record<string, string>
  private counter = 0
  /** Keys are unique across epochs: a recreated store keeps counting. */
  constructor(
    readonly cluster: Cluster,
    readonly id: string,
    token: string,
    opts: EdgeOptions,
  ) {
    this.dir = path.join(cluster.root, id)
    fs.mkdirSync(this.dir, { recursive: true })
    this.env = {
      RMQ_NODE_ID: id,
      RMQ_BROKER_URL: cluster.edgeUrl,
      RMQ_TOKEN: token,
      RMQ_SYNC_TIMEOUT: '2s',
      RMQ_SYNC_BACKOFF_INITIAL: '100ms',
      RMQ_SYNC_BACKOFF_MAX: '1s',
      RMQ_SYNC_BATCH_SIZE: '20',
      RMQ_CLEANUP_SENT_RETENTION: '0ms',
      ...(opts.storagePath ? { RMQ_STORAGE_PATH: opts.storagePath } : {}),
      ...opts.env,
    }
  }

  get storagePath(): string {
    return this.env.RMQ_STORAGE_PATH ?? path.join(this.dir, '.rmq/outbox.db')
  }

  run(
    args: string[],
    opts: { env?: Record<string, string>; input?: string; killAfterMs?: number; timeoutMs?: number } = {},
  ): Promise<ProcResult> {
    return runProc(args, { ...opts, cwd: this.dir, env: { ...this.env, ...opts.env } })
  }

  private record(key: string, status: Attempt['status'], id?: string): void {
    this.cluster.attempts.push({ key, node: this.id, status, id })
  }

  private exit(what: string, r: ProcResult): void {
    this.cluster.exits.add(
      `${what} ${r.killed ? 'killed' : r.signal ? `signal ${r.signal}` : `exit ${r.code}`}`,
    )
    if (r.code === 1) this.cluster.unexpected.push(`${this.id} ${what}: ${r.stderr.trim()}`)
  }

  /** Publish `n` messages with `publish --lines` (one transaction); record each. */
  async publishLines(
    n: number,
    opts: { killAfterMs?: number; env?: Record<string, string>; ts?: number } = {},
  ): Promise<ProcResult> {
    const keys = Array.from({ length: n }, () => `${this.id}.${this.counter++}`)
    const input = keys.map((k, i) => JSON.stringify({ k, i })).join('\n') + '\n'
    const args = ['publish', `faults/${this.id}`, '--lines', '-f', '-', '--json']
    if (opts.ts !== undefined) args.push('--timestamp', String(opts.ts))
    const r = await this.run(args, { input, killAfterMs: opts.killAfterMs, env: opts.env })
    this.exit('publish', r)
    if (r.code === 0) {
      const out = parseJson<{ node: string; epoch: string; ranges: Array<Record<string, number>> }>(r.stdout)
      const seqOf = (line: number) => {
        for (const g of out.ranges)
          if (line >= g.firstLine && line <= g.lastLine) return g.firstSeq + (line - g.firstLine)
        return undefined
      }
      keys.forEach((k, i) => {
        const seq = seqOf(i + 1)
        this.record(k, 'ok', seq === undefined ? undefined : `${out.node}:${out.epoch}:${seq}`)
      })
    } else if (r.killed || r.signal) {
      for (const k of keys) this.record(k, 'unknown')
    } else {
      // A clear error: the lines it names as stored are acknowledged, nothing else is stored.
      let storedLines = 0
      try {
        storedLines = Number(parseJson(r.stdout.trim().split('\n').pop()!).error?.details?.storedLines ?? 0)
      } catch {
        storedLines = 0
      }
      keys.forEach((k, i) => this.record(k, i < storedLines ? 'ok' : 'failed'))
    }
    return r
  }

  /** Publish one message as an argument (the Producer path). */
  async publishOne(opts: { killAfterMs?: number; env?: Record<string, string> } = {}): Promise<ProcResult> {
    const k = `${this.id}.${this.counter++}`
    const r = await this.run(['publish', `faults/${this.id}`, JSON.stringify({ k }), '--json'], opts)
    this.exit('publish', r)
    if (r.code === 0) this.record(k, 'ok', parseJson<{ id: string }>(r.stdout).id)
    else this.record(k, r.killed || r.signal ? 'unknown' : 'failed')
    return r
  }

  async sync(opts: { killAfterMs?: number; env?: Record<string, string>; args?: string[] } = {}) {
    const r = await this.run(['sync', '--json', ...(opts.args ?? [])], opts)
    this.exit('sync', r)
    return r
  }

  async cleanup(opts: { killAfterMs?: number; env?: Record<string, string> } = {}) {
    const r = await this.run(['cleanup', '--json'], opts)
    this.exit('cleanup', r)
    return r
  }

  /** Drain until empty (retrying a failed drain a few times). Throws when it cannot. */
  async drain(timeout = '60s'): Promise<void> {
    let last: ProcResult | undefined
    for (let i = 0; i < 4; i++) {
      last = await this.run(['drain', '--timeout', timeout, '--json'], { timeoutMs: 120_000 })
      if (last.code === 0) return
      await sleep(500)
    }
    throw new Error(`drain of ${this.id} failed: exit ${last?.code}\n${last?.stderr}`)
  }

  /** Delete the outbox (database, WAL, SHM): the next publish creates a store with a new epoch. */
  deleteStore(): void {
    for (const suffix of ['', '-wal', '-shm', '-journal'])
      fs.rmSync(this.storagePath + suffix, { force: true })
  }
}

export interface ClusterOptions {
  nodes?: number
  /** broker.ordering.maxLateness; short so that settle() releases everything soon. */
  maxLateness?: string
  brokerEnv?: Record<string, string>
  /** Broker data directory (e.g. a small tmpfs); a temp dir by default. */
  brokerDataDir?: string
  edge?: (i: number) => EdgeOptions
  /** Put a LyingProxy between the edges and the fault proxy (cluster.liar; honest after settle()). */
  liar?: boolean
}

export class Cluster {
  readonly attempts: Attempt[] = []
  readonly faults = new Counter()
  readonly exits = new Counter()
  /** stderr of every process that exited 1 (an unexpected error: a bug). */
  readonly unexpected: string[] = []
  broker!: BrokerProcess
  proxy!: FaultProxy
  /** With opts.liar: the edges' broker, answering some requests with lies. */
  liar?: LyingProxy
  nodes: EdgeNode[] = []
  readonly root: string
  private readonly tmp: ReturnType<typeof makeTempDir>
  private readonly dataDir: string
  private tokens = new Map<string, string>()
  /** The current broker process was stopped or killed on purpose. */
  private brokerKilled = false

  private constructor(private readonly opts: ClusterOptions) {
    this.tmp = makeTempDir('rmq-faults-')
    this.root = this.tmp.dir
    this.dataDir = opts.brokerDataDir ?? path.join(this.root, 'broker')
    fs.mkdirSync(this.dataDir, { recursive: true })
  }

  static async start(opts: ClusterOptions = {}): Promise<Cluster> {
    const c = new Cluster(opts)
    await c.startBroker()
    c.proxy = await new FaultProxy({ host: '127.0.0.1', port: c.broker.port }).start()
    if (opts.liar)
      c.liar = await new LyingProxy({ host: '127.0.0.1', port: c.proxy.port }, (t) =>
        c.nodeOfToken(t),
      ).start()
    const ids = Array.from({ length: opts.nodes ?? 1 }, (_, i) => `n${i + 1}`)
    await Promise.all(ids.map((id) => c.createToken(id)))
    ids.forEach((id, i) => c.addNode(id, opts.edge?.(i) ?? {}))
    return c
  }

  private brokerEnv(extra: Record<string, string> = {}): Record<string, string> {
    return {
      RMQ_BROKER_ORDERING_MAX_LATENESS: this.opts.maxLateness ?? '3s',
      RMQ_BROKER_LIMITS_RATE_PER_NODE: '0',
      ...this.opts.brokerEnv,
      ...extra,
    }
  }

  /** Start the broker (again) on its data dir; the same port after the first start. */
  async startBroker(env: Record<string, string> = {}): Promise<void> {
    const prev = this.broker
    if (prev && !this.brokerKilled && prev.child.exitCode !== null)
      this.unexpected.push(`broker exited by itself (${prev.child.exitCode}): ${prev.logs().slice(-2000)}`)
    this.brokerKilled = false
    this.broker = await startBrokerProcess({
      dataDir: this.dataDir,
      port: this.broker?.port ?? 0,
      env: this.brokerEnv(env),
    })
  }

  /** SIGTERM the broker and wait for its clean exit. */
  async stopBroker(): Promise<void> {
    this.brokerKilled = true
    await this.broker.stop()
  }

  async killBroker(): Promise<void> {
    this.faults.add('SIGKILL broker')
    this.brokerKilled = true
    await this.broker.kill()
  }

  /** Create the node's token with the real `rmq broker token create`. */
  async createToken(id: string): Promise<string> {
    const r = await runCli(['broker', 'token', 'create', id, '--data-dir', this.dataDir])
    if (r.code !== 0) throw new Error(`token create failed: ${r.stderr}`)
    this.tokens.set(id, r.stdout.trim())
    return r.stdout.trim()
  }

  /** Add an edge node whose token was made with createToken(). */
  addNode(id: string, opts: EdgeOptions = {}): EdgeNode {
    const node = new EdgeNode(this, id, this.token(id), opts)
    this.nodes.push(node)
    return node
  }

  token(id: string): string {
    return this.tokens.get(id)!
  }

  nodeOfToken(token: string): string | undefined {
    for (const [id, t] of this.tokens) if (t === token) return id
    return undefined
  }

  /** Where the edges send their batches: the lying proxy when there is one, else the fault proxy. */
  get edgeUrl(): string {
    return (this.liar ?? this.proxy).url
  }

  setLink(mode: FaultMode): void {
    if (mode.kind !== 'pass') this.faults.add(`proxy ${mode.kind}`)
    this.proxy.setMode(mode)
  }

  /** Read a whole stream with the real `rmq consume --json`. */
  async consume(order: 'event' | 'arrival'): Promise<Delivered[]> {
    const id = this.nodes[0]?.id
    const r = await runCli(['consume', '#', '--json', '--order', order], {
      // A node token may not read: the broker's admin credential (made once per data dir) does.
      env: { RMQ_BROKER_URL: this.broker.url, ...(id ? { RMQ_TOKEN: await this.broker.adminToken() } : {}) },
      timeoutMs: 120_000,
    })
    if (r.code !== 0) throw new Error(`consume failed: exit ${r.code}\n${r.stderr}`)
    return r.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => parseJson<Delivered>(l))
  }

  /**
   * Remove every fault, drain every node, wait until the watermark has
   * released everything that arrived, and check what the event stream holds.
   */
  async settle(): Promise<{ check: CheckResult; event: Delivered[]; arrival: Delivered[] }> {
    this.proxy.setMode({ kind: 'pass' })
    this.liar?.honest()
    if (this.broker.child.exitCode !== null || this.broker.child.signalCode !== null) await this.startBroker()
    await Promise.all(this.nodes.map((n) => n.drain()))
    const deadline = Date.now() + 60_000
    let arrival: Delivered[] = []
    let event: Delivered[] = []
    for (;;) {
      ;[arrival, event] = await Promise.all([this.consume('arrival'), this.consume('event')])
      if (event.length >= arrival.length || Date.now() > deadline) break
      await sleep(1000)
    }
    return { check: checkQueue(this.attempts, event), event, arrival }
  }

  async cleanup(): Promise<void> {
    await this.liar?.stop().catch(() => {})
    await this.proxy?.stop().catch(() => {})
    await this.broker?.kill().catch(() => {})
    this.tmp.cleanup()
  }
}

/** Mount a tmpfs of `size` at a new directory (root only); undefined when that is not possible. */
export function mountTmpfs(
  size: string,
): { dir: string; resize(size: string): void; unmount(): void } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const dir = fs.mkdtempSync(path.join(fs.realpathSync('/tmp'), 'rmq-tmpfs-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' })
  } catch {
    fs.rmSync(dir, { recursive: true, force: true })
    return undefined
  }
  return {
    dir,
    resize: (s) => execFileSync('mount', ['-o', `remount,size=${s}`, dir], { stdio: 'ignore' }),
    unmount() {
      try {
        execFileSync('umount', ['-l', dir], { stdio: 'ignore' })
      } catch {
        // already gone
      }
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}
