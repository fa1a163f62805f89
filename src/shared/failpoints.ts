/**
 * Deterministic failpoints for fault-injection tests (test/faults, docs/guarantees.md).
 *
 *   RMQ_FAILPOINTS='sync.after-post-before-mark-sent=crash,sqlite.maxPageCount=64'
 *
 * Each entry is `name=action`; actions:
 * - `crash`: SIGKILL this process at that point (a power cut, as far as the
 *   process can tell: no handler, no flush, no finally).
 * - `error`: throw an Error there.
 * - `delay:MS`: wait MS milliseconds there.
 * - any other value is a parameter read with failpointValue() (e.g. a page count).
 * An action may end in `@N`: act on the N-th time the point is reached only
 * (1-based), pass through the others, e.g. `sync.after-mark-sent=crash@2`.
 *
 * The variable is read once, at import. When it is unset failpoint() returns
 * at once without allocating: `await failpoint(...)` costs one microtask.
 */
import { setTimeout as sleep } from 'node:timers/promises'

/** The failpoints placed in the code (names are also accepted when not listed here, for plugins). */
export const FAILPOINTS = [
  'sync.after-read',
  'sync.before-post',
  'sync.after-post-before-mark-sent',
  'sync.after-mark-sent',
  'broker.ingest.before-commit',
  'broker.ingest.after-commit-before-reply',
  'cleanup.after-step',
  'mqtt.ingest.after-commit-before-puback',
  'sqlite.maxPageCount',
  'broker.sqlite.maxPageCount',
] as const

export class FailpointError extends Error {
  constructor(readonly point: string) {
    super(`failpoint ${point} fired (RMQ_FAILPOINTS)`)
    this.name = 'FailpointError'
  }
}

interface Point {
  action: string
  /** Act on this hit only (1-based); 0: every hit. */
  at: number
  hits: number
}

/** Parse `name=action[@N],...` (exported for tests). */
export function parseFailpoints(spec: string | undefined): Map<string, Point> {
  const points = new Map<string, Point>()
  if (!spec) return points
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=')
    const name = (eq < 0 ? part : part.slice(0, eq)).trim()
    if (!name) continue
    let action = eq < 0 ? '' : part.slice(eq + 1).trim()
    let at = 0
    const m = /^(.*)@(\d+)$/.exec(action)
    if (m) {
      action = m[1]
      at = Number(m[2])
    }
    points.set(name, { action, at, hits: 0 })
  }
  return points
}

let spec = process.env.RMQ_FAILPOINTS
let points: Map<string, Point> | undefined = spec ? parseFailpoints(spec) : undefined

/**
 * The raw value of a point (a parameter such as `sqlite.maxPageCount=64`), or
 * undefined. Parameters are read where a resource is opened, not on hot
 * paths, so this one call also notices a variable changed at run time (tests
 * in one process); failpoint() keeps what was read last.
 */
export function failpointValue(name: string): string | undefined {
  const now = process.env.RMQ_FAILPOINTS
  if (now !== spec) {
    spec = now
    points = now ? parseFailpoints(now) : undefined
  }
  return points?.get(name)?.action
}

/**
 * Reach the point `name`: crash, throw, or wait as RMQ_FAILPOINTS says.
 * Returns undefined (nothing to await) unless a delay is due.
 */
export function failpoint(name: string): Promise<void> | undefined {
  if (points === undefined) return undefined
  const p = points.get(name)
  if (!p) return undefined
  p.hits++
  if (p.at > 0 && p.hits !== p.at) return undefined
  if (p.action === 'crash') {
    process.kill(process.pid, 'SIGKILL')
    // SIGKILL is delivered asynchronously; never run past the point meanwhile.
    for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000)
  }
  if (p.action === 'error') throw new FailpointError(name)
  if (p.action.startsWith('delay:')) return sleep(Number(p.action.slice(6)) || 0)
  return undefined
}
