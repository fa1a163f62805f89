import { BaseCommand } from '../../cli/base-command.js'
import { findConfigFile } from '../../core/config/load.js'
import path from 'node:path'

export default class ConfigPath extends BaseCommand<typeof ConfigPath> {
  static override summary = 'Print the config file in effect (or where `rmq config set` would create one).'
  static override examples = ['<%= config.bin %> config path']

  async run(): Promise<{
    file: string | null
    exists: boolean
    dotenv: string | null
    wouldCreate: string | null
  }> {
    const cwd = process.cwd()
    const file = findConfigFile(cwd, this.flags.config ?? process.env.RMQ_CONFIG)
    const dotenvPath = path.join(cwd, '.env')
    const fs = await import('node:fs')
    const dotenv = fs.existsSync(dotenvPath) ? dotenvPath : null
    if (file) this.say(file)
    else this.say(`none (rmq config set would create ${path.join(cwd, '.rmqrc.json')})`)
    return {
      file: file ?? null,
      exists: file ? fs.existsSync(file) : false,
      dotenv,
      wouldCreate: file ? null : path.join(cwd, '.rmqrc.json'),
    }
  }
}
