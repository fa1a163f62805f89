import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { ConfigError } from '../../shared/errors.js'
import { findJsonSyntaxError } from './json-syntax.js'
import { coerceValue, describeSource, unknownKeyError, type ValueSource } from './parse.js'
import { CONFIG_KEYS, ENV_TO_KEY, KEY_INDEX, RESERVED_ENV, type RmqConfig } from './schema.js'

export interface ResolvedValue {
  key: string
  value: unknown
  source: ValueSource
}

export interface LoadedConfig {
  config: RmqConfig
  /** Every key with its effective value and where it came from. */
  values: Map<string, ResolvedValue>
  /** The config file in effect, if any. */
  filePath?: string
  /** The .env file read, if any. */
  dotenvPath?: string
  cwd: string
}

export interface LoadConfigOptions {
  cwd?: string
  /** Explicit config file (--config); RMQ_CONFIG otherwise. */
  configPath?: string
  env?: NodeJS.ProcessEnv
  /** Values from command flags, by key path. Highest precedence. */
  flags?: Record<string, unknown>
  /** Values given by a library caller, by key path; precedence of flags. */
  options?: Record<string, unknown>
  /** Skip the .env file (tests). */
  dotenv?: boolean
}

// Names cosmiconfig searches for module `rmq`, in its order.
export const SEARCH_PLACES = [
  'package.json',
  '.rmqrc',
  '.rmqrc.json',
  '.rmqrc.yaml',
  '.rmqrc.yml',
  '.rmqrc.js',
  '.rmqrc.mjs',
  '.rmqrc.cjs',
  'rmq.config.js',
  'rmq.config.mjs',
  'rmq.config.cjs',
]

/** Flatten `{ sync: { batchSize: 7 } }` into `sync.batchSize`, stopping at known keys. */
export function flattenConfig(obj: unknown, source: ValueSource, prefix = ''): Array<[string, unknown]> {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new ConfigError(
      `configuration in ${describeSource(source)} must be an object, got ${JSON.stringify(obj)}`,
      {
        suggestion: 'write keys as JSON, e.g. { "nodeId": "gw-1", "sync": { "batchSize": 500 } }',
      },
    )
  }
  const out: Array<[string, unknown]> = []
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    if (k === '$schema') continue
    const full = prefix ? `${prefix}.${k}` : k
    if (KEY_INDEX.has(full)) out.push([full, v])
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const isPrefix = CONFIG_KEYS.some((d) => d.key.startsWith(full + '.'))
      if (!isPrefix) throw unknownKeyError(full, source)
      out.push(...flattenConfig(v, source, full))
    } else throw unknownKeyError(full, source)
  }
  return out
}

async function loadConfigFile(
  cwd: string,
  explicit?: string,
): Promise<{ filePath: string; data: unknown } | undefined> {
  const { cosmiconfig } = await import('cosmiconfig')
  const explorer = cosmiconfig('rmq', { searchPlaces: SEARCH_PLACES, searchStrategy: 'none', cache: false })
  try {
    if (explicit) {
      const p = path.resolve(cwd, explicit)
      if (!fs.existsSync(p))
        throw new ConfigError(`config file ${p} does not exist`, {
          suggestion:
            'check the --config path or RMQ_CONFIG, or create the file with `rmq config set KEY VALUE`',
        })
      const r = await explorer.load(p)
      return r ? { filePath: r.filepath, data: r.config ?? {} } : { filePath: p, data: {} }
    }
    const r = await explorer.search(cwd)
    if (!r || r.isEmpty) return r ? { filePath: r.filepath, data: {} } : undefined
    return { filePath: r.filepath, data: r.config }
  } catch (err) {
    if (err instanceof ConfigError) throw err
    throw syntaxError(err as CosmiconfigError, cwd, explicit)
  }
}

/** cosmiconfig's parse errors: its `filepath`; js-yaml's `mark` (0-based) and `reason`. */
type CosmiconfigError = Error & {
  filepath?: string
  mark?: { line: number; column: number }
  reason?: string
}

/**
 * A config file that cannot be parsed, as FILE:LINE:COL: what (the form editors
 * and terminals jump to). js-yaml gives the place; JSON's is found by
 * findJsonSyntaxError, since JSON.parse's messages often carry none.
 */
