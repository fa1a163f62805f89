import { Args } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import { unsetConfigValue } from '../../core/config/file.js'
import { findConfigFile } from '../../core/config/load.js'
import { requireKey } from '../../core/config/parse.js'

export default class ConfigUnset extends BaseCommand<typeof ConfigUnset> {
  static override summary = 'Remove a key from the config file, so its default (or env) applies again.'
  static override examples = ['<%= config.bin %> config unset sync.interval']
  static override args = { key: Args.string({ description: 'Key path', required: true }) }

  async run(): Promise<{ key: string; file: string; removed: boolean }> {
    requireKey(this.args.key)
    const file = findConfigFile(process.cwd(), this.flags.config ?? process.env.RMQ_CONFIG)
    const result = unsetConfigValue(file, process.cwd(), this.args.key)
    this.say(
      result.removed
        ? `removed ${this.args.key} from ${result.filePath}`
        : `${this.args.key} was not set in a config file`,
    )
    return { key: this.args.key, file: result.filePath, removed: result.removed }
  }
}
