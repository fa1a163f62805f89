import type { Hook } from '@oclif/core'
import { UsageError } from '../shared/errors.js'
import { reportError } from './error-output.js'
import { unexpectedArgError, unknownCommandError, usageLine } from './usage-errors.js'

/**
 * oclif's `command_not_found` hook (package.json oclif.hooks): `rmq pubish a b`
 * gets the rmq-style error with the closest command (exit 2) instead of
 * oclif's "command pubish:a:b not found".
 */
const hook: Hook.CommandNotFound = async function ({ id, argv = [], config }) {
  // With the space separator oclif joins the words before the first flag into the id
  // (for a command without arguments too: `rmq status extra` arrives as status:extra).
  const words = id.split(':')
  let error
  for (let n = words.length - 1; n >= 1 && !error; n--) {
    const cmd = config.findCommand(words.slice(0, n).join(':'))
    if (!cmd) continue
    const command = `rmq ${words.slice(0, n).join(' ')}`
    const args = Object.entries(cmd.args ?? {}).map(([name, a]) => ({ name, required: a.required }))
    error = unexpectedArgError(command, words[n], usageLine(command, args))
  }
  if (!error && words[0] === 'help') {
    const about = words.slice(1).join(' ')
    error = new UsageError('unknown command "help"', {
      suggestion: `help is a flag: \`rmq ${about ? `${about} ` : ''}--help\``,
    })
  }
  if (!error) {
    // Topics from package.json keep their spaces (`broker token`); ids use colons.
    const topics = new Set(config.topics.filter((t) => !t.hidden).map((t) => t.name.replaceAll(' ', ':')))
    const visible = [...config.commands.filter((c) => !c.hidden).map((c) => c.id), ...topics]
    // The longest run of words that names a topic (`broker`); the next word is the mistake.
    let depth = 0
    while (depth < words.length - 1 && topics.has(words.slice(0, depth + 1).join(':'))) depth++
    const prefix = words.slice(0, depth).join(':')
    const level = new Set<string>()
    for (const name of visible) {
      const parts = name.split(':')
      if (parts.length > depth && parts.slice(0, depth).join(':') === prefix)
        level.add(parts.slice(0, depth + 1).join(' '))
    }
    error = unknownCommandError(words.slice(0, depth + 1).join(' '), [...level].sort())
  }
  process.exitCode = reportError(error, [...words, ...argv].includes('--json'))
}

export default hook
