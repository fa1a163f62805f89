import { Flags } from '@oclif/core'
import { BaseCommand } from '../../../cli/base-command.js'
import type { TokenRecord } from '../../../broker/store/types.js'

export default class BrokerTokenList extends BaseCommand<typeof BrokerTokenList> {
  static override summary = 'List the nodes that have a token (never the tokens themselves).'
  static override examples = [
    '<%= config.bin %> broker token list',
    '<%= config.bin %> broker token list --json',
  ]
  static override flags = {
    'data-dir': Flags.string({ description: 'Broker data directory (broker.dataDir).' }),
  }

  async run(): Promise<{ tokens: TokenRecord[] }> {
    const { withBrokerStore } = await import('../../../broker/admin.js')
    const { renderTable } = await import('../../../cli/render.js')
    const loaded = await this.loadConfig(
      this.flags['data-dir'] ? { 'broker.dataDir': this.flags['data-dir'] } : {},
    )
    const tokens = await withBrokerStore(loaded.config, (store) => store.listTokens(), { existing: true })
    const iso = (t: number | null) => (t === null ? 'never' : new Date(t).toISOString())
    if (tokens.length === 0) this.say('no tokens (create one with `rmq broker token create NODE`)')
    else
      this.say(
        renderTable(
          ['node', 'created', 'last used'],
          tokens.map((t) => [t.node, iso(t.createdAt), iso(t.lastUsedAt)]),
        ),
      )
    return { tokens }
  }
}
