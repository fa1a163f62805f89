import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../../cli/base-command.js'
import type { CreatedToken } from '../../../broker/tokens.js'

export default class BrokerTokenCreate extends BaseCommand<typeof BrokerTokenCreate> {
  static override summary = 'Create (or replace) a broker credential and print its token once.'
  static override description =
    'A credential has a NAME and a role: node (the default; NAME is the node id: it publishes its own batches ' +
    'and heartbeats and reads its own status), consumer (reads messages matching --topics and uses the ' +
    '--groups it is granted), monitor (fleet status, alerts, history, /metrics and the dashboard; no payloads) ' +
    'or admin (everything). The token is printed on stdout once; the broker keeps only its SHA-256 hash. ' +
    'Creating a credential whose NAME exists replaces it (the old token stops working; use `rotate` for a ' +
    'grace period). Works on the data directory (or PostgreSQL store) directly: no running broker needed. ' +
    'docs/security.md has the roles table.'
  static override examples = [
    '<%= config.bin %> broker token create gw-17',
    "<%= config.bin %> broker token create etl --role consumer --topics 'plant/7/#,alarms/#' --groups billing,etl",
    '<%= config.bin %> broker token create grafana --role monitor --expires 90d',
    'TOKEN=$(<%= config.bin %> broker token create gw-17 --data-dir /var/lib/rmq-broker)',
    '<%= config.bin %> broker token create ops --role admin --json',
  ]
  static override args = {
    name: Args.string({
      description: 'Credential name; for role node, the node id the token is bound to.',
      required: true,
    }),
  }
  static override flags = {
    role: Flags.string({
      description: 'What the credential may do.',
      options: ['node', 'consumer', 'monitor', 'admin'],
      default: 'node',
    }),
    topics: Flags.string({
      description: "consumer: topic filters it may read, comma-separated (e.g. 'plant/7/#,alarms/#').",
    }),
    groups: Flags.string({ description: 'consumer: consumer groups it may use, comma-separated.' }),
    expires: Flags.string({ description: 'Lifetime (e.g. 90d, 12h); default: no expiry.' }),
    'data-dir': Flags.string({ description: 'Broker data directory (broker.dataDir).' }),
  }

  async run(): Promise<CreatedToken> {
    const { withBrokerStore } = await import('../../../broker/admin.js')
    const { createToken, splitList } = await import('../../../broker/tokens.js')
    const { formatAge } = await import('../../../shared/units.js')
    const loaded = await this.loadConfig(
      this.flags['data-dir'] ? { 'broker.dataDir': this.flags['data-dir'] } : {},
    )
    const { flags } = this
    const created = await withBrokerStore(loaded.config, (store) =>
      createToken(store, {
        name: this.args.name,
        role: flags.role as CreatedToken['role'],
        topics: flags.topics === undefined ? undefined : splitList(flags.topics),
        groups: flags.groups === undefined ? undefined : splitList(flags.groups),
        expires: flags.expires,
      }),
    )
    this.say(created.token)
    if (!this.jsonEnabled()) {
      const scope =
        created.role === 'consumer'
          ? ` reading ${created.topics.join(', ')}${created.groups.length > 0 ? `, groups ${created.groups.join(', ')}` : ', no groups'}`
          : ''
      const expiry =
        created.expiresAt === null
          ? ''
          : `, expires ${new Date(created.expiresAt).toISOString()} (in ${formatAge(created.expiresAt - created.createdAt)})`
      const use =
        created.role === 'node'
          ? 'put it in the node config as `token` (RMQ_TOKEN, or tokenFile)'
          : 'give it to the client as its bearer token (RMQ_TOKEN for rmq consume / status --broker)'
      this.note(
        `${created.replaced ? 'replaced' : 'created'} ${created.role} credential ${created.name}${scope}${expiry} ` +
          // Where, so that a mistyped --data-dir shows: the broker must be started on the same store.
          `(${loaded.config.broker.store === 'sqlite' ? `data dir ${loaded.config.broker.dataDir}` : loaded.config.broker.store}); ` +
          `it is shown only this once: ${use}`,
      )
    }
    return created
  }
}
