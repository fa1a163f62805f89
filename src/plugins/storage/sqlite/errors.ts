/**
 * SQLite failures as errors that tell the user what happened and what to do
 * (docs/storage.md): a full disk, a lock held too long, a damaged file, a
 * file that cannot be written.
 */
import fs from 'node:fs'
import path from 'node:path'
import { CorruptStoreError, StorageError, isRmqError } from '../../../shared/errors.js'
import type { StorageProblem } from '../../../core/storage/driver.js'
import { diskFullError, type Fullness } from '../common.js'

function sqliteCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined
}

/** Less than 1 MiB free where the outbox lives: an I/O error there is most likely the disk being full. */
function lowOnSpace(file: string): boolean {
  try {
    const s = fs.statfsSync(path.dirname(file))
    return s.bavail * s.bsize < 1024 * 1024
  } catch {
    return false
  }
}

/**
 * Map a failure of an operation on the outbox at `file`; `fullness` says
 * what the store holds, for the disk-full message (undefined when unknown).
 * Errors of rmq itself and unknown ones are rethrown as they are.
 */
export function mapSqliteError(err: unknown, file: string, fullness: () => Fullness | undefined): never {
  if (isRmqError(err)) throw err
  // better-sqlite3 reports extended result codes (SQLITE_IOERR_SHMSIZE, SQLITE_READONLY_DBMOVED, …).
  const code = sqliteCode(err)?.split('_').slice(0, 2).join('_')
  // A full disk often shows as an I/O error (the WAL index or the WAL cannot grow), not SQLITE_FULL.
  if (code === 'SQLITE_FULL' || (code === 'SQLITE_IOERR' && lowOnSpace(file))) {
    let now: Fullness | undefined
    try {
      now = fullness()
    } catch {
      now = undefined
    }
    throw diskFullError(file, now, err)
  }
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED')
    throw new StorageError(`the outbox ${file} stayed locked by another process for 5s`, {
      suggestion: 'retry; if it persists, look for a hung rmq process holding the file',
      cause: err,
    })
  if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB')
    // No suggestion: the fix is a command of the CLI (`rmq doctor --repair`, src/cli/advice.ts).
    throw new CorruptStoreError(
      `the outbox ${file} is ${code === 'SQLITE_NOTADB' ? 'damaged or not an rmq database' : 'damaged'}: ${(err as Error).message}`,
      {
        details: { problem: 'outbox-corrupt' satisfies StorageProblem, file, sqlite: sqliteCode(err) },
        cause: err,
      },
    )
  if (code === 'SQLITE_READONLY' || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_IOERR')
    throw new StorageError(`cannot write the outbox ${file}: ${(err as Error).message}`, {
      suggestion: 'check that the file and its directory are writable and the disk is healthy',
      cause: err,
    })
  throw err
}
