/** Opening a file: bring it to SCHEMA_VERSION, creating the schema in a new one. */
import { StorageError } from '../../../shared/errors.js'
import { require } from './addon.js'
import type { SqliteConnection } from './connection.js'
import { CREATE_SCHEMA, MIGRATIONS, SCHEMA_VERSION } from './schema.js'

/** Bring the file to SCHEMA_VERSION (creating it when new); returns the store's epoch. */
export function migrate(c: SqliteConnection): string {
  const db = c.db
  const userVersion = () => db.prepare('PRAGMA user_version').pluck().get() as number
  let version = userVersion()
  if (version > SCHEMA_VERSION) {
    throw new StorageError(
      `the outbox ${c.opts.path} has schema version ${version}, newer than this rmq understands (${SCHEMA_VERSION})`,
      { suggestion: 'upgrade rmq, or point storage.path at another file' },
    )
  }
  if (version === 0) {
    // Must precede the first table; a no-op on an existing file.
    db.exec('PRAGMA auto_vacuum = INCREMENTAL')
  }
  db.exec('PRAGMA journal_mode = WAL')
  if (version < SCHEMA_VERSION) {
    c.transaction(() => {
      // Another process may have migrated while we waited for the write lock.
      version = userVersion()
      if (version === 0) {
        db.exec(CREATE_SCHEMA)
        const ins = db.prepare('INSERT INTO state (key, value) VALUES (?, ?)')
        ins.run('epoch', (require('node:crypto') as typeof import('node:crypto')).randomUUID())
        ins.run('createdAt', String(c.now()))
      } else for (; version < SCHEMA_VERSION; version++) db.exec(MIGRATIONS[version - 1])
      db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`)
    })
  }
  const row = db.prepare("SELECT value FROM state WHERE key = 'epoch'").get() as { value: string } | undefined
  if (!row)
    throw new StorageError(`the outbox ${c.opts.path} has no epoch`, {
      suggestion: 'the file is damaged; move it away',
    })
  return row.value
}

/**
 * A read-only open (`rmq messages`): no migration, no write. The file must
 * already be an outbox of a schema this rmq reads (2 or later: the queue
 * tables `browse` and `stats` use); returns its epoch.
 */
export function readEpoch(c: SqliteConnection): string {
  const version = c.db.prepare('PRAGMA user_version').pluck().get() as number
  if (version > SCHEMA_VERSION || version < 2)
    throw new StorageError(
      version === 0
        ? `${c.opts.path} is not an rmq outbox (no schema)`
        : `the outbox ${c.opts.path} has schema version ${version}, which this rmq cannot read without changing it`,
      {
        suggestion:
          version === 0 || version > SCHEMA_VERSION
            ? 'check storage.path, or upgrade rmq'
            : 'run `rmq sync` (or any command that writes) once to upgrade the file, then look again',
      },
    )
  const row = c.db.prepare("SELECT value FROM state WHERE key = 'epoch'").get() as
    { value: string } | undefined
  if (!row)
    throw new StorageError(`the outbox ${c.opts.path} has no epoch`, {
      suggestion: 'the file is damaged; move it away',
    })
  return row.value
}
