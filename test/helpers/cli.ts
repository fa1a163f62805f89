import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const BIN = path.join(ROOT, 'bin/run.js')

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface RunOptions {
  cwd?: string
  env?: Record<string, string | undefined>
  input?: string | Buffer
  timeoutMs?: number
}

/** Environment for child processes: no RMQ_* leaks from the test runner's own environment. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('RMQ_') && v !== undefined) env[k] = v
  for (const [k, v] of Object.entries(extra))
    if (v === undefined) delete env[k]
    else env[k] = v
  return env
}

/** Run the real `rmq` binary and collect its output. */
export function runCli(args: string[], opts: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: opts.cwd ?? ROOT,
      env: cleanEnv(opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
    child.stdin.on('error', () => {})
    if (opts.input !== undefined) child.stdin.end(opts.input)
    else child.stdin.end()
  })
}

/**
 * Run the real `rmq` binary with the read end of its stdout closed before it can print, as
 * `rmq … | head` is once head has exited: its first write gets EPIPE.
 */
export async function runCliReaderGone(
  args: string[],
  opts: Omit<RunOptions, 'input' | 'timeoutMs'> = {},
): Promise<Omit<CliResult, 'stdout'>> {
  const child = spawnCli(args, opts)
  child.stdout!.destroy()
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  child.stdin!.end()
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('close', (c, s) => resolve([c, s])),
  )
  return { code, signal, stderr }
}

/** Start the real `rmq` binary without waiting for it (for SIGKILL tests and servers). */
export function spawnCli(args: string[], opts: Omit<RunOptions, 'input' | 'timeoutMs'> = {}): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: cleanEnv(opts.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  })
}

/** A fresh temporary directory, removed by the returned cleanup function. */
export function makeTempDir(prefix = 'rmq-test-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) }
}

export function parseJson<T = any>(text: string): T {
  try {
    return JSON.parse(text) as T
  } catch {
    throw new Error(`stdout is not one JSON document:\n${text}`)
  }
}
