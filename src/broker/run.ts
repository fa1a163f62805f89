import { startBroker, type CreateBrokerAppOptions } from './app.js'

export interface ForegroundResult {
  url: string
  signal: string
}

/**
 * Run the broker until SIGTERM or SIGINT, then stop accepting connections,
 * let in-flight requests finish (long-polls return at once) and close the
 * store. A second signal exits immediately. `onListening` gets the URL.
 * SIGHUP reloads the TLS certificate files (broker.tls.*): new connections
 * get the new certificate, open ones are not dropped.
 */
export async function runBrokerForeground(
  options: CreateBrokerAppOptions,
  onListening: (url: string) => void,
): Promise<ForegroundResult> {
  const broker = await startBroker(options)
  onListening(broker.url)
  const onHup = () => {
    try {
      if (broker.reloadTls()) broker.app.log.info('SIGHUP: TLS certificate files reloaded')
      else broker.app.log.info('SIGHUP: no broker.tls configured, nothing to reload')
    } catch (err) {
      broker.app.log.error(
        { err: (err as Error).message },
        'SIGHUP: TLS reload failed, the old certificate stays',
      )
    }
  }
  process.on('SIGHUP', onHup)
  const signal = await new Promise<string>((resolve) => {
    const handler = (sig: NodeJS.Signals) => {
      process.removeListener('SIGTERM', handler)
      process.removeListener('SIGINT', handler)
      process.once('SIGTERM', () => process.exit(1))
      process.once('SIGINT', () => process.exit(1))
      resolve(sig)
    }
    process.on('SIGTERM', handler)
    process.on('SIGINT', handler)
  })
  process.removeListener('SIGHUP', onHup)
  broker.app.log.info({ signal }, 'draining and stopping')
  await broker.close()
  return { url: broker.url, signal }
}
