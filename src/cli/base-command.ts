import { Command, Flags, type Interfaces } from '@oclif/core'
import { loadConfig, type LoadedConfig } from '../core/config/load.js'
import { UsageError, errorToJson, exitCodeOf, formatError, isRmqError } from '../core/errors.js'

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

  public override async init(): Promise<void> {
    await super.init()
    const { args, flags } = await this.parse({
      flags: this.ctor.flags,
      baseFlags: (super.ctor as typeof BaseCommand).baseFlags,
      enableJsonFlag: this.ctor.enableJsonFlag,
      args: this.ctor.args,
      strict: this.ctor.strict,
    })
    this.flags = flags as FlagsOf<T>
    this.args = args as ArgsOf<T>
  }

  /** Effective configuration; `flagValues` are key paths set by this command's flags. */
  protected async loadConfig(flagValues: Record<string, unknown> = {}): Promise<LoadedConfig> {
    return loadConfig({ configPath: this.flags.config, flags: flagValues })
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
    if (!isRmqError(err) && err?.oclif?.exit === 2) {
      const command = this.id ? `rmq ${this.id.replaceAll(':', ' ')}` : 'rmq'
      error = new UsageError(parseErrorMessage(err.message), { suggestion: `see \`${command} --help\`` })
    }
    if (this.jsonEnabled()) process.stdout.write(JSON.stringify(errorToJson(error)) + '\n')
    process.stderr.write(formatError(error))
    process.exitCode = exitCodeOf(error)
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
