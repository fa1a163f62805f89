import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../cli/base-command.js'
import type { RotatedToken } from '../../../broker/tokens.js'

export default class BrokerTokenRotate extends BaseCommand<typeof BrokerTokenRotate> {
  static override summary =
    'Issue a new token for a credential; the old one keeps working for a grace period.'
  static override description =
    'The new token is printed on stdout once. The old token is accepted until the grace period ends ' +
    '(401 TOKEN_ROTATED after), so clients can be moved over without a gap; rotating again ends the older ' +
    "one's grace at once. Role, scopes and expiry stay as they are."
  static override examples = [
    '<%= config.bin %> broker token rotate gw-17',
    'NEW=$(<%= config.bin %> broker token rotate etl --grace 1h)',
    '<%= config.bin %> broker token rotate grafana --grace 0 --json',
  ]
  static override args = {
    name: Args.string({ description: 'Credential name (the node id of a node token).', required: true }),
  }
  static override flags = {
    grace: Flags.string({
      description: 'How long the old token keeps working (e.g. 24h, 30m; 0: not at all).',
      default: '24h',
    }),
    'data-dir': Flags.string({ description: 'Broker data directory (broker.dataDir).' }),
  }

  async run(): Promise<RotatedToken> {
    const { withBrokerStore } = await import('../../../broker/admin.js')
    const { rotateToken } = await import('../../../broker/tokens.js')
    const loaded = await this.loadConfig(
      this.flags['data-dir'] ? { 'broker.dataDir': this.flags['data-dir'] } : {},
    )
    const rotated = await withBrokerStore(
      loaded.config,
      (store) => rotateToken(store, this.args.name, this.flags.grace),
      { existing: true },
    )
    this.say(rotated.token)
    if (!this.jsonEnabled())
      this.note(
        `rotated the ${rotated.role} token of ${rotated.name}; the old token works until ` +
          `${new Date(rotated.previousValidUntil).toISOString()}; the new one is shown only this once`,
      )
    return rotated
  }
}
