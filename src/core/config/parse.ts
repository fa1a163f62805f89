import { didYouMean } from '../did-you-mean.js'
import { ConfigError } from '../../shared/errors.js'
import { DURATION_FORMS, SIZE_FORMS, parseDuration, parseSize } from '../../shared/units.js'
import { CONFIG_KEYS, KEY_INDEX, type KeyDef } from './schema.js'

export interface ValueSource {
  kind: 'default' | 'file' | 'dotenv' | 'env' | 'flag' | 'option'
  /** File path, env var name or flag name. */
  detail: string
}

export function describeSource(s: ValueSource): string {
  switch (s.kind) {
    case 'default':
      return 'default'
    case 'file':
      return `file ${s.detail}`
    case 'dotenv':
      return `.env ${s.detail}`
    case 'env':
      return `env ${s.detail}`
    case 'flag':
      return `flag ${s.detail}`
    case 'option':
      return `option ${s.detail}`
  }
}

function expected(def: KeyDef): string {
  switch (def.type) {
    case 'duration':
      return DURATION_FORMS
    case 'size':
      return SIZE_FORMS
    case 'int':
      return `a whole number${rangeText(def)}`
    case 'number':
      return `a number${rangeText(def)}`
    case 'bool':
      return 'true or false'
    case 'enum':
      return `one of ${def.values!.join(', ')}`
    case 'url':
      return 'an http:// or https:// URL, e.g. http://broker.example:7878'
    case 'list':
      return 'a list (JSON array in files, comma-separated in env)'
    case 'string':
      return 'a string'
  }
}

function rangeText(def: KeyDef): string {
  if (def.min !== undefined && def.max !== undefined) return ` from ${def.min} to ${def.max}`
  if (def.min !== undefined) return ` >= ${def.min}`
  return ''
}

function fail(def: KeyDef, raw: unknown, source: ValueSource): never {
  throw new ConfigError(
    `invalid value ${JSON.stringify(raw)} for ${def.key} (from ${describeSource(source)}): expected ${expected(def)}`,
    {
      suggestion: `fix ${source.kind === 'default' ? def.key : describeSource(source)}; accepted: ${expected(def)}`,
      details: { key: def.key, value: raw, source, expected: expected(def) },
    },
  )
}

/** Turn a raw value from any source into the typed value for its key. */
export function coerceValue(def: KeyDef, raw: unknown, source: ValueSource): unknown {
  switch (def.type) {
    case 'duration': {
      const v = parseDuration(raw)
      if (v === undefined) fail(def, raw, source)
      return v
    }
    case 'size': {
      const v = parseSize(raw)
      if (v === undefined) fail(def, raw, source)
      return v
    }
    case 'int':
    case 'number': {
      const n =
        typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN
      if (!Number.isFinite(n) || (def.type === 'int' && !Number.isInteger(n))) fail(def, raw, source)
      if ((def.min !== undefined && n < def.min) || (def.max !== undefined && n > def.max))
        fail(def, raw, source)
      return n
    }
    case 'bool': {
      if (typeof raw === 'boolean') return raw
      const s = String(raw).trim().toLowerCase()
      if (['true', '1', 'yes', 'on'].includes(s)) return true
      if (['false', '0', 'no', 'off'].includes(s)) return false
      return fail(def, raw, source)
    }
    case 'enum': {
      const s = String(raw)
      if (!def.values!.includes(s)) fail(def, raw, source)
      return s
    }
    case 'url': {
      if (typeof raw !== 'string') fail(def, raw, source)
      try {
        const u = new URL(raw)
        if (u.protocol !== 'http:' && u.protocol !== 'https:') fail(def, raw, source)
      } catch {
        fail(def, raw, source)
      }
      return raw.replace(/\/+$/, '')
    }
    case 'list': {
      if (Array.isArray(raw)) return raw.map(String)
      if (typeof raw === 'string')
        return raw
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      return fail(def, raw, source)
    }
    case 'string': {
      if (typeof raw !== 'string' && typeof raw !== 'number') fail(def, raw, source)
      const value = String(raw)
      const problem = def.check?.problem(value)
      if (problem)
        throw new ConfigError(
          `invalid value ${JSON.stringify(raw)} for ${def.key} (from ${describeSource(source)}): ${problem}`,
          {
            suggestion: `change ${describeSource(source)} to ${def.check!.rule}`,
            details: { key: def.key, value: raw, source, expected: def.check!.rule },
          },
        )
      return value
    }
  }
}

/** `source` is where the key was written; left out for a key given as a command's argument. */
export function unknownKeyError(
  key: string,
  source?: ValueSource,
  candidates: Iterable<string> = KEY_INDEX.keys(),
): ConfigError {
  const guess = didYouMean(key, candidates)
  const from = source ? ` (from ${describeSource(source)})` : ''
  return new ConfigError(`unknown configuration key ${JSON.stringify(key)}${from}`, {
    suggestion: guess
      ? `did you mean ${guess}? (see \`rmq config list\`)`
      : 'see `rmq config list` for the known keys',
    details: { key, ...(source ? { source } : {}), didYouMean: guess },
  })
}

/** The definition of a key named on the command line (`rmq config get KEY`). */
export function requireKey(key: string): KeyDef {
  const def = KEY_INDEX.get(key)
  if (!def) throw unknownKeyError(key)
  return def
}

export { CONFIG_KEYS }
