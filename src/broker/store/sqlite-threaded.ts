/**
 * The SQLite store as the broker server runs it, with two connections: one
 * in this thread (all reads) and one on a writer thread (sqlite-worker.ts)
 * with its own group commit. Concurrent batches from several nodes go to
 * the writer thread, so that HTTP, decompression and parsing of the next
 * batches run on one core while the other commits, and an fsync never
 * blocks the event loop. A batch that arrives alone (one node replaying a
 * backlog) is committed here instead: handing it over would only add work.
 * Writes never run on both connections at once (a side is chosen only when
 * neither has a write outstanding), and WAL gives every read the last
 * committed state, so a client sees its own writes.
 */
import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { ConfigError, ExitCode, StorageError } from '../../shared/errors.js'
import type { BatchAck, BatchBody } from '../../protocol/batch.js'
import type { BatchCheckOptions, BatchReply } from '../batch-checks.js'
import { HttpError } from '../http-error.js'
import { toColumns, transferList } from './batch-columns.js'
import { ingestJsonHere } from './json-ingest.js'
import { openSqliteBrokerStore, type SqliteBrokerStore } from './sqlite.js'
import {
  StoreUnavailableError,
  type BrokerStore,
  type BrokerStoreOptions,
  type IngestContext,
} from './types.js'

export interface WorkerRequest {
  id: number
  /**
   * A BrokerStore method, `ingestColumns` (ingest of a batch as BatchColumns)
   * or `ingestJson` (a JSON body's bytes, parsed and checked there).
   */
  method: string
  args: unknown[]
}

export interface WorkerError {
  message: string
  name: string
  code?: string
  unavailable: boolean
  /** A storage or configuration error for the user (opening the store): rebuilt as one here. */
  user?: { exitCode: number; suggestion?: string }
  /** A refusal of the request (batch-checks.ts): rebuilt as the same HttpError here. */
  http?: { status: number; headers: Record<string, string> }
}

export type WorkerReply = { id: number; value: unknown } | { id: number; error: WorkerError }

export function toWorkerError(err: unknown): WorkerError {
  const e = err as { message?: unknown; name?: unknown; code?: unknown }
  return {
    message: typeof e?.message === 'string' ? e.message : String(err),
    name: typeof e?.name === 'string' ? e.name : 'Error',
    code: typeof e?.code === 'string' ? e.code : undefined,
    unavailable: err instanceof StoreUnavailableError,
    user:
      err instanceof StorageError || err instanceof ConfigError
        ? { exitCode: err.exitCode, suggestion: err.suggestion }
        : undefined,
    http: err instanceof HttpError ? { status: err.statusCode, headers: err.headers } : undefined,
  }
}

function fromWorkerError(e: WorkerError): Error {
  if (e.unavailable) return new StoreUnavailableError(e.message)
  if (e.http) return new HttpError(e.http.status, e.code ?? 'INVALID_BODY', e.message, e.http.headers)
  if (e.user)
    return e.user.exitCode === ExitCode.config
      ? new ConfigError(e.message, { suggestion: e.user.suggestion })
      : new StorageError(e.message, { suggestion: e.user.suggestion })
  const err = new Error(e.message) as Error & { code?: string }
  err.name = e.name
  if (e.code !== undefined) err.code = e.code
  return err
}

/** The writer thread checkpoints the WAL this often (ms), so that commits on either connection need not. */
export const CHECKPOINT_EVERY_MS = 250
/**
 * Meanwhile a commit still checkpoints by itself once the WAL holds this many
 * pages (128 MiB of 16 KiB pages): a bound on the WAL should the thread fall
 * behind. SQLite's default, 1000 pages, made about one sync batch in four
 * wait 30-60 ms for a checkpoint on the event loop.
 */
export const BACKSTOP_CHECKPOINT_PAGES = 8192
const DEFAULT_CHECKPOINT_PAGES = 1000

/** A batch counts as alone when no two batches were in progress together for this long (ms). */
const COMPANY_MS = 2000

/** The compiled writer thread next to this module; absent when running from the TypeScript sources. */
const WORKER_URL = new URL('./sqlite-worker.js', import.meta.url)

export function writerThreadAvailable(): boolean {
  return WORKER_URL.protocol === 'file:' && fs.existsSync(fileURLToPath(WORKER_URL))
}

