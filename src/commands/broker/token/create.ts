import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../cli/base-command.js'
import type { CreatedToken } from '../../../broker/tokens.js'

export default class BrokerTokenCreate extends BaseCommand<typeof BrokerTokenCreate> {
  static override summary = 'Create (or replace) the bearer token of a node and print it once.'
  static override description =
    'The token is printed on stdout once; the broker keeps only its SHA-256 hash. Creating a token for a ' +
    'node that has one replaces it (the old one stops working). Works on the data directory directly: no ' +
    'running broker needed.'
  static override examples = [
    '<%= config.bin %> broker token create gw-17',
    'TOKEN=$(<%= config.bin %> broker token create gw-17 --data-dir /var/lib/rmq-broker)',
    '<%= config.bin %> broker token create gw-17 --json',
  ]
  static override args = {
    node: Args.string({ description: 'Node id the token is bound to.', required: true }),
  }
  static override flags = {
    'data-dir': Flags.string({ description: 'Broker data directory (broker.dataDir).' }),
  }

  async run(): Promise<CreatedToken> {
    const { withBrokerStore } = await import('../../../broker/admin.js')
    const { createNodeToken } = await import('../../../broker/tokens.js')
    const loaded = await this.loadConfig(
      this.flags['data-dir'] ? { 'broker.dataDir': this.flags['data-dir'] } : {},
    )
    const created = await withBrokerStore(loaded.config, (store) => createNodeToken(store, this.args.node))
    this.say(created.token)
    if (!this.jsonEnabled())
      this.note(
        `${created.replaced ? 'replaced the token' : 'created a token'} for node ${created.node} ` +
          // Where, so that a mistyped --data-dir shows: the broker must be started on the same store.
          `(${loaded.config.broker.store === 'sqlite' ? `data dir ${loaded.config.broker.dataDir}` : loaded.config.broker.store}); ` +
          'it is shown only this once: put it in the node config as `token` (RMQ_TOKEN)',
      )
    return created
  }
}