function syntaxError(err: CosmiconfigError, cwd: string, explicit?: string): ConfigError {
  const [first, ...rest] = err.message.split('\n').filter((l) => l.trim() !== '')
  // cosmiconfig's first line: "JSON Error in FILE:" (and `filepath` since version 9).
  const named = /^(JSON|YAML) Error in (.+?):\s*$/.exec(first)
  const file = err.filepath ?? named?.[2] ?? (explicit ? path.resolve(cwd, explicit) : findConfigFile(cwd))
  const where = (format: string, line: number, column: number, what: string, fix: string) =>
    new ConfigError(`${file}:${line}:${column}: invalid ${format}: ${what}`, {
      suggestion: `${fix}; \`rmq config path\` shows which file is used`,
      details: { file, line, column, format },
    })
  if (named?.[1] === 'YAML' && err.mark && err.reason)
    return where(
      'YAML',
      err.mark.line + 1,
      err.mark.column + 1,
      err.reason,
      'correct the YAML there (indent with spaces, the same amount on each level; quote values containing ": " or " #")',
    )
  if (named?.[1] === 'JSON' && file) {
    let text: string | undefined
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch {
      // gone since cosmiconfig read it: report what cosmiconfig said
    }
    const found = text === undefined ? undefined : findJsonSyntaxError(text)
    if (found)
      return where(
        'JSON',
        found.line,
        found.column,
        found.message,
        'correct the JSON there (names and strings in double quotes, no trailing commas, no comments)',
      )
  }
  // A JavaScript file that does not compile: Node's stack starts "FILE:LINE", the source line, a caret.
  const [at, , caret] = err.name === 'SyntaxError' ? (err.stack ?? '').split('\n') : []
  const js = at === undefined ? null : /^(?:file:\/\/)?(.+):(\d+)$/.exec(at)
  if (js && file && path.resolve(js[1]) === path.resolve(file))
    return where(
      'JavaScript',
      Number(js[2]),
      Math.max(1, (caret ?? '').indexOf('^') + 1),
      err.message,
      'correct the JavaScript there (the file must export the configuration object)',
    )
  // Anything else: what cosmiconfig says, on one line.
  const why = rest.find((l) => !/^\s*(>?\s*\d+ \||\|)/.test(l))?.trim()
  const said = why ? `${first} ${why}` : first
  const which = file && !said.includes(file) ? ` ${file}` : ''
  return new ConfigError(`cannot read config file${which}: ${said}`, {
    suggestion:
      'fix the syntax of the file (JSON, YAML or JavaScript), or run `rmq config path` to see which file is used',
  })
}

function readDotenv(cwd: string): { path: string; vars: Record<string, string> } | undefined {
  const p = path.join(cwd, '.env')
  let text: string
  try {
    text = fs.readFileSync(p, 'utf8')
  } catch {
    return undefined
  }
  // Parse only; never inject into process.env, so precedence stays explicit.
  // dotenv costs ~12 ms to import: only pay it when there is a .env to parse.
  const dotenv = createRequire(import.meta.url)('dotenv') as typeof import('dotenv')
  return { path: p, vars: dotenv.parse(text) }
}

function setPath(obj: Record<string, any>, key: string, value: unknown): void {
  const parts = key.split('.')
  let cur = obj
  for (let i = 0; i < parts.length - 1; i++) {
    cur[parts[i]] ??= {}
    cur = cur[parts[i]]
  }
  cur[parts[parts.length - 1]] = value
}

function envLayer(vars: Record<string, string | undefined>, kind: 'env' | 'dotenv', dotenvPath?: string) {
  const out: Array<[string, unknown, ValueSource]> = []
  for (const [name, raw] of Object.entries(vars)) {
    if (!name.startsWith('RMQ_') || raw === undefined) continue
    if (RESERVED_ENV.has(name)) continue
    const key = ENV_TO_KEY.get(name)
    const source: ValueSource = { kind, detail: kind === 'dotenv' ? `${dotenvPath} ${name}` : name }
    if (!key) throw unknownKeyError(name, source, ENV_TO_KEY.keys())
    out.push([key, raw, source])
  }
  return out
}

/**
 * Build the effective configuration. Later sources win:
 * defaults < config file < .env < environment < flags/options.
 */
