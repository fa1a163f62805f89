import { Flags } from '@oclif/core'
import { BaseCommand } from '../../../cli/base-command.js'
import type { TokenRecord } from '../../../broker/store/types.js'

export default class BrokerTokenList extends BaseCommand<typeof BrokerTokenList> {
  static override summary =
    'List the broker credentials: role, scopes, created, last used, expiry (never a token).'
  static override examples = [
    '<%= config.bin %> broker token list',
    '<%= config.bin %> broker token list --json',
  ]
  static override flags = {
    'data-dir': Flags.string({ description: 'Broker data directory (broker.dataDir).' }),
  }

  async run(): Promise<{ tokens: Array<TokenRecord & { expired: boolean; node?: string }> }> {
    const { withBrokerStore } = await import('../../../broker/admin.js')
    const { listTokens } = await import('../../../broker/tokens.js')
    const { renderTable } = await import('../../../cli/render.js')
    const loaded = await this.loadConfig(
      this.flags['data-dir'] ? { 'broker.dataDir': this.flags['data-dir'] } : {},
    )
    const now = Date.now()
    const tokens = await withBrokerStore(loaded.config, (store) => listTokens(store, now), { existing: true })
    const iso = (t: number | null, none: string) => (t === null ? none : new Date(t).toISOString())
    const scopes = (t: TokenRecord) =>
      t.role === 'consumer'
        ? `topics ${t.topics.join(',')}; groups ${t.groups.length > 0 ? t.groups.join(',') : '-'}`
        : t.role === 'node'
          ? 'own node'
          : 'all'
    const expiry = (t: TokenRecord & { expired: boolean }) =>
      `${iso(t.expiresAt, 'never')}${t.expired ? ' (expired)' : ''}` +
      (t.previousUntil !== null && t.previousUntil > now
        ? `; previous token valid until ${iso(t.previousUntil, '')}`
        : '')
    if (tokens.length === 0) this.say('no tokens (create one with `rmq broker token create NAME`)')
    else
      this.say(
        renderTable(
          ['name', 'role', 'scopes', 'created', 'last used', 'expires'],
          tokens.map((t) => [
            t.name,
            t.role,
            scopes(t),
            iso(t.createdAt, 'never'),
            iso(t.lastUsedAt, 'never'),
            expiry(t),
          ]),
        ),
      )
    return { tokens }
  }
}
