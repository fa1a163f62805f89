import type { RmqConfig } from '../core/config/schema.js'
import { openBrokerStore } from './store/index.js'
import type { BrokerStore } from './store/types.js'

/** Open the configured broker store, run `fn`, close it (token commands: no running broker needed). */
export async function withBrokerStore<T>(
  config: RmqConfig,
  fn: (store: BrokerStore) => Promise<T>,
): Promise<T> {
  const store = await openBrokerStore(config.broker.store, {
    dataDir: config.broker.dataDir,
    url: config.broker.postgres.url || undefined,
  })
  try {
    return await fn(store)
  } finally {
    await store.close()
  }
}