/** The BrokerStore methods forwarded from ROUTES: all but `kind` and the special cases `ingest` and `close`. */
type Forwarded = Exclude<keyof BrokerStore, 'kind' | 'ingest' | 'ingestJson' | 'subscribe' | 'close'>

/**
 * Where each forwarded method runs, one entry per method (the type makes the
 * table complete). `local`: on this thread's connection (reads: WAL gives
 * them the last commit; and the admin repair of the watermark). `write`: on
 * the side with writes outstanding, else where mode() says. `background`: a
 * write that goes to the thread when both sides are idle (purge: a long
 * delete; a group commit: its fsync; both kept off the event loop).
 */
const ROUTES: { readonly [K in Forwarded]: 'local' | 'write' | 'background' } = {
  release: 'write',
  read: 'local',
  heldBack: 'local',
  heads: 'local',
  resetWatermark: 'local',
  nodes: 'local',
  node: 'local',
  nodeVersions: 'local',
  nodesNamed: 'local',
  fleetVersions: 'local',
  putToken: 'write',
  rotateToken: 'write',
  findToken: 'local',
  touchToken: 'write',
  listTokens: 'local',
  nodeTokens: 'local',
  revokeToken: 'write',
  groupPosition: 'local',
  // A few bytes and an fsync: on the thread, so that consumers committing often (rmq mqtt forward,
  // consume --group) never hold the event loop for the fsync (1-4 ms each here).
  commitGroup: 'background',
  listGroups: 'local',
  purge: 'background',
  listAlerts: 'local',
  latestAlerts: 'local',
  fireAlert: 'write',
  updateAlert: 'write',
  resolveAlert: 'write',
}

/** What the writer thread answers (sqlite-worker.ts): the writes of ROUTES, `ingestColumns` and `close`. */
export const THREAD_METHODS: ReadonlySet<string> = new Set([
  ...Object.keys(ROUTES).filter((m) => ROUTES[m as Forwarded] !== 'local'),
  'ingestColumns',
  'ingestJson',
  'close',
])

