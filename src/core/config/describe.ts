import { formatBytes, formatDuration } from '../../shared/units.js'
import type { LoadedConfig, ResolvedValue } from './load.js'
import { maskSecret } from './load.js'
import { describeSource, requireKey, type ValueSource } from './parse.js'
import { CONFIG_KEYS, envVarFor, type KeyDef } from './schema.js'

export interface ConfigEntry {
  key: string
  /** Typed value: milliseconds for durations, bytes for sizes. Secrets masked unless revealed. */
  value: unknown
  /** The value as a person would write it. */
  display: string
  source: ValueSource
  sourceText: string
  env: string
  secret: boolean
}

export function displayValue(def: KeyDef, value: unknown): string {
  if (def.type === 'duration') return formatDuration(value as number)
  if (def.type === 'size') return (value as number) === 0 ? '0' : formatBytes(value as number)
  if (def.type === 'list') return (value as string[]).join(',')
  return String(value)
}

export function describeEntry(loaded: LoadedConfig, key: string, reveal = false): ConfigEntry {
  const def = requireKey(key)
  const resolved = loaded.values.get(key) as ResolvedValue
  const hide = def.secret && !reveal
  const value = hide ? maskSecret(resolved.value) : resolved.value
  return {
    key,
    value,
    display: hide ? (value as string) : displayValue(def, resolved.value),
    source: resolved.source,
    sourceText: describeSource(resolved.source),
    env: envVarFor(key),
    secret: Boolean(def.secret),
  }
}

export function describeAll(loaded: LoadedConfig, reveal = false): ConfigEntry[] {
  return CONFIG_KEYS.map((d) => describeEntry(loaded, d.key, reveal))
}
