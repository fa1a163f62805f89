import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import { describeEntry, type ConfigEntry } from '../../core/config/describe.js'

export default class ConfigGet extends BaseCommand<typeof ConfigGet> {
  static override summary = 'Print the effective value of one configuration key.'
  static override description =
    'Values come from defaults, the config file, .env, RMQ_* environment variables and flags (later wins). ' +
    'Durations print as written (30s), sizes in bytes units (1MB). Secrets are masked unless --reveal.'
  static override examples = [
    '<%= config.bin %> config get sync.batchSize',
    'RMQ_SYNC_BATCH_SIZE=7 <%= config.bin %> config get sync.batchSize',
    '<%= config.bin %> config get brokerUrl --json',
  ]
  static override args = {
    key: Args.string({ description: 'Key path, e.g. sync.batchSize', required: true }),
  }
  static override flags = { reveal: Flags.boolean({ description: 'Show secret values (token) in full.' }) }

  async run(): Promise<ConfigEntry> {
    const loaded = await this.loadConfig()
    const entry = describeEntry(loaded, this.args.key, this.flags.reveal)
    this.say(entry.display)
    return entry
  }
}
