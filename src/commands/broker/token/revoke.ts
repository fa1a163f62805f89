import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../cli/base-command.js'

export default class BrokerTokenRevoke extends BaseCommand<typeof BrokerTokenRevoke> {
  static override summary = 'Revoke a credential: its token (and a rotated-out one) get 401 from then on.'
  static override description =
    'A running broker refuses the token at its next request, dashboard sessions signed in with it included.'
  static override examples = [
    '<%= config.bin %> broker token revoke gw-17',
    '<%= config.bin %> broker token revoke etl --json',
  ]
  static override args = {
    name: Args.string({ description: 'Credential name (the node id of a node token).', required: true }),
  }
  static override flags = {
    'data-dir': Flags.string({ description: 'Broker data directory (broker.dataDir).' }),
  }

  async run(): Promise<{ name: string; revoked: true }> {
    const { withBrokerStore } = await import('../../../broker/admin.js')
    const { revokeToken } = await import('../../../broker/tokens.js')
    const loaded = await this.loadConfig(
      this.flags['data-dir'] ? { 'broker.dataDir': this.flags['data-dir'] } : {},
    )
    const result = await withBrokerStore(loaded.config, (store) => revokeToken(store, this.args.name), {
      existing: true,
    })
    this.say(`revoked the token of ${this.args.name}`)
    return result
  }
}
