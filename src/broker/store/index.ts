import { ConfigError } from '../../shared/errors.js'
import type { BrokerStore, BrokerStoreFactory, BrokerStoreOptions } from './types.js'

export * from './types.js'

/**
 * Built-in broker stores by `broker.store` name. The PostgreSQL store lives
 * in ./postgres-open.js (default export: a BrokerStoreFactory); it is imported
 * only when configured.
 */
const BUILTINS: Record<string, () => Promise<BrokerStoreFactory>> = {
  sqlite: async () => async (options) => {
    const threaded = await import('./sqlite-threaded.js')
    // From the TypeScript sources (tests, bin/dev.js) there is no compiled thread: commit in-thread.
    if (options.writerThread && threaded.writerThreadAvailable())
      return threaded.openThreadedSqliteStore(options)
    return (await import('./sqlite.js')).openSqliteBrokerStore(options)
  },
  postgres: async () => {
    const specifier = './postgres-open.js'
    const mod = (await import(specifier)) as { default: BrokerStoreFactory }
    return mod.default
  },
}

export async function openBrokerStore(kind: string, options: BrokerStoreOptions): Promise<BrokerStore> {
  const load = BUILTINS[kind]
  if (!load)
    throw new ConfigError(`unknown broker store ${JSON.stringify(kind)} in broker.store`, {
      suggestion: `use one of ${Object.keys(BUILTINS).join(', ')}`,
    })
  const factory = await load()
  return factory(options)
}
