import type { ChildProcess } from 'node:child_process'
import type { ConsumedMessage } from '../../src/core/consumer.js'
import { spawnCli } from './cli.js'

/** One NDJSON line of `rmq consume --json`. */
export type ConsumedLine = ConsumedMessage

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * A real `rmq consume FILTER --follow --json` process collecting the messages
 * it prints (and any `{ "error": … }` documents apart).
 */
export function startFollowConsumer(opts: { url: string; token?: string; args?: string[]; filter?: string }) {
  const child: ChildProcess = spawnCli(
    ['consume', opts.filter ?? '#', '--follow', '--json', ...(opts.args ?? [])],
    {
      env: { RMQ_BROKER_URL: opts.url, ...(opts.token ? { RMQ_TOKEN: opts.token } : {}) },
    },
  )
  const lines: ConsumedLine[] = []
  const errors: string[] = []
  let buf = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d
    let i: number
    while ((i = buf.indexOf('\n')) >= 0) {
      const doc = JSON.parse(buf.slice(0, i)) as ConsumedLine | { error: unknown }
      if ('id' in doc) lines.push(doc)
      else errors.push(JSON.stringify(doc))
      buf = buf.slice(i + 1)
    }
  })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  let exitCode: number | string | null | undefined
  const exited = new Promise<number | string | null>((resolve) =>
    child.on('exit', (code, sig) => resolve((exitCode = code ?? sig))),
  )
  return {
    child,
    lines,
    errors,
    stderr: () => stderr,
    /** Exit code (or signal) once the process has exited; undefined while it runs. */
    exitCode: () => exitCode,
    async waitFor(n: number, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs
      while (lines.length < n && Date.now() < until) await sleep(50)
      if (lines.length < n)
        throw new Error(`consumer printed ${lines.length} of ${n} lines; ${errors.join(' ')}\n${stderr}`)
    },
    /** SIGTERM (commits its group position) and wait; resolves with the exit code. */
    async stop() {
      child.kill('SIGTERM')
      return exited
    },
    async kill() {
      child.kill('SIGKILL')
      await exited
    },
  }
}
