import net from 'node:net'
import { ConfigError } from '../shared/errors.js'

/** Why host:port cannot be listened on, in words and with the fix; undefined for other errors. */
export function listenError(err: unknown, host: string, port: number): ConfigError | undefined {
  const code = (err as NodeJS.ErrnoException)?.code
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`
  const other = 'choose another with --port (broker.port, RMQ_BROKER_PORT)'
  const why =
    code === 'EADDRINUSE'
      ? {
          what: `port ${port} is already in use`,
          fix: `stop the process listening on it (\`ss -ltnp 'sport = :${port}'\` shows it), or ${other}`,
        }
      : code === 'EACCES'
        ? {
            what: 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)',
            fix: `${other}, e.g. 7878`,
          }
        : code === 'EADDRNOTAVAIL'
          ? {
              what: `${host} is not an address of this machine`,
              fix: 'choose another with --host (broker.host, RMQ_BROKER_HOST), e.g. 0.0.0.0 or 127.0.0.1',
            }
          : undefined
  if (!why) return undefined
  return new ConfigError(`cannot listen on ${where}: ${why.what} (${code})`, {
    suggestion: why.fix,
    details: { host, port, code },
  })
}

/**
 * Bind host:port and let it go again, so that a port in use fails before the
 * data directory and the store are created or opened. (Another process can
 * still take the port in between; the real listen reports that the same way.)
 */
export async function checkCanListen(host: string, port: number): Promise<void> {
  if (port === 0) return
  await new Promise<void>((resolve, reject) => {
    const server = net.createServer()
    server.once('error', (err) => reject(listenError(err, host, port) ?? err))
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve()))
  })
}
