/**
 * Every failure a user can cause or meet maps to one documented exit code.
 * Commands, the publish fast path and the library all throw these, so the
 * mapping lives in exactly one place.
 */
export const ExitCode = {
  ok: 0,
  unexpected: 1,
  usage: 2,
  dataError: 65,
  unavailable: 69,
  /** The outbox is damaged (SQLite finds it corrupt or not a database): `rmq doctor --repair` (sysexits' EX_SOFTWARE). */
  corrupt: 70,
  storageFull: 73,
  /** A store that cannot be used: newer than this rmq, unwritable, locked too long, or a damaged broker.db. */
  ioError: 74,
  tempFail: 75,
  config: 78,
} as const

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

export interface RmqErrorOptions {
  /** One line telling the user how to fix it. */
  suggestion?: string
  /** Machine-readable extras for --json output and library callers. */
  details?: Record<string, unknown>
  cause?: unknown
}

export class RmqError extends Error {
  readonly code: string = 'RMQ_ERROR'
  readonly exitCode: number = ExitCode.unexpected
  readonly suggestion?: string
  readonly details?: Record<string, unknown>

  constructor(message: string, options: RmqErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = new.target.name
    this.suggestion = options.suggestion
    this.details = options.details
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      exitCode: this.exitCode,
      ...(this.suggestion ? { suggestion: this.suggestion } : {}),
      ...(this.details ? { details: this.details } : {}),
    }
  }
}

/** Bad command-line usage: unknown flag, missing argument (exit 2). */
export class UsageError extends RmqError {
  override readonly code: string = 'USAGE'
  override readonly exitCode = ExitCode.usage
}

/** Bad input data: an invalid topic, payload, NDJSON line or timestamp (exit 65). */
export class ValidationError extends RmqError {
  override readonly code: string = 'INVALID_INPUT'
  override readonly exitCode = ExitCode.dataError
}

/** The broker refused a batch permanently (4xx other than 429); nothing was deleted (exit 65). */
export class RejectedError extends RmqError {
  override readonly code: string = 'REJECTED'
  override readonly exitCode = ExitCode.dataError
}

/** The broker could not be reached where it had to be (exit 69). */
export class BrokerUnavailableError extends RmqError {
  override readonly code: string = 'BROKER_UNAVAILABLE'
  override readonly exitCode = ExitCode.unavailable
}

/** The broker did not answer within the configured timeout (exit 69). */
export class TimeoutError extends BrokerUnavailableError {
  override readonly code: string = 'TIMEOUT'
}

/** The outbox is at its size limit or the disk is full (exit 73). */
export class StorageFullError extends RmqError {
  override readonly code: string = 'STORAGE_FULL'
  override readonly exitCode = ExitCode.storageFull
}

/** A sync was attempted and failed; retry later (exit 75). */
export class SyncFailedError extends RmqError {
  override readonly code: string = 'SYNC_FAILED'
  override readonly exitCode = ExitCode.tempFail
}

/** Invalid or unknown configuration (exit 78). */
export class ConfigError extends RmqError {
  override readonly code: string = 'CONFIG'
  override readonly exitCode = ExitCode.config
}

/** A storage or codec driver failed in a way that is not the user's fault (exit 1). */
export class StorageError extends RmqError {
  override readonly code: string = 'STORAGE'
  override readonly exitCode: number = ExitCode.ioError
}

/**
 * The outbox file is damaged: SQLite reports it corrupt or not a database
 * (exit 70). `details.problem` is 'outbox-corrupt'; the CLI names the repair.
 */
export class CorruptStoreError extends StorageError {
  override readonly code: string = 'CORRUPT'
  override readonly exitCode: number = ExitCode.corrupt
}

export function isRmqError(err: unknown): err is RmqError {
  return err instanceof RmqError
}

export function exitCodeOf(err: unknown): number {
  if (isRmqError(err)) return err.exitCode
  const oclifExit = (err as { oclif?: { exit?: number } })?.oclif?.exit
  if (typeof oclifExit === 'number') return oclifExit
  return ExitCode.unexpected
}

/**
 * Render an error for a human on stderr: one line of cause, one of fix.
 * Stack traces only for unexpected errors or with RMQ_DEBUG=1.
 */
export function formatError(err: unknown, debug = process.env.RMQ_DEBUG === '1'): string {
  const lines: string[] = []
  if (isRmqError(err)) {
    lines.push(`rmq: ${err.message}`)
    if (err.suggestion) lines.push(`  fix: ${err.suggestion}`)
    if (debug && err.stack) lines.push(err.stack)
  } else {
    const e = err as Error
    lines.push(`rmq: unexpected error: ${e?.message ?? String(err)}`)
    lines.push('  fix: this is a bug in rmq; rerun with RMQ_DEBUG=1 and report the output')
    if (debug && e?.stack) lines.push(e.stack)
  }
  return lines.join('\n') + '\n'
}

export function errorToJson(err: unknown): { error: Record<string, unknown> } {
  if (isRmqError(err)) return { error: err.toJSON() }
  const e = err as Error
  return { error: { code: 'UNEXPECTED', message: e?.message ?? String(err), exitCode: ExitCode.unexpected } }
}
