import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../cli/base-command.js'
import { ValidationError } from '../../../shared/errors.js'

export default class BrokerTokenRevoke extends BaseCommand<typeof BrokerTokenRevoke> {
  static override summary = 'Revoke the token of a node: its requests get 401 from then on.'
  static override examples = ['<%= config.bin %> broker token revoke gw-17']
  static override args = { node: Args.string({ description: 'Node id.', required: true }) }
  static override flags = {
    'data-dir': Flags.string({ description: 'Broker data directory (broker.dataDir).' }),
  }

  async run(): Promise<{ node: string; revoked: boolean }> {
    const { withBrokerStore } = await import('../../../broker/admin.js')
    const loaded = await this.loadConfig(
      this.flags['data-dir'] ? { 'broker.dataDir': this.flags['data-dir'] } : {},
    )
    const revoked = await withBrokerStore(loaded.config, (store) => store.revokeToken(this.args.node), {
      existing: true,
    })
    if (!revoked)
      throw new ValidationError(`node ${this.args.node} has no token`, {
        suggestion: 'see `rmq broker token list` for the nodes that have one',
      })
    this.say(`revoked the token of node ${this.args.node}`)
    return { node: this.args.node, revoked }
  }
}
