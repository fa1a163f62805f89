import { Args } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import { setConfigValue } from '../../core/config/file.js'
import { findConfigFile, loadConfig, maskSecret } from '../../core/config/load.js'
import { requireKey } from '../../core/config/parse.js'
import { KEY_INDEX } from '../../core/config/schema.js'

export default class ConfigSet extends BaseCommand<typeof ConfigSet> {
  static override summary = 'Set a key in the config file (creates .rmqrc.json if there is none).'
  static override description =
    'Edits the JSON config file in place and keeps every other key; the file is written 0600 (owner only), ' +
    'and a secret value (token) is printed masked. Stored messages are never touched: ' +
    'the outbox lives in its own database file. An environment variable or .env entry for the same key still wins.'
  static override examples = [
    '<%= config.bin %> config set brokerUrl https://10.0.0.5:7878',
    '<%= config.bin %> config set sync.interval 1m',
    '<%= config.bin %> config set tokenFile /etc/rmq/token',
  ]
  static override args = {
    key: Args.string({ description: 'Key path, e.g. sync.interval', required: true }),
    value: Args.string({ description: 'New value', required: true }),
  }

  async run(): Promise<{
    key: string
    value: string
    file: string
    created: boolean
    overriddenBy?: string
  }> {
    requireKey(this.args.key)
    // The file to edit is found without validating the rest, so a broken value elsewhere can still be fixed.
    const file = findConfigFile(process.cwd(), this.flags.config ?? process.env.RMQ_CONFIG)
    const result = setConfigValue(file, process.cwd(), this.args.key, this.args.value)
    let overriddenBy: string | undefined
    try {
      const after = await loadConfig({ configPath: result.filePath })
      const src = after.values.get(this.args.key)!.source
      if (src.kind === 'env' || src.kind === 'dotenv') overriddenBy = src.detail
    } catch {
      // Other invalid values are reported by `rmq config validate`.
    }
    // A secret (token) is never echoed: not to the terminal, its scrollback, or a CI log.
    const shown = KEY_INDEX.get(this.args.key)?.secret ? maskSecret(this.args.value) : this.args.value
    this.say(`${this.args.key} = ${shown}   (${result.created ? 'created' : 'updated'} ${result.filePath})`)
    if (overriddenBy)
      this.note(`note: ${overriddenBy} overrides this value; unset it for the file to take effect`)
    return {
      key: this.args.key,
      value: shown,
      file: result.filePath,
      created: result.created,
      overriddenBy,
    }
  }
}
