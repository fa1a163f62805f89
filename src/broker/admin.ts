import fs from 'node:fs'
import path from 'node:path'
import { ConfigError } from '../shared/errors.js'
import { ensurePrivateDir, ensurePrivateFile } from '../shared/private-files.js'
import type { RmqConfig } from '../core/config/schema.js'
import { openBrokerStore } from './store/index.js'
import { SQLITE_FILE } from './store/sqlite.js'
import type { BrokerStore } from './store/types.js'

/**
 * The broker's data directory 0700 and broker.db 0600 (tokens and every
 * payload), made before the store opens them; existing ones are left as they are.
 */
export function preparePrivateDataDir(dataDir: string): void {
  ensurePrivateDir(dataDir)
  ensurePrivateFile(path.join(dataDir, SQLITE_FILE))
}

/**
 * Open the configured broker store, run `fn`, close it (token commands: no running broker needed).
 * `existing`: a command that only reads or removes (token list, revoke) refuses a SQLite data dir
 * without a store, so that a mistyped --data-dir is not answered from a new, empty store.
 */
export async function withBrokerStore<T>(
  config: RmqConfig,
  fn: (store: BrokerStore) => Promise<T>,
  { existing = false }: { existing?: boolean } = {},
): Promise<T> {
  const { store: kind, dataDir } = config.broker
  if (existing && kind === 'sqlite' && !fs.existsSync(path.join(dataDir, SQLITE_FILE)))
    throw new ConfigError(`no broker store in ${dataDir} (${SQLITE_FILE} not found)`, {
      suggestion:
        'check --data-dir / broker.dataDir (RMQ_BROKER_DATA_DIR); `rmq broker start` or `rmq broker token create` makes one',
    })
  if (kind === 'sqlite') preparePrivateDataDir(dataDir)
  const store = await openBrokerStore(kind, {
    dataDir,
    url: config.broker.postgres.url || undefined,
  })
  try {
    return await fn(store)
  } finally {
    await store.close()
  }
}
