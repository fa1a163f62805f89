/** Outboxes filled with sent, expired and pending messages, for the cleanup tests. */
import { loadConfig } from '../../src/core/config/load.js'
import type { RmqConfig } from '../../src/core/config/schema.js'
import { openOutbox } from '../../src/core/outbox.js'
import type { NewMessage, StorageDriver } from '../../src/core/storage/driver.js'
import { makeTempDir } from './cli.js'

export const HOUR = 3_600_000

export type Cleanups = Array<() => Promise<unknown> | unknown>

/** A configured outbox in a temp dir (or `dir`), closed and removed through `cleanups`. */
export async function setupOutbox(cleanups: Cleanups, options: Record<string, unknown> = {}, dir?: string) {
  if (!dir) {
    const tmp = makeTempDir('rmq-cleanup-')
    cleanups.push(tmp.cleanup)
    dir = tmp.dir
  }
  const { config } = await loadConfig({
    cwd: dir,
    env: {},
    dotenv: false,
    options: { nodeId: 'gw-clean', 'cleanup.sentRetention': '24h', ...options },
  })
  // Like cleanupOutbox(): deletions need no fsync each.
  const store = await openOutbox(config, dir, { durability: 'normal' })
  cleanups.push(() => store.close())
  return { config, store, dir }
}

export function msgs(n: number, extra: Partial<NewMessage> = {}, size = 100): NewMessage[] {
  return Array.from({ length: n }, (_, i) => ({
    topic: 'plant/line1/temp',
    payload: Buffer.alloc(size, 48 + (i % 10)),
    ts: 1_764_160_000_000 + i,
    ...extra,
  }))
}

/** Append `n` messages and mark them sent at `sentAt`, in chunks. */
export async function sent(store: StorageDriver, n: number, sentAt: number, size = 100): Promise<number[]> {
  const all: number[] = []
  for (let i = 0; i < n; i += 5000) {
    const { seqs } = await store.append(msgs(Math.min(5000, n - i), {}, size))
    await store.markSent(seqs, sentAt)
    all.push(...seqs)
  }
  return all
}

export async function allSeqs(
  config: RmqConfig,
  dir: string,
): Promise<{ pending: number[]; sent: number[] }> {
  // A second connection sees exactly what is committed.
  const d = await openOutbox(config, dir)
  try {
    const pending = await d.nextBatch({ limit: 1e6, maxBytes: 1e12, order: 'oldest', now: 0 })
    const s = await d.stats(Date.now())
    return { pending: pending.map((m) => m.seq).sort((a, b) => a - b), sent: Array(s.sentKept).fill(0) }
  } finally {
    await d.close()
  }
}
