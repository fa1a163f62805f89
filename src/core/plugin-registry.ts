import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { ConfigError } from '../shared/errors.js'

/**
 * Resolve a plugin by name: built-ins first, then a module specifier (an npm
 * package or a path) whose default export is the factory. Built-ins are
 * loaded lazily so that unused ones cost no start-up time. Shared by the
 * storage (core/storage/registry.ts) and codec (core/compression/registry.ts)
 * registries: the contracts and the way plugins are found belong to core, the
 * implementations to src/plugins/.
 */
export async function resolvePlugin<F>(
  kind: string,
  configKey: string,
  name: string,
  builtins: Record<string, () => Promise<F>>,
  cwd = process.cwd(),
): Promise<F> {
  const builtin = builtins[name]
  if (builtin) return builtin()
  // Core never imports src/plugins/: the built-ins exist once an entry point has imported
  // src/plugins/builtins.ts. Say so rather than list nothing.
  const known = Object.keys(builtins).join(', ') || `no built-ins (import 'rmq', which registers them)`
  const looksLikeModule =
    name.startsWith('.') || name.startsWith('/') || name.startsWith('@') || name.includes('/')
  if (!looksLikeModule && !/^[a-z0-9][\w.-]*$/i.test(name)) {
    throw new ConfigError(`unknown ${kind} ${JSON.stringify(name)} in ${configKey}`, {
      suggestion: `use one of ${known}, or a module specifier whose default export is the ${kind} factory`,
    })
  }
  const specifier =
    name.startsWith('.') || name.startsWith('/') ? pathToFileURL(path.resolve(cwd, name)).href : name
  let mod: { default?: unknown }
  try {
    mod = await import(specifier)
  } catch (err) {
    throw new ConfigError(
      `unknown ${kind} ${JSON.stringify(name)} in ${configKey}: not a built-in and not loadable as a module`,
      {
        suggestion: `use one of ${known}, or install the module / fix the path (${(err as Error).message.split('\n')[0]})`,
      },
    )
  }
  if (typeof mod.default !== 'function') {
    throw new ConfigError(`${kind} module ${JSON.stringify(name)} has no default export factory function`, {
      suggestion: `export default a function that returns the ${kind}`,
    })
  }
  return mod.default as F
}
