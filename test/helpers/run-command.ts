/**
 * Runs an rmq command in this process with @oclif/test's runCommand (the
 * built commands in dist/, as bin/run.js loads them: `npm run build` first).
 * Each call gets what a fresh shell would give it: its own working
 * directory, no RMQ_* variables but the ones passed, and a clean exit code,
 * which it reports the way the process would have exited.
 */
import { format } from 'node:util'
import { runCommand } from '@oclif/test'
import { ROOT } from './cli.js'

export interface CommandResult {
  /** The exit code the process would end with (base-command sets process.exitCode). */
  code: number
  stdout: string
  stderr: string
  /** What the command's run() returned (the --json document), when it succeeded. */
  result: unknown
  /** An error oclif let through (help and version exits); the base command catches the rest. */
  error?: Error
}

export async function rmqInProcess(
  args: string[],
  opts: { cwd: string; env?: Record<string, string> },
): Promise<CommandResult> {
  const saved = {
    cwd: process.cwd(),
    env: { ...process.env },
    exitCode: process.exitCode,
    console: { ...console },
  }
  // oclif prints (the --json document among it) with console.log. vitest intercepts the console,
  // so runCommand, which captures process.stdout/stderr, would miss it: write there, as node does.
  console.log = (...a: unknown[]) => void process.stdout.write(format(...a) + '\n')
  console.error = (...a: unknown[]) => void process.stderr.write(format(...a) + '\n')
  for (const k of Object.keys(process.env)) if (k.startsWith('RMQ_')) delete process.env[k]
  Object.assign(process.env, opts.env ?? {})
  process.chdir(opts.cwd)
  process.exitCode = undefined
  try {
    const r = await runCommand(args, { root: ROOT })
    const exit = (r.error as { oclif?: { exit?: number } } | undefined)?.oclif?.exit
    const code = Number(process.exitCode ?? exit ?? (r.error ? 1 : 0))
    return { code, stdout: r.stdout, stderr: r.stderr, result: r.result, error: r.error }
  } finally {
    process.exitCode = saved.exitCode
    console.log = saved.console.log
    console.error = saved.console.error
    process.chdir(saved.cwd)
    for (const k of Object.keys(process.env)) if (!(k in saved.env)) delete process.env[k]
    Object.assign(process.env, saved.env)
  }
}
