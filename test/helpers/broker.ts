/**
 * Real broker processes for end-to-end tests, and a hand-made HTTP client
 * that builds and compresses batches without the edge sync engine.
 *
 *   const broker = await startBrokerProcess({ auth: 'token' })
 *   const token = await broker.createToken('gw-1')
 *   const res = await postBatch(broker.url, makeBatch('gw-1', [...]), { token, encoding: 'zstd' })
 *   await broker.stop()            // SIGTERM, waits for a clean exit
 *   await broker.kill()            // SIGKILL
 *   const again = await broker.restart()  // same data dir and port
 */
import type { ChildProcess } from 'node:child_process'
import http from 'node:http'
import zlib from 'node:zlib'
import { createRequire } from 'node:module'
import type { BatchBody, WireMessage } from '../../src/protocol/batch.js'
import type { ConsumedMessage } from '../../src/protocol/messages.js'
import { makeTempDir, runCli, spawnCli } from './cli.js'

const require = createRequire(import.meta.url)

export interface BrokerProcessOptions {
  /** Data directory; a fresh temp dir (removed at cleanup) when omitted. */
  dataDir?: string
  auth?: 'token' | 'mtls' | 'token+mtls' | 'none'
  /** Port to listen on; 0 (default) picks a free one. */
  port?: number
  /** Extra RMQ_* environment (e.g. RMQ_BROKER_ORDERING_MAX_LATENESS). */
  env?: Record<string, string>
  args?: string[]
  /** How long to wait for the listening line. */
  readyTimeoutMs?: number
}

export interface TokenOptions {
  role?: 'node' | 'consumer' | 'monitor' | 'admin'
  topics?: string
  groups?: string
  expires?: string
}

/** `rmq broker token create` arguments for these options. */
export function tokenCreateArgs(name: string, dataDir: string, opts: TokenOptions = {}): string[] {
  return [
    'broker',
    'token',
    'create',
    name,
    '--data-dir',
    dataDir,
    ...(opts.role ? ['--role', opts.role] : []),
    ...(opts.topics ? ['--topics', opts.topics] : []),
    ...(opts.groups ? ['--groups', opts.groups] : []),
    ...(opts.expires ? ['--expires', opts.expires] : []),
  ]
}

const adminTokens = new Map<string, Promise<string>>()

export interface BrokerProcess {
  url: string
  port: number
  dataDir: string
  child: ChildProcess
  /** stderr (logs) so far. */
  logs(): string
  /** Resident set size of the broker process in bytes (from /proc). */
  rss(): number
  /** Create a token with the real CLI on the same data dir: a node's (the default) or another role's. */
  createToken(name: string, opts?: TokenOptions): Promise<string>
  /** An admin credential (`test-admin`, made once per data dir): reads messages, the fleet, /metrics. */
  adminToken(): Promise<string>
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(): Promise<number | null>
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>
  /** Start again on the same data dir and port (after stop or kill). */
  restart(): Promise<BrokerProcess>
  /** Stop if running and remove a temp data dir. */
  cleanup(): Promise<void>
}

const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL')
})

export async function startBrokerProcess(opts: BrokerProcessOptions = {}): Promise<BrokerProcess> {
  let tmp: ReturnType<typeof makeTempDir> | undefined
  const dataDir = opts.dataDir ?? (tmp = makeTempDir('rmq-broker-e2e-')).dir
  const env = {
    RMQ_BROKER_AUTH: opts.auth ?? 'token',
    RMQ_BROKER_DATA_DIR: dataDir,
    ...opts.env,
  }
  const args = [
    'broker',
    'start',
    '--host',
    '127.0.0.1',
    '--port',
    String(opts.port ?? 0),
    '--log-format',
    'json',
    ...(opts.args ?? []),
  ]
  const child = spawnCli(args, { cwd: dataDir, env })
  running.add(child)
  let logs = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (logs += d))
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      running.delete(child)
      resolve(code)
    }),
  )
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`broker did not start within ${opts.readyTimeoutMs ?? 20_000} ms:\n${logs}`))
    }, opts.readyTimeoutMs ?? 20_000)
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      logs += d
      const m = /rmq broker listening on (https?:\/\/\S+)/.exec(logs)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    void exited.then((code) => {
      clearTimeout(timer)
      reject(new Error(`broker exited with ${code} before listening:\n${logs}`))
    })
  })
  const port = Number(new URL(url).port)
  let alive = true
  void exited.then(() => (alive = false))
  const proc: BrokerProcess = {
    url,
    port,
    dataDir,
    child,
    logs: () => logs,
    rss() {
      const fs = require('node:fs') as typeof import('node:fs')
      const status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8')
      const m = /VmRSS:\s+(\d+) kB/.exec(status)
      return m ? Number(m[1]) * 1024 : 0
    },
    async createToken(name, opts) {
      const r = await runCli(tokenCreateArgs(name, dataDir, opts))
      if (r.code !== 0) throw new Error(`token create failed: ${r.stderr}`)
      return r.stdout.trim()
    },
    adminToken() {
      let t = adminTokens.get(dataDir)
      if (!t) adminTokens.set(dataDir, (t = proc.createToken('test-admin', { role: 'admin' })))
      return t
    },
    async stop() {
      if (!alive) return exited
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      const code = await exited
      clearTimeout(timer)
      return code
    },
    async kill() {
      if (alive) child.kill('SIGKILL')
      await exited
    },
    restart: () => startBrokerProcess({ ...opts, dataDir, port }),
    async cleanup() {
      await proc.stop()
      tmp?.cleanup()
    },
  }
  return proc
}

