/** Logger settings for fastify's pino: JSON lines or a compact human format, both on stderr. */
import { Writable } from 'node:stream'
import type { LogFormat } from './options.js'

const LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
}
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'reqId'])

function prettyLine(line: string): string {
  let o: Record<string, unknown>
  try {
    o = JSON.parse(line) as Record<string, unknown>
  } catch {
    return line + '\n'
  }
  const time = new Date(typeof o.time === 'number' ? o.time : Date.now()).toISOString().slice(11, 23)
  const extras = Object.entries(o)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
  return `${time} ${(LEVELS[o.level as number] ?? String(o.level)).padEnd(5)} ${String(o.msg ?? '')}${extras.length ? ' ' + extras.join(' ') : ''}\n`
}

export function loggerOptions(format: LogFormat = 'json', level = process.env.RMQ_LOG_LEVEL || 'info') {
  if (format === 'silent') return false as const
  if (format === 'json') return { level, stream: process.stderr }
  let buf = ''
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      buf += chunk.toString('utf8')
      let i: number
      while ((i = buf.indexOf('\n')) >= 0) {
        process.stderr.write(prettyLine(buf.slice(0, i)))
        buf = buf.slice(i + 1)
      }
      cb()
    },
  })
  return { level, stream }
}
