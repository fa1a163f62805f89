import { ConfigError } from './errors.js'

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
}

// KB and KiB both mean 1024: device makers size flash in powers of two.
const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1024,
  kib: 1024,
  k: 1024,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  m: 1024 ** 2,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  g: 1024 ** 3,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
}

export const DURATION_FORMS = 'a number of milliseconds or a number with a unit: 500ms, 30s, 5m, 24h, 7d'
export const SIZE_FORMS = 'a number of bytes or a number with a unit: 512KB, 50MB, 1GB (KB = 1024 bytes)'

/** Parse `30s`, `5m`, `1.5h`, `250` (ms). Returns undefined when it is not a duration. */
export function parseDuration(input: unknown): number | undefined {
  if (typeof input === 'number') return Number.isFinite(input) && input >= 0 ? Math.round(input) : undefined
  if (typeof input !== 'string') return undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/i.exec(input)
  if (!m) return undefined
  const unit = (m[2] ?? 'ms').toLowerCase()
  return Math.round(Number(m[1]) * DURATION_UNITS[unit])
}

/** Parse `512KB`, `50MB`, `1024`. Returns undefined when it is not a size. */
export function parseSize(input: unknown): number | undefined {
  if (typeof input === 'number') return Number.isFinite(input) && input >= 0 ? Math.floor(input) : undefined
  if (typeof input !== 'string') return undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)?\s*$/i.exec(input)
  if (!m) return undefined
  const unit = (m[2] ?? 'b').toLowerCase()
  const factor = SIZE_UNITS[unit]
  if (factor === undefined) return undefined
  return Math.floor(Number(m[1]) * factor)
}

export function requireDuration(input: unknown, what: string): number {
  const v = parseDuration(input)
  if (v === undefined)
    throw new ConfigError(`${what}: ${JSON.stringify(input)} is not a duration`, {
      suggestion: `use ${DURATION_FORMS}`,
    })
  return v
}

export function requireSize(input: unknown, what: string): number {
  const v = parseSize(input)
  if (v === undefined)
    throw new ConfigError(`${what}: ${JSON.stringify(input)} is not a size`, {
      suggestion: `use ${SIZE_FORMS}`,
    })
  return v
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms)
  if (ms === 0) return '0'
  const units: Array<[string, number]> = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ]
  for (const [u, f] of units) if (ms >= f && ms % f === 0) return `${ms / f}${u}`
  if (ms >= 1000) return `${(ms / 1000).toFixed(1)}s`
  return `${ms}ms`
}

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n)
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return i === 0 ? `${v}B` : `${v.toFixed(v >= 10 ? 0 : 1)}${units[i]}`
}

/** Human age like `3m 12s ago` for status tables. */
export function formatAge(ms: number): string {
  if (!Number.isFinite(ms)) return '-'
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`
}

/** Parse an ISO-8601 date or epoch milliseconds. */
export function parseTimestamp(input: string): number | undefined {
  if (/^\d+$/.test(input.trim())) {
    const n = Number(input)
    return Number.isSafeInteger(n) ? n : undefined
  }
  const t = Date.parse(input)
  return Number.isNaN(t) ? undefined : t
}
