/**
 * How every rmq command reports an error, the oclif commands (BaseCommand)
 * and the publish fast path alike: with --json the error document on
 * stdout, always `rmq: …` and `  fix: …` on stderr; the exit code from the
 * error's class (shared/errors.ts). Where core left the fix to the CLI, it is
 * added first (advice.ts).
 */
import { errorToJson, exitCodeOf, formatError } from '../shared/errors.js'
import { withAdvice } from './advice.js'

/** Report `err`; returns the exit code. `stdout` writes one line (the fast path's writer is its own). */
export function reportError(
  err: unknown,
  json: boolean,
  stdout: (line: string) => void = (line) => process.stdout.write(line + '\n'),
): number {
  withAdvice(err)
  if (json) stdout(JSON.stringify(errorToJson(err)))
  process.stderr.write(formatError(err))
  return exitCodeOf(err)
}
