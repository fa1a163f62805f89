/**
 * `rmq doctor --repair` (docs/operations.md "Repairing a damaged outbox"):
 * copy every readable message of a damaged outbox into a fresh file, with
 * its seq, status and times and the store's epoch and node id (the broker
 * deduplicates on (node, epoch, seq): what it already has is not delivered
 * twice when sent again), then move the damaged file aside as
 * `outbox.db.corrupt-<time>` (never deleted) and put the fresh one in its
 * place. The driver's salvager (core/storage/salvage.ts) reads and writes;
 * this decides when a repair may run and moves the files.
 */
import fs from 'node:fs'
import path from 'node:path'
import type { LoadedConfig } from './config/load.js'
import { ConfigError, StorageError } from '../shared/errors.js'
import { edgeNow } from '../shared/clock.js'
import { holderIsGone } from './lease.js'
import { storageSalvager, type SalvageResult } from './storage/salvage.js'
import { SYNC_LEASE } from './sync/types.js'

/** Why a repair refused, as data (`details.problem`); the CLI words the fix (src/cli/advice.ts). */
export type RepairProblem = 'repair-while-syncing'

export interface RepairReport extends SalvageResult {
  /** The outbox, now the repaired file. */
  file: string
  /** Where the damaged file is kept (its -wal / -shm beside it with the same name). */
  movedTo: string
  durationMs: number
}

export interface RepairOptions {
  onProgress?: (done: number, total: number) => void
}

/** `2026-12-03T17-25-33Z`: a time for a file name (no colons). */
function stamp(t: number): string {
  return new Date(t)
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replace(/:/g, '-')
}

export async function repairOutbox(loaded: LoadedConfig, o: RepairOptions = {}): Promise<RepairReport> {
  const { config, cwd } = loaded
  const salvage = await storageSalvager(config.storage.driver)
  if (!salvage)
    throw new ConfigError(`the ${config.storage.driver} storage driver has no repair`, {
      suggestion: 'repair works on the sqlite outbox (storage.driver=sqlite)',
    })
  const file = path.resolve(cwd, config.storage.path)
  if (!fs.existsSync(file))
    throw new ConfigError(`no outbox at ${file}`, {
      suggestion: 'check storage.path (RMQ_STORAGE_PATH); there is nothing to repair',
    })
  const started = Date.now()
  const now = edgeNow()
  let when = stamp(now)
  while (fs.existsSync(`${file}.corrupt-${when}`) || fs.existsSync(`${file}.repair-${when}`))
    when = stamp(now + Math.floor(Math.random() * 1000) * 1000)
  const movedTo = `${file}.corrupt-${when}`
  const target = `${file}.repair-${when}`

  const result = await salvage({
    path: file,
    target,
    now,
    onProgress: o.onProgress,
    check(leases, state) {
      // A running `rmq sync --watch` keeps the old file open: what it marks sent after the move
      // would be marked in the file moved aside, and sent again from the repaired one.
      const sync = leases.find((l) => l.name === SYNC_LEASE)
      const holder = state[`${SYNC_LEASE}.leaseOwner`]
      if (sync && sync.expiresAt > now && !(holder === sync.owner && holderIsGone(holder)))
        throw new StorageError(`a sync holds this outbox (${sync.owner}); it must stop before the repair`, {
          details: { problem: 'repair-while-syncing' satisfies RepairProblem, owner: sync.owner },
        })
    },
    finish() {
      // Under the damaged file's write lock: no publisher writes to the file being moved aside.
      for (const suffix of ['', '-wal', '-shm'])
        if (fs.existsSync(file + suffix)) fs.renameSync(file + suffix, movedTo + suffix)
    },
  })
  // The damaged file's connection is closed by now (closing a WAL database deletes `<file>-wal`
  // by name, which must not be the repaired file's): the repaired file takes its place.
  try {
    fs.renameSync(target, file)
  } catch (err) {
    // Put the damaged file back rather than leave no outbox at all.
    for (const suffix of ['', '-wal', '-shm'])
      if (fs.existsSync(movedTo + suffix) && !fs.existsSync(file + suffix))
        fs.renameSync(movedTo + suffix, file + suffix)
    throw new StorageError(`cannot put the repaired outbox in place: ${(err as Error).message}`, {
      suggestion: `the repaired copy is ${target}; move it to ${file} by hand`,
      cause: err,
    })
  }
  const dir = fs.openSync(path.dirname(file), 'r')
  try {
    fs.fsyncSync(dir)
  } finally {
    fs.closeSync(dir)
  }
  return { ...result, file, movedTo, durationMs: Date.now() - started }
}

/** "1-40, 97" for seq ranges. */
export function formatRanges(ranges: Array<[number, number]>, max = 10): string {
  const parts = ranges.slice(0, max).map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`))
  if (ranges.length > max) parts.push(`… (${ranges.length - max} more ranges)`)
  return parts.join(', ')
}
