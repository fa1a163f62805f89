import fs from 'node:fs'
import path from 'node:path'
import { ConfigError } from '../../shared/errors.js'
import { writePrivateFileAtomic } from '../../shared/private-files.js'
import { coerceValue } from './parse.js'
import { KEY_INDEX } from './schema.js'

/**
 * Edit a JSON config file in place (`rmq config set/unset`). Only JSON is
 * edited, so comments and YAML formatting are never mangled; a YAML or JS
 * config is reported with instructions instead. Stored messages are never
 * touched: configuration lives in its own file.
 */
export interface EditResult {
  filePath: string
  created: boolean
  previous?: unknown
}

function isJsonFile(p: string): boolean {
  const base = path.basename(p)
  if (base.endsWith('.json')) return true
  if (base === '.rmqrc') {
    const text = fs.readFileSync(p, 'utf8').trim()
    return text === '' || text.startsWith('{')
  }
  return false
}

function readJson(p: string): Record<string, any> {
  const text = fs.readFileSync(p, 'utf8')
  if (!text.trim()) return {}
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`cannot parse ${p}: ${(err as Error).message}`, {
      suggestion: `fix the JSON syntax in ${p}`,
    })
  }
}

/** The config file may hold the token: it is written 0600 whatever the umask. */
function writeJsonAtomic(p: string, data: unknown): void {
  writePrivateFileAtomic(p, JSON.stringify(data, null, 2) + '\n')
}

function target(
  filePath: string | undefined,
  cwd: string,
): { filePath: string; created: boolean; inPackageJson: boolean } {
  if (!filePath) return { filePath: path.join(cwd, '.rmqrc.json'), created: true, inPackageJson: false }
  if (path.basename(filePath) === 'package.json') return { filePath, created: false, inPackageJson: true }
  if (!isJsonFile(filePath))
    throw new ConfigError(`${filePath} is not a JSON file, so rmq will not rewrite it`, {
      suggestion: `edit ${filePath} by hand, or move the settings to .rmqrc.json`,
    })
  return { filePath, created: false, inPackageJson: false }
}

function getIn(obj: Record<string, any>, parts: string[]): unknown {
  let cur: any = obj
  for (const p of parts) cur = cur?.[p]
  return cur
}

/** Store a value; durations and sizes keep the form the user typed. */
export function setConfigValue(
  filePath: string | undefined,
  cwd: string,
  key: string,
  raw: string,
): EditResult {
  const def = KEY_INDEX.get(key)!
  coerceValue(def, raw, { kind: 'option', detail: `rmq config set ${key}` })
  let value: unknown = raw
  if (def.type === 'int' || def.type === 'number') value = Number(raw)
  else if (def.type === 'bool') value = coerceValue(def, raw, { kind: 'option', detail: key })
  else if (def.type === 'list') value = coerceValue(def, raw, { kind: 'option', detail: key })
  else if ((def.type === 'duration' || def.type === 'size') && /^\d+$/.test(raw)) value = Number(raw)

  const t = target(filePath, cwd)
  const doc = t.created ? {} : readJson(t.filePath)
  const root: Record<string, any> = t.inPackageJson ? (doc.rmq ??= {}) : doc
  const parts = key.split('.')
  const previous = getIn(root, parts)
  let cur = root
  for (const p of parts.slice(0, -1)) {
    if (cur[p] === undefined || typeof cur[p] !== 'object') cur[p] = {}
    cur = cur[p]
  }
  cur[parts[parts.length - 1]] = value
  writeJsonAtomic(t.filePath, doc)
  return { filePath: t.filePath, created: t.created, previous }
}

export function unsetConfigValue(
  filePath: string | undefined,
  cwd: string,
  key: string,
): EditResult & { removed: boolean } {
  if (!filePath) return { filePath: path.join(cwd, '.rmqrc.json'), created: false, removed: false }
  const t = target(filePath, cwd)
  const doc = readJson(t.filePath)
  const root: Record<string, any> = t.inPackageJson ? (doc.rmq ?? {}) : doc
  const parts = key.split('.')
  const previous = getIn(root, parts)
  if (previous === undefined) return { filePath: t.filePath, created: false, removed: false }
  // Remove the leaf, then any parent objects it leaves empty.
  const chain: Array<Record<string, any>> = [root]
  for (const p of parts.slice(0, -1)) chain.push(chain[chain.length - 1][p])
  delete chain[chain.length - 1][parts[parts.length - 1]]
  for (let i = chain.length - 1; i > 0; i--) {
    if (Object.keys(chain[i]).length === 0) delete chain[i - 1][parts[i - 1]]
  }
  writeJsonAtomic(t.filePath, doc)
  return { filePath: t.filePath, created: false, previous, removed: true }
}
