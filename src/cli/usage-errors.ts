/**
 * The words of every command-line mistake: unknown command, unknown flag, a
 * flag without its value, a missing or an extra argument. The oclif commands
 * (src/cli/base-command.ts, src/cli/command-not-found.ts) and the publish fast
 * path (src/cli/publish-fast.ts, which never loads oclif) both build their
 * errors here, so `rmq publish --bogus` reads like `rmq status --bogus`.
 * Nothing here may import oclif: it is bundled into the fast path.
 */
import { didYouMean } from '../core/did-you-mean.js'
import { UsageError } from '../shared/errors.js'

export interface FlagName {
  name: string
  char?: string
}

export interface ArgName {
  /** As the help shows it: TOPIC, KEY. */
  name: string
  description?: string
}

/** `rmq config set KEY VALUE`, `rmq publish TOPIC [MESSAGE]`: arguments as the help shows them. */
export function usageLine(
  command: string,
  args: ReadonlyArray<{ name: string; required?: boolean }>,
): string {
  return [
    command,
    ...args.map((a) => (a.required ? a.name.toUpperCase() : `[${a.name.toUpperCase()}]`)),
  ].join(' ')
}

const seeHelp = (command: string) => `see \`${command} --help\``

function flagList(flags: readonly FlagName[]): string {
  return flags.map((f) => (f.char ? `--${f.name} (-${f.char})` : `--${f.name}`)).join(', ')
}

/** `rmq status --bogus`: names the flag, the closest real one, and every flag the command takes. */
export function unknownFlagError(command: string, given: string, flags: readonly FlagName[]): UsageError {
  const flag = given.replace(/=.*$/s, '')
  const names = flags.map((f) => `--${f.name}`)
  const guess = flag.startsWith('--') ? didYouMean(flag, names) : undefined
  const takes = flags.length > 0 ? `\`${command}\` takes ${flagList(flags)}` : `\`${command}\` takes no flags`
  return new UsageError(`unknown flag ${flag} for \`${command}\``, {
    suggestion: `${guess ? `did you mean ${guess}? ` : ''}${takes} (${seeHelp(command)})`,
    details: { flag, flags: names, ...(guess ? { didYouMean: guess } : {}) },
  })
}

/** `rmq broker start --port` at the end of the line. */
export function flagValueMissingError(command: string, flag: string, helpValue = 'VALUE'): UsageError {
  return new UsageError(`flag --${flag} needs a value`, {
    suggestion: `write --${flag} ${helpValue} (${seeHelp(command)})`,
    details: { flag: `--${flag}` },
  })
}

/** `rmq config get`: names the missing argument(s) and shows the usage line. */
export function missingArgsError(
  command: string,
  missing: readonly ArgName[],
  usage: string,
  fix?: string,
): UsageError {
  const names = missing.map((a) => a.name)
  const about = missing.length === 1 ? missing[0].description?.replace(/\.$/, '') : undefined
  const what = about ? ` (${about})` : ''
  return new UsageError(
    `missing argument${names.length === 1 ? '' : 's'} ${names.join(', ')} for \`${command}\`${what}`,
    {
      suggestion: fix ?? `usage: ${usage} (${seeHelp(command)})`,
      details: { missing: names, usage },
    },
  )
}

/** `rmq status extra`: an argument the command does not take. */
export function unexpectedArgError(command: string, arg: string, usage: string, fix?: string): UsageError {
  return new UsageError(`unexpected argument ${JSON.stringify(arg)} for \`${command}\``, {
    suggestion:
      fix ??
      (usage === command
        ? `\`${command}\` takes no arguments (${seeHelp(command)})`
        : `usage: ${usage}; quote an argument that contains spaces (${seeHelp(command)})`),
    details: { argument: arg, usage },
  })
}

/**
 * `rmq pubish`: `typed` is the command as typed up to the wrong word (`broker tokn`), `known`
 * the commands and topics at the level of that word (`broker start`, `broker token`).
 */
export function unknownCommandError(typed: string, known: readonly string[]): UsageError {
  const lastWords = known.map((k) => k.split(' ').pop()!)
  const guessWord = didYouMean(typed.split(' ').pop()!, lastWords)
  const guess = guessWord === undefined ? undefined : known[lastWords.indexOf(guessWord)]
  const parent = typed.split(' ').slice(0, -1).join(' ')
  const help = `rmq${parent ? ` ${parent}` : ''} --help`
  return new UsageError(`unknown command ${JSON.stringify(typed)}`, {
    suggestion: guess
      ? `did you mean \`rmq ${guess}\`? (see \`${help}\`)`
      : `the commands are ${known.map((k) => `\`rmq ${k}\``).join(', ')} (see \`${help}\`)`,
    details: { command: typed, ...(guess ? { didYouMean: `rmq ${guess}` } : {}) },
  })
}
