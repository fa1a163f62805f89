/**
 * Ctrl-C and SIGTERM for the long-running commands (sync --watch, drain,
 * consume, cleanup), wired in one place: the first signal aborts the signal
 * the command passes to core, which stops cleanly (exit code and output as
 * the command decides). Each handler is a `once` handler, so a second Ctrl-C
 * finds none and Node's default ends the process at once — the way out of a
 * stop that hangs.
 */

/** The part of `process` this needs (an EventEmitter in tests). */
export interface SignalSource {
  once(event: string, listener: () => void): unknown
  removeListener(event: string, listener: () => void): unknown
}

export interface Interrupt {
  /** Aborted by the first of `signals` to arrive. */
  readonly signal: AbortSignal
  /** Remove the handlers that have not fired (the command is done). */
  dispose(): void
}

export const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const

export function interruptOn(
  signals: readonly string[] = STOP_SIGNALS,
  source: SignalSource = process,
): Interrupt {
  const abort = new AbortController()
  const stop = () => abort.abort()
  for (const s of signals) source.once(s, stop)
  return {
    signal: abort.signal,
    dispose: () => {
      for (const s of signals) source.removeListener(s, stop)
    },
  }
}