export async function loadConfig(opts: LoadConfigOptions = {}): Promise<LoadedConfig> {
  const cwd = path.resolve(opts.cwd ?? process.cwd())
  const env = opts.env ?? process.env
  const dot = opts.dotenv === false ? undefined : readDotenv(cwd)
  const explicitPath = opts.configPath ?? env.RMQ_CONFIG ?? dot?.vars.RMQ_CONFIG
  // Most gateway runs use env only: skip importing cosmiconfig when there is no file to read.
  const file =
    explicitPath || findConfigFile(cwd) ? await loadConfigFile(cwd, explicitPath || undefined) : undefined

  const values = new Map<string, ResolvedValue>()
  for (const def of CONFIG_KEYS) {
    const source: ValueSource = { kind: 'default', detail: '' }
    values.set(def.key, { key: def.key, value: coerceValue(def, def.default, source), source })
  }
  const layers: Array<Array<[string, unknown, ValueSource]>> = []
  if (file) {
    const src: ValueSource = { kind: 'file', detail: file.filePath }
    layers.push(flattenConfig(file.data ?? {}, src).map(([k, v]) => [k, v, src]))
  }
  if (dot) layers.push(envLayer(dot.vars, 'dotenv', dot.path))
  layers.push(envLayer(env, 'env'))
  for (const [kind, bag] of [
    ['flag', opts.flags],
    ['option', opts.options],
  ] as const) {
    if (!bag) continue
    const layer: Array<[string, unknown, ValueSource]> = []
    for (const [k, v] of Object.entries(bag)) {
      if (v === undefined) continue
      const source: ValueSource = { kind, detail: k }
      if (!KEY_INDEX.has(k)) throw unknownKeyError(k, source)
      layer.push([k, v, source])
    }
    layers.push(layer)
  }
  for (const layer of layers) {
    for (const [key, raw, source] of layer) {
      const def = KEY_INDEX.get(key)!
      values.set(key, { key, value: coerceValue(def, raw, source), source })
    }
  }
  if (values.get('nodeId')!.value === '') {
    values.set('nodeId', {
      key: 'nodeId',
      value: os.hostname(),
      source: { kind: 'default', detail: 'host name' },
    })
  }
  resolveTokenFile(values, cwd, env)
  const config: Record<string, any> = {}
  for (const [k, v] of values) setPath(config, k, v.value)
  return { config: config as RmqConfig, values, filePath: file?.filePath, dotenvPath: dot?.path, cwd }
}

/** systemd's LoadCredential=rmq-token:/etc/rmq/token puts the token here (credential name `rmq-token`). */
export const SYSTEMD_CREDENTIAL = 'rmq-token'

/**
 * No token in the configuration: read it from tokenFile, or from
 * $CREDENTIALS_DIRECTORY/rmq-token (systemd LoadCredential=), so that it
 * need not sit in a config file or the environment at all.
 */
function resolveTokenFile(values: Map<string, ResolvedValue>, cwd: string, env: NodeJS.ProcessEnv): void {
  if (values.get('token')!.value !== '') return
  const configured = values.get('tokenFile')!
  const file = configured.value
    ? path.resolve(cwd, String(configured.value))
    : env.CREDENTIALS_DIRECTORY
      ? path.join(env.CREDENTIALS_DIRECTORY, SYSTEMD_CREDENTIAL)
      : undefined
  if (!file) return
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (!configured.value && code === 'ENOENT') return
    throw new ConfigError(`cannot read the token file ${file} (${code ?? (err as Error).message})`, {
      suggestion: `check tokenFile (from ${describeSource(configured.source)}): it must name a file this user can read`,
      details: { key: 'tokenFile', file, code },
    })
  }
  const token = text.trim()
  if (!token) {
    if (!configured.value) return
    throw new ConfigError(`the token file ${file} is empty`, {
      suggestion: 'write the token from `rmq broker token create NODE` into it (one line)',
    })
  }
  values.set('token', { key: 'token', value: token, source: { kind: 'file', detail: file } })
}

/** Resolve a path from configuration against the directory rmq runs in. */
export function resolvePath(loaded: Pick<LoadedConfig, 'cwd'>, p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(loaded.cwd, p)
}

export function maskSecret(value: unknown): string {
  const s = String(value ?? '')
  if (!s) return ''
  return s.length <= 4 ? '****' : `****${s.slice(-4)}`
}

/**
 * The config file `rmq config set/unset/path` acts on, found without parsing
 * it, so that a file with a bad value can still be repaired.
 */
export function findConfigFile(cwd: string, explicit?: string): string | undefined {
  if (explicit) return path.resolve(cwd, explicit)
  for (const name of SEARCH_PLACES) {
    const p = path.join(cwd, name)
    if (!fs.existsSync(p)) continue
    if (name === 'package.json') {
      try {
        if (JSON.parse(fs.readFileSync(p, 'utf8')).rmq === undefined) continue
      } catch {
        continue
      }
    }
    return p
  }
  return undefined
}
