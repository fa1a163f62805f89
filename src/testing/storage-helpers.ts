/** Helpers the storage conformance suites share. */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { FastPath } from '../core/storage/complete-driver.js'
import type { NewMessage, PendingRun, StorageFactory, StoredMessage } from '../core/storage/driver.js'

/** What storageConformance needs to know about a driver. */
export interface ConformanceOptions {
  name: string
  factory: StorageFactory
  /** The driver keeps data across close/reopen of the same path: run the reopen tests. */
  durable: boolean
  /** For the two-process test: module URL whose default export is the factory, and node flags to load it. */
  childModule?: { url: string; nodeArgs?: string[] }
  /** The optional methods (fast paths) the driver offers itself; checked against the driver. */
  fastPaths: readonly FastPath[]
}

/** The clock every test of the suites starts at. */
export const CLOCK_START = 5_000_000

/** A temporary directory and its removal (the suites need no test helpers of rmq's own). */
export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) }
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export function msg(i: number, extra: Partial<NewMessage> = {}): NewMessage {
  return { topic: `t/${i}`, payload: Buffer.from(`payload-${i}`), ts: 1_000_000 + i, ...extra }
}

/** The seqs of a run, in send order. */
export function expandRun(r: PendingRun): number[] {
  const step = r.first <= r.last ? 1 : -1
  return Array.from({ length: r.count }, (_, i) => r.first + i * step)
}

/** Messages (in send order) grouped as pendingRuns returns them: consecutive seqs of one priority. */
export function runsOf(messages: StoredMessage[], order: 'oldest' | 'newest'): PendingRun[] {
  const step = order === 'newest' ? -1 : 1
  const out: PendingRun[] = []
  for (const m of messages) {
    const r = out[out.length - 1]
    if (r && r.priority === m.priority && m.seq === r.last + step) {
      r.last = m.seq
      r.count++
      r.bytes += m.size
      r.minTs = Math.min(r.minTs, m.ts)
    } else out.push({ priority: m.priority, first: m.seq, last: m.seq, count: 1, bytes: m.size, minTs: m.ts })
  }
  return out
}