// ---- hand-made client -------------------------------------------------------

export function message(seq: number, ts: number, topic = 'plant/line1/temp', payload?: string): WireMessage {
  return {
    seq,
    topic,
    ts,
    payload: payload ?? JSON.stringify({ seq, v: 20 + (seq % 7) }),
    enc: 'utf8',
    expiresAt: null,
    priority: 4,
    contentType: 'application/json',
  }
}

export function makeBatch(
  node: string,
  messages: WireMessage[],
  opts: Partial<Omit<BatchBody, 'node' | 'messages'>> = {},
): BatchBody {
  const last = messages.length ? messages[messages.length - 1].ts : Date.now()
  return {
    node,
    epoch: opts.epoch ?? `epoch-${node}`,
    batch: opts.batch ?? `b-${node}-${messages[0]?.seq ?? 'hb'}-${messages.length}`,
    clock: opts.clock ?? Math.max(Date.now(), last),
    backlog: opts.backlog ?? { pending: 0, bytes: 0, oldestTs: null },
    ...(opts.direct === undefined ? {} : { direct: opts.direct }),
    ...(opts.stats === undefined ? {} : { stats: opts.stats }),
    messages,
  }
}

export type Encoding = 'zstd' | 'gzip' | 'identity'

export function encodeBody(body: unknown, encoding: Encoding = 'identity'): Buffer {
  const raw = Buffer.isBuffer(body)
    ? body
    : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body))
  if (encoding === 'gzip') return zlib.gzipSync(raw)
  if (encoding === 'zstd') {
    const zstd = require('zstd-napi') as typeof import('zstd-napi')
    return zstd.compress(raw, { compressionLevel: 3 })
  }
  return raw
}

export interface HttpResult {
  status: number
  headers: http.IncomingHttpHeaders
  body: any
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 })

/** A raw request: body already encoded (or a JSON value, sent as identity). */
export function request(
  method: string,
  url: string,
  opts: { body?: Buffer; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method, agent, headers: opts.headers, timeout: opts.timeoutMs ?? 30_000 },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let body: unknown = text
          try {
            body = JSON.parse(text)
          } catch {
            // keep text
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body })
        })
      },
    )
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** POST /v1/batches with the body encoded as asked. `body` may be raw bytes (already encoded). */
export function postBatch(
  baseUrl: string,
  body: BatchBody | Buffer | string,
  opts: { token?: string; encoding?: Encoding; contentEncodingHeader?: string; raw?: boolean } = {},
): Promise<HttpResult> {
  const encoding = opts.encoding ?? 'identity'
  const payload = opts.raw && Buffer.isBuffer(body) ? body : encodeBody(body, encoding)
  return request('POST', `${baseUrl}/v1/batches`, {
    body: payload,
    headers: {
      'content-type': 'application/json',
      'content-encoding': opts.contentEncodingHeader ?? encoding,
      ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
    },
  })
}

export async function getMessages(
  baseUrl: string,
  query: Record<string, string | number>,
  token?: string,
): Promise<HttpResult> {
  const q = new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)]))
  return request('GET', `${baseUrl}/v1/messages?${q}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  })
}

/** Every message the broker holds, in arrival (or event) order, page by page (at most `maxPages` of 1,000). */
export async function allMessages(
  baseUrl: string,
  token?: string,
  maxPages = 100,
  order: 'arrival' | 'event' = 'arrival',
): Promise<ConsumedMessage[]> {
  const out: ConsumedMessage[] = []
  let after: string | number | undefined
  for (let page = 0; page < maxPages; page++) {
    const q: Record<string, string | number> = { order, topic: '#', limit: 1000 }
    if (after !== undefined) q.after = after
    const r = await getMessages(baseUrl, q, token)
    if (r.status !== 200) throw new Error(`GET /v1/messages: ${r.status} ${JSON.stringify(r.body)}`)
    const body = r.body as { messages: ConsumedMessage[]; next?: string | number; more?: boolean }
    out.push(...body.messages)
    if (!body.more || body.messages.length === 0) return out
    after = body.next
  }
  throw new Error(`more than ${maxPages} pages of messages`)
}
