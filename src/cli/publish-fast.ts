/**
 * `rmq publish` without oclif: bin/run.js calls runPublishCli for every
 * publish except --help, so shell scripts on gateways pay only for Node,
 * config and SQLite. This file is the command line only: the arguments
 * (PUBLISH_FLAGS, from which src/commands/publish.ts derives its oclif flags
 * and help), reading the input, and the words of the outcome. Publishing is
 * core's publishInput (src/core/publish.ts: the field checks, the Producer's
 * `sent` / `stored` rules; no network code in edge mode with
 * forward=deferred); errors are reported as every command reports them
 * (src/cli/error-output.ts). src/commands/publish.ts delegates here, so both
 * behave the same.
 */
import fs from 'node:fs'
import { parseArgs } from 'node:util'
// Registers the built-in storage drivers and codecs with core's registries.
import '../plugins/builtins.js'
import { loadConfig } from '../core/config/load.js'
import type { LinesResult } from '../core/outbox.js'
import { publishInput, type PublishInput, type PublishOutcome } from '../core/publish.js'
import { UsageError, ValidationError } from '../shared/errors.js'
import { formatBytes } from '../shared/units.js'
import { reportError } from './error-output.js'
import {
  flagValueMissingError,
  missingArgsError,
  unexpectedArgError,
  unknownFlagError,
} from './usage-errors.js'

export interface PublishFlagSpec {
  name: string
  char?: string
  type: 'string' | 'boolean'
  description: string
  helpValue?: string
}

/** The one list of `rmq publish` flags (besides the global --json and --config). */
export const PUBLISH_FLAGS: readonly PublishFlagSpec[] = [
  {
    name: 'file',
    char: 'f',
    type: 'string',
    helpValue: 'FILE|-',
    description: 'Read the payload from FILE (the whole file is one message), or from stdin with -.',
  },
  {
    name: 'lines',
    type: 'boolean',
    description:
      'Each line is one message (bulk NDJSON), from -f, MESSAGE or stdin; committed in large transactions.',
  },
  {
    name: 'ttl',
    type: 'string',
    helpValue: 'DURATION',
    description:
      'Expire the message this long after publishing (30s, 10m, 24h; 0: never). Default message.defaultTtl.',
  },
  {
    name: 'priority',
    type: 'string',
    helpValue: '0-9',
    description: 'Priority, 0 (lowest) to 9 (highest). Default 4.',
  },
  {
    name: 'timestamp',
    type: 'string',
    helpValue: 'TIME',
    description: 'Original generation time: ISO-8601 or epoch milliseconds. Default: now.',
  },
  {
    name: 'content-type',
    type: 'string',
    helpValue: 'TYPE',
    description:
      'MIME type stored with the message; with a JSON type every payload (every line) must be valid JSON.',
  },
]

const GLOBAL_FLAGS: readonly PublishFlagSpec[] = [
  { name: 'json', type: 'boolean', description: 'Format output as json.' },
  { name: 'config', type: 'string', helpValue: 'FILE', description: 'Config file to use.' },
]

/** The arguments of `rmq publish`, for its help (src/commands/publish.ts) and its errors. */
export const TOPIC_ARG = { name: 'TOPIC', description: 'Topic, e.g. plant/line1/temp (no + or #).' }
export const MESSAGE_ARG = { name: 'MESSAGE', description: 'Payload (UTF-8). Omit with -f or --lines.' }

type Values = {
  file?: string
  lines?: boolean
  ttl?: string
  priority?: string
  timestamp?: string
  'content-type'?: string
  json?: boolean
  config?: string
}

const PUBLISH = 'rmq publish'
const USAGE = 'rmq publish TOPIC [MESSAGE] [-f FILE|-] [--lines]'

