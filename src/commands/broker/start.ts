import { Flags } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'

export default class BrokerStart extends BaseCommand<typeof BrokerStart> {
  static override summary = 'Run the main broker in the foreground (for systemd).'
  static override description =
    'Accepts batches from edge nodes (POST /v1/batches), stores them durably and idempotently, orders them ' +
    'by event time and serves consumers (GET /v1/messages). Logs go to stderr. SIGTERM/SIGINT drain ' +
    'in-flight requests and close the store. With broker.tls.cert/key it serves HTTPS (SIGHUP reloads the ' +
    'certificate files without dropping connections); broker.tls.clientCa and broker.auth=mtls or token+mtls ' +
    'make client certificates name the node. Without authentication (broker.auth=none) or without TLS it only ' +
    'listens on a loopback address unless --insecure is given.'
  static override examples = [
    '<%= config.bin %> broker start',
    '<%= config.bin %> broker start --host 0.0.0.0 --port 7878 --data-dir /var/lib/rmq-broker --log-format json',
    'RMQ_BROKER_AUTH=none <%= config.bin %> broker start --port 0',
    'RMQ_BROKER_TLS_CERT=server.pem RMQ_BROKER_TLS_KEY=server.key <%= config.bin %> broker start --host 0.0.0.0',
  ]
  static override flags = {
    host: Flags.string({ description: 'Address to listen on (broker.host).' }),
    port: Flags.integer({
      description: 'Port to listen on; 0 picks a free one (broker.port).',
      min: 0,
      max: 65535,
    }),
    'data-dir': Flags.string({ description: 'Data directory of the SQLite store (broker.dataDir).' }),
    auth: Flags.string({
      description: 'token, mtls, token+mtls or none (broker.auth).',
      options: ['token', 'mtls', 'token+mtls', 'none'],
    }),
    'log-format': Flags.string({
      description: 'Log lines on stderr.',
      options: ['json', 'pretty'],
      default: 'pretty',
    }),
    insecure: Flags.boolean({
      description: 'Allow broker.auth=none, or plain HTTP without broker.tls, on a non-loopback address.',
      aliases: ['allow-unauthenticated'],
    }),
  }

  async run(): Promise<{ url: string; signal: string }> {
    const f = this.flags
    const loaded = await this.loadConfig({
      ...(f.host === undefined ? {} : { 'broker.host': f.host }),
      ...(f.port === undefined ? {} : { 'broker.port': f.port }),
      ...(f['data-dir'] === undefined ? {} : { 'broker.dataDir': f['data-dir'] }),
      ...(f.auth === undefined ? {} : { 'broker.auth': f.auth }),
    })
    const { brokerOptionsFromConfig } = await import('../../broker/options.js')
    const { runBrokerForeground } = await import('../../broker/run.js')
    const options = brokerOptionsFromConfig(loaded.config, {
      insecure: f.insecure,
      logFormat: f['log-format'] as 'json' | 'pretty',
    })
    if (options.tls) {
      const { resolvePath } = await import('../../core/config/load.js')
      const t = options.tls
      options.tls = {
        cert: t.cert && resolvePath(loaded, t.cert),
        key: t.key && resolvePath(loaded, t.key),
        ...(t.clientCa ? { clientCa: resolvePath(loaded, t.clientCa) } : {}),
      }
    }
    return runBrokerForeground(options, (url) => {
      this.note(
        `rmq broker listening on ${url} (data ${options.dataDir}, store ${options.store}, auth ${options.auth}${options.tls ? ', tls' : ''})`,
      )
      this.note(`dashboard: ${url}/   metrics: ${url}/metrics`)
    })
  }
}
