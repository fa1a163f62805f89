import { Command, Flags, type Interfaces } from '@oclif/core'
// Registers the built-in storage drivers and codecs with core's registries.
import '../plugins/builtins.js'
import { loadConfig, type LoadedConfig } from '../core/config/load.js'
import { interruptOn, type Interrupt } from './interrupt.js'
import { UsageError, isRmqError } from '../shared/errors.js'
import { reportError } from './error-output.js'
import {
  flagValueMissingError,
  missingArgsError,
  unexpectedArgError,
  unknownFlagError,
  usageLine,
} from './usage-errors.js'

export type FlagsOf<T extends typeof Command> = Interfaces.InferredFlags<
  (typeof BaseCommand)['baseFlags'] & T['flags']
>
export type ArgsOf<T extends typeof Command> = Interfaces.InferredArgs<T['args']>

/**
 * Owns what every command shares: `--json` (one JSON document on stdout),
 * `--config`, configuration loading, and the mapping of errors to exit codes
 * with a one-line cause and fix on stderr.
 */
export abstract class BaseCommand<T extends typeof Command> extends Command {
  static override enableJsonFlag = true

  static override baseFlags = {
    config: Flags.string({
      description: 'Config file to use instead of searching the working directory (env: RMQ_CONFIG).',
      helpGroup: 'GLOBAL',
    }),
  }

  protected flags!: FlagsOf<T>
  protected args!: ArgsOf<T>
  private interrupt: Interrupt | undefined

  public override async init(): Promise<void> {
    await super.init()
    const { args, flags } = await this.parse({
      flags: this.ctor.flags,
      baseFlags: (super.ctor as typeof BaseCommand).baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      args: this.ctor.args,
      strict: this.ctor.strict,
    }).catch((err: unknown) => {
      // Parsed and rejected: without this, oclif adds a "did not parse its arguments"
      // warning after the usage error whenever NODE_ENV is development or test.
      this.parsed = true
      throw err
    })
    this.flags = flags as FlagsOf<T>
    this.args = args as ArgsOf<T>
  }

  /** Effective configuration; `flagValues` are key paths set by this command's flags. */
  protected async loadConfig(flagValues: Record<string, unknown> = {}): Promise<LoadedConfig> {
    return loadConfig({ configPath: this.flags.config, flags: flagValues })
  }

  /**
   * The signal to pass to core for work a user may stop: aborted by the first
   * Ctrl-C (SIGINT) or SIGTERM, so the command stops cleanly and exits as it
   * decides; a second Ctrl-C ends the process at once (src/cli/interrupt.ts).
   * The handlers are removed when the command ends.
   */
  protected abortSignal(): AbortSignal {
    this.interrupt ??= interruptOn()
    return this.interrupt.signal
  }

  protected override async finally(err: Error | undefined): Promise<void> {
    this.interrupt?.dispose()
    this.interrupt = undefined
    return super.finally(err)
  }

  /** Human output: stdout normally, nothing in --json mode. */
  protected say(text: string): void {
    if (!this.jsonEnabled()) process.stdout.write(text.endsWith('\n') ? text : text + '\n')
  }

  /** Notices and progress: always stderr, so stdout stays machine-readable. */
  protected note(text: string): void {
    process.stderr.write(text.endsWith('\n') ? text : text + '\n')
  }

  protected override async catch(err: Error & { oclif?: { exit?: number } }): Promise<void> {
    // this.exit() and oclif's own help/version exits pass through untouched.
    if (err?.constructor?.name === 'ExitError') throw err
    let error: unknown = err
    if (!isRmqError(err) && err?.oclif?.exit === 2) error = this.usageError(err)
    process.exitCode = reportError(error, this.jsonEnabled())
  }

  /** oclif's parse errors in the words every rmq usage error uses (src/cli/usage-errors.ts). */
  private usageError(err: Error & { flags?: unknown; args?: unknown }): UsageError {
    const command = this.id ? `rmq ${this.id.replaceAll(':', ' ')}` : 'rmq'
    const ctor = this.ctor
    const args = Object.entries(ctor.args ?? {}).map(([name, a]) => ({
      name: name.toUpperCase(),
      required: a.required,
      description: a.description,
    }))
    const usage = usageLine(command, args)
    const kind = err.constructor?.name
    if (kind === 'NonExistentFlagsError' && Array.isArray(err.flags)) {
      // The command's own flags first, then the global ones (as the publish fast path lists them).
      const flags = [
        ...Object.entries(ctor.flags ?? {})
          .filter(([, f]) => !f.hidden)
          .map(([name, f]) => ({ name, char: f.char })),
        ...(ctor.enableJsonFlag ? [{ name: 'json' }] : []),
        ...Object.keys(BaseCommand.baseFlags).map((name) => ({ name })),
      ]
      return unknownFlagError(command, String(err.flags[0]), flags)
    }
    if (kind === 'RequiredArgsError' && Array.isArray(err.args)) {
      const missing = new Set((err.args as Array<{ name: string }>).map((a) => a.name.toUpperCase()))
      return missingArgsError(
        command,
        args.filter((a) => missing.has(a.name)),
        usage,
      )
    }
    if (kind === 'UnexpectedArgsError' && Array.isArray(err.args))
      return unexpectedArgError(command, String(err.args[0]), usage)
    const noValue = /^Flag --([\w-]+) expects a value/.exec(err.message)
    if (noValue) {
      const helpValue = (ctor.flags?.[noValue[1]] as { helpValue?: string } | undefined)?.helpValue
      return flagValueMissingError(command, noValue[1], typeof helpValue === 'string' ? helpValue : undefined)
    }
    return new UsageError(parseErrorMessage(err.message), { suggestion: `see \`${command} --help\`` })
  }
}

/**
 * oclif wraps parse errors as "The following error occurred:\n  <reason>\nSee
 * more help with --help"; keep the reasons on one line.
 */
export function parseErrorMessage(message: string): string {
  const lines = message
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !/^The following errors? occurred:?$/i.test(l) && !/^See more help with/i.test(l))
  let out = ''
  for (const l of lines) out += out === '' ? l : out.endsWith(':') ? ` ${l}` : `; ${l}`
  return out.replace(/\s{2,}/g, ' — ') || message
}
