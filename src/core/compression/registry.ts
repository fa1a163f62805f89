/**
 * Codec registry: registered built-in names (`zstd`, `gzip`, `none`, loaded
 * lazily, registered by src/plugins/builtins.ts like the storage drivers,
 * core/storage/registry.ts), then a module specifier whose default export is
 * a CodecFactory.
 */
import { ConfigError } from '../../shared/errors.js'
import { resolvePlugin } from '../plugin-registry.js'
import type { Codec, CodecFactory } from './codec.js'

export type { Codec, CodecFactory } from './codec.js'
export { CorruptInputError, DecompressLimitError } from './codec.js'

const cache = new Map<string, Promise<Codec>>()

/** Built-in codecs by name, filled by registerCodec (src/plugins/builtins.ts); loaded only when chosen. */
export const BUILTIN_CODECS: Record<string, () => Promise<CodecFactory>> = {}

/** Make `name` a built-in `compression.codec`, loaded by `load` the first time it is chosen. */
export function registerCodec(name: string, load: () => Promise<CodecFactory>): void {
  BUILTIN_CODECS[name] = load
  cache.delete(name)
}

/** Content-Encoding token -> built-in codec name. */
const ENCODINGS: Record<string, string> = {
  zstd: 'zstd',
  gzip: 'gzip',
  'x-gzip': 'gzip',
  identity: 'none',
}

/** Resolve `compression.codec`: a built-in name or a module whose default export is a CodecFactory. */
export async function resolveCodec(name: string, cwd?: string): Promise<Codec> {
  const cached = BUILTIN_CODECS[name] ? cache.get(name) : undefined
  if (cached) return cached
  const make = async () => {
    const factory = await resolvePlugin<CodecFactory>('codec', 'compression.codec', name, BUILTIN_CODECS, cwd)
    const codec = await factory()
    if (!codec || typeof codec.compress !== 'function' || typeof codec.decompress !== 'function') {
      throw new ConfigError(`codec ${JSON.stringify(name)} does not implement compress/decompress`, {
        suggestion: 'export default a factory returning { name, encoding, compress, decompress }',
      })
    }
    return codec
  }
  const p = make()
  if (BUILTIN_CODECS[name]) {
    cache.set(name, p)
    p.catch(() => cache.delete(name))
  }
  return p
}

/** The built-in codec for an HTTP Content-Encoding token (`zstd`, `gzip`, `identity`). */
export async function codecForEncoding(token: string | undefined): Promise<Codec> {
  const key = (token ?? 'identity').trim().toLowerCase() || 'identity'
  const name = ENCODINGS[key]
  if (!name) {
    throw new ConfigError(`unknown Content-Encoding ${JSON.stringify(token)}`, {
      suggestion: `use one of ${Object.keys(ENCODINGS).join(', ')}`,
      details: { known: Object.keys(ENCODINGS) },
    })
  }
  return resolveCodec(name)
}