function parse(argv: string[]): { topic: string; message?: string; values: Values } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {}
  const all = [...PUBLISH_FLAGS, ...GLOBAL_FLAGS]
  for (const f of all) options[f.name] = f.char ? { type: f.type, short: f.char } : { type: f.type }
  let parsed
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (err) {
    throw argvError(err as Error & { code?: string })
  }
  const values = parsed.values as Values
  const [topic, message, ...extra] = parsed.positionals
  if (topic === undefined) throw missingArgsError(PUBLISH, [TOPIC_ARG], USAGE)
  if (extra.length > 0)
    throw unexpectedArgError(
      PUBLISH,
      extra[0],
      USAGE,
      'quote a MESSAGE that contains spaces: rmq publish TOPIC "hello world"',
    )
  if (message !== undefined && values.file !== undefined)
    throw new UsageError('give either MESSAGE or -f FILE, not both', {
      suggestion: 'see `rmq publish --help`',
    })
  if (message === undefined && values.file === undefined && !values.lines)
    throw missingArgsError(
      PUBLISH,
      [MESSAGE_ARG],
      USAGE,
      'give the payload as an argument, with -f FILE, or on stdin with -f - (or --lines for NDJSON)',
    )
  return { topic, message, values }
}

/** node:util parseArgs' errors, in the words of the oclif commands (src/cli/usage-errors.ts). */
function argvError(err: Error & { code?: string }): UsageError {
  const named = /'(-[^' ]*)/.exec(err.message)?.[1]
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && named)
    return unknownFlagError(PUBLISH, named, [...PUBLISH_FLAGS, ...GLOBAL_FLAGS])
  const long = /--([\w-]+)/.exec(err.message)?.[1]
  const flag = [...PUBLISH_FLAGS, ...GLOBAL_FLAGS].find((f) => f.name === long)
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && flag && /argument missing/.test(err.message))
    return flagValueMissingError(PUBLISH, flag.name, flag.helpValue)
  return new UsageError(err.message.split('\n')[0], { suggestion: 'see `rmq publish --help`' })
}

function noInput(file: string, err: unknown): ValidationError {
  return new ValidationError(`cannot read ${file}: ${(err as Error).message}`, {
    suggestion: 'check the path given to -f',
  })
}

async function readAll(stream: NodeJS.ReadableStream, limit: number): Promise<Buffer> {
  const parts: Buffer[] = []
  let n = 0
  for await (const c of stream as AsyncIterable<Buffer>) {
    n += c.length
    // Keep one byte past the limit so the size check reports it; stop reading after that.
    if (n > limit + 1) {
      parts.push(c.subarray(0, c.length - (n - limit - 1)))
      break
    }
    parts.push(c)
  }
  return Buffer.concat(parts)
}

async function singlePayload(
  message: string | undefined,
  file: string | undefined,
  limit: number,
): Promise<Uint8Array> {
  if (message !== undefined) return Buffer.from(message, 'utf8')
  if (file === '-') return readAll(process.stdin, limit)
  try {
    const size = fs.statSync(file!).size
    if (size > limit)
      throw new ValidationError(
        `${file} is ${formatBytes(size)} (${size} bytes), over message.maxBytes ${formatBytes(limit)}`,
        { suggestion: 'split it, use --lines for one message per line, or raise message.maxBytes' },
      )
    return fs.readFileSync(file!)
  } catch (err) {
    if (err instanceof ValidationError) throw err
    throw noInput(file!, err)
  }
}

function linesInput(
  message: string | undefined,
  file: string | undefined,
): AsyncIterable<Uint8Array> | Uint8Array[] {
  if (message !== undefined) return [Buffer.from(message, 'utf8')]
  if (file === undefined || file === '-') return process.stdin
  // Open now, so that a missing file, a directory or no permission is a clear 65 before anything is stored.
  let fd: number
  try {
    fd = fs.openSync(file, 'r')
    if (fs.fstatSync(fd).isDirectory()) {
      fs.closeSync(fd)
      throw Object.assign(new Error('it is a directory'), { code: 'EISDIR' })
    }
  } catch (err) {
    throw noInput(file, err)
  }
  return fs.createReadStream(file, { fd, highWaterMark: 256 * 1024 })
}

