import { BaseCommand } from '../../cli/base-command.js'

export default class ConfigValidate extends BaseCommand<typeof ConfigValidate> {
  static override summary = 'Check the whole configuration; exit 78 naming the bad key, value and source.'
  static override examples = [
    '<%= config.bin %> config validate',
    'RMQ_SYNC_INTERVAL=banana <%= config.bin %> config validate',
  ]

  async run(): Promise<{ valid: true; file: string | null; dotenv: string | null }> {
    const loaded = await this.loadConfig()
    this.say(`configuration is valid (config file: ${loaded.filePath ?? 'none'})`)
    return { valid: true, file: loaded.filePath ?? null, dotenv: loaded.dotenvPath ?? null }
  }
}
