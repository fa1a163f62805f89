import { Flags } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import { renderTable } from '../../cli/render.js'
import { describeAll, type ConfigEntry } from '../../core/config/describe.js'

export default class ConfigList extends BaseCommand<typeof ConfigList> {
  static override summary = 'Show every configuration key with its effective value and source.'
  static override examples = ['<%= config.bin %> config list', '<%= config.bin %> config list --json']
  static override flags = {
    reveal: Flags.boolean({ description: 'Show secret values (token) in full.' }),
    env: Flags.boolean({ description: 'Add a column with each key’s environment variable.' }),
  }

  async run(): Promise<{ file: string | null; dotenv: string | null; keys: ConfigEntry[] }> {
    const loaded = await this.loadConfig()
    const keys = describeAll(loaded, this.flags.reveal)
    const head = this.flags.env ? ['KEY', 'VALUE', 'SOURCE', 'ENV'] : ['KEY', 'VALUE', 'SOURCE']
    this.say(
      renderTable(
        head,
        keys.map((e) =>
          this.flags.env ? [e.key, e.display, e.sourceText, e.env] : [e.key, e.display, e.sourceText],
        ),
      ),
    )
    this.say(
      `\nconfig file: ${loaded.filePath ?? 'none'}${loaded.dotenvPath ? `   .env: ${loaded.dotenvPath}` : ''}`,
    )
    return { file: loaded.filePath ?? null, dotenv: loaded.dotenvPath ?? null, keys }
  }
}