/**
 * One line on stdout, written straight to fd 1: setting up `process.stdout` costs about 4 ms of a
 * 90 ms `rmq publish` (measured over 101 interleaved runs). A reader that went away (EPIPE) does
 * not undo what is stored; a non-blocking stdout that is full (EAGAIN) falls back to the stream.
 */
function out(text: string): void {
  const line = Buffer.from(text + '\n')
  let written = 0
  try {
    while (written < line.length) written += fs.writeSync(1, line, written)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EAGAIN') process.stdout.write(line.subarray(written))
    else if (code !== 'EPIPE') throw err
  }
}

function note(text: string): void {
  process.stderr.write(text + '\n')
}

function droppedNote(n: number): void {
  if (n > 0)
    note(
      `rmq: the outbox was full: dropped the ${n} oldest pending message(s) (storage.overflow=drop-oldest)`,
    )
}

function notForwarded(reason: string): void {
  note(`rmq: stored, not forwarded yet: ${reason}; \`rmq sync\` delivers it later`)
}

function idRange(r: LinesResult['ranges'][number], node: string, epoch: string): string {
  return r.firstSeq === r.lastSeq
    ? `${node}:${epoch}:${r.firstSeq}`
    : `${node}:${epoch}:${r.firstSeq}..${r.lastSeq}`
}

/** Run `rmq publish` with `argv` (the arguments after `publish`); returns the exit code. */
export async function runPublishCli(argv: string[]): Promise<number> {
  const json = argv.includes('--json')
  let progress: { update(text: string): void; done(): void } | undefined
  try {
    const { topic, message, values } = parse(argv)
    const loaded = await loadConfig({ configPath: values.config })
    const fields = {
      topic,
      ts: values.timestamp,
      ttl: values.ttl,
      priority: values.priority,
      contentType: values['content-type'] ?? null,
    }
    if (!values.lines) {
      const input: PublishInput = { read: (limit) => singlePayload(message, values.file, limit) }
      return report(await publishInput(loaded, fields, input), json)
    }
    const { Progress } = await import('./progress.js')
    const shown = new Progress('rmq publish:')
    progress = shown
    const outcome = await publishInput(
      loaded,
      fields,
      { lines: true, open: () => linesInput(message, values.file) },
      {
        onProgress: (read, stored) => shown.update(`${read} lines read, ${stored} messages`),
        // Report every commit before the last, so a killed run has said exactly what is safe.
        onCommit: (c, at) => {
          if (!c.more || json) return
          shown.done()
          out(
            `${at.status} lines ${c.firstLine}-${c.lastLine} (${c.count} messages, ${idRange(c, at.node, at.epoch)})`,
          )
        },
      },
    )
    shown.done()
    return report(outcome, json)
  } catch (err) {
    progress?.done()
    return reportError(err, json, out)
  }
}

/** The outcome on stdout (one line, or the JSON document) and its notices on stderr. */
function report(o: PublishOutcome, json: boolean): number {
  if (o.kind === 'message') {
    droppedNote(o.dropped)
    if (o.receipt.reason) notForwarded(o.receipt.reason)
    out(json ? JSON.stringify({ ...o.receipt, dropped: o.dropped }) : `${o.receipt.status} ${o.receipt.id}`)
    return 0
  }
  const res = o.result
  droppedNote(res.dropped)
  if (o.reason) notForwarded(o.reason)
  if (json)
    out(
      JSON.stringify(
        o.viaProducer ? { ...res, status: o.status, ...(o.reason ? { reason: o.reason } : {}) } : res,
      ),
    )
  else {
    const ids = res.ranges.map((r) => idRange(r, res.node, res.epoch)).join(', ')
    const blank = res.blank > 0 ? `, ${res.blank} blank skipped` : ''
    out(`${o.status} ${res.stored} messages from ${res.lines} lines${blank}${ids ? ` (${ids})` : ''}`)
  }
  return 0
}