// The forwarded methods are installed from ROUTES (static block below); this declares them.
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging, @typescript-eslint/no-empty-object-type
export interface ThreadedSqliteStore extends Pick<BrokerStore, Forwarded> {}

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class ThreadedSqliteStore implements BrokerStore {
  static {
    for (const name of Object.keys(ROUTES) as Forwarded[])
      Object.defineProperty(ThreadedSqliteStore.prototype, name, {
        value(this: ThreadedSqliteStore, ...args: unknown[]) {
          return this.forward(name, args)
        },
        writable: true,
        configurable: true,
      })
  }

  readonly kind = 'sqlite'
  private nextId = 1
  private readonly calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>()
  private stopped: Error | undefined
  private closing: Promise<void> | undefined
  /** Writes outstanding on the local connection. */
  private localWrites = 0
  /** When a batch last arrived while another one was in progress (performance.now()). */
  private lastCompany = -Infinity

  constructor(
    private readonly worker: Worker,
    private readonly local: SqliteBrokerStore,
  ) {
    worker.on('message', (reply: WorkerReply) => {
      const call = this.calls.get(reply.id)
      if (!call) return
      this.calls.delete(reply.id)
      if (this.calls.size === 0) worker.unref()
      if ('error' in reply) call.reject(fromWorkerError(reply.error))
      else call.resolve(reply.value)
    })
    local.setAutoCheckpoint(BACKSTOP_CHECKPOINT_PAGES)
    worker.on('error', (err) => this.stop(err))
    worker.on('exit', (code) => this.stop(new Error(`the broker store thread exited with code ${code}`)))
    // An idle store does not keep the process alive; a pending call does.
    worker.unref()
  }

  private stop(cause: unknown): void {
    // Nobody checkpoints on a timer any more: commits here do it themselves again.
    if (!this.stopped) this.local.setAutoCheckpoint(DEFAULT_CHECKPOINT_PAGES)
    this.stopped ??= new StoreUnavailableError('the broker store thread stopped', { cause })
    for (const call of this.calls.values()) call.reject(this.stopped)
    this.calls.clear()
  }

  private call<T>(method: string, args: unknown[], transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.stopped) return Promise.reject(this.stopped)
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      if (this.calls.size === 0) this.worker.ref()
      this.calls.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.worker.postMessage({ id, method, args } satisfies WorkerRequest, transfer)
    })
  }

  /**
   * Where the next write runs: with the side that has writes outstanding,
   * else `idle` (writes on both connections at once would only wait for
   * each other's lock).
   */
  private side(idle: 'local' | 'thread'): 'local' | 'thread' {
    // A stopped thread answers nothing more: this connection carries on alone.
    if (this.localWrites > 0 || this.stopped) return 'local'
    if (this.calls.size > 0) return 'thread'
    return idle
  }

  /** Where writes go when both sides are idle: the thread while several nodes send, else here. */
  private mode(): 'local' | 'thread' {
    return performance.now() - this.lastCompany < COMPANY_MS ? 'thread' : 'local'
  }

  private write<T>(idle: 'local' | 'thread', local: () => Promise<T>, thread: () => Promise<T>): Promise<T> {
    if (this.side(idle) === 'thread') return thread()
    this.localWrites++
    return local().finally(() => this.localWrites--)
  }

  ingest(batch: BatchBody, ctx: IngestContext): Promise<BatchAck> {
    // "Alone" means no other batch in progress for a while, not just at this instant: the batches of
    // several nodes arrive a little apart, and the first of each round would otherwise pull the rest here.
    if ((ctx.concurrent ?? 0) > 0) this.lastCompany = performance.now()
    return this.write(
      this.mode(),
      () => this.local.ingest(batch, ctx),
      () => {
        const cols = toColumns(batch)
        return this.call('ingestColumns', [cols, ctx], transferList(cols))
      },
    )
  }

  /**
   * A JSON body's bytes, moved (not copied) to the writer thread, which
   * parses, checks and stores them: the event loop never holds the body as a
   * string or as objects, nor blocks on them. Always on the thread: a write
   * outstanding here only makes the thread's commit wait for the lock
   * (busy_timeout), and the parse still runs off the event loop.
   */
  ingestJson(bytes: Uint8Array, checks: BatchCheckOptions, ctx: IngestContext): Promise<BatchReply> {
    if ((ctx.concurrent ?? 0) > 0) this.lastCompany = performance.now()
    // A stopped thread: this connection carries on alone, parsing here.
    if (this.stopped) return ingestJsonHere(this.local, bytes, checks, ctx)
    // Only a whole ArrayBuffer can be transferred; a view into a larger one is copied once.
    const whole =
      bytes.byteOffset === 0 &&
      bytes.byteLength === bytes.buffer.byteLength &&
      bytes.buffer instanceof ArrayBuffer
        ? bytes
        : new Uint8Array(bytes)
    return this.call('ingestJson', [whole, checks, ctx], [whole.buffer as ArrayBuffer])
  }

  /** A forwarded method, routed by ROUTES. */
  private forward(name: Forwarded, args: unknown[]): Promise<unknown> {
    const local = () => (this.local[name] as (...a: unknown[]) => Promise<unknown>).apply(this.local, args)
    const route = ROUTES[name]
    if (route === 'local') return local()
    return this.write(route === 'background' ? 'thread' : this.mode(), local, () => this.call(name, args))
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      // The thread commits what is queued (and answers it) before it closes.
      await this.call('close', []).catch(() => {})
      await this.worker.terminate()
      await this.local.close()
    })()
    return this.closing
  }
}

/** Start the writer thread (it opens and migrates the store), then open the read connection. */
export async function openThreadedSqliteStore(options: BrokerStoreOptions): Promise<ThreadedSqliteStore> {
  const worker = new Worker(WORKER_URL, { workerData: { dataDir: options.dataDir } })
  await new Promise<void>((resolve, reject) => {
    const onExit = (code: number) =>
      reject(new StoreUnavailableError(`the broker store thread exited (${code})`))
    worker.once('exit', onExit)
    worker.once('error', reject)
    worker.once('message', (m: { ready?: true; fatal?: WorkerError }) => {
      worker.off('exit', onExit)
      worker.off('error', reject)
      if (m.fatal) {
        void worker.terminate()
        reject(fromWorkerError(m.fatal))
      } else resolve()
    })
  })
  try {
    return new ThreadedSqliteStore(worker, await openSqliteBrokerStore(options))
  } catch (err) {
    await worker.terminate()
    throw err
  }
}
