import net from 'node:net'
import path from 'node:path'
import { getMessages } from './broker.js'
import type { ProducerOptions } from '../../src/core/producer.js'
import type { StorageDriver } from '../../src/core/storage/driver.js'

/** A port nothing listens on (a broker that is down). */
export async function freePort(): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const { port } = srv.address() as net.AddressInfo
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return port
}

let n = 0
/** A node id no other test uses, so broker-side checks see only this test's messages. */
export const uniqueNode = (prefix: string) => `${prefix}-${process.pid}-${++n}`

/** The whole configuration of a test producer; the suites change only `mode`/`forward` and the broker URL. */
export function producerOptions(
  dir: string,
  config: { mode: 'edge' | 'direct'; nodeId: string; brokerUrl: string } & ProducerOptions,
): ProducerOptions {
  return {
    cwd: dir,
    env: {},
    dotenv: false,
    storage: { path: path.join(dir, 'outbox.db') },
    sync: { timeout: '2s', backoff: { initial: '20ms', max: '200ms' } },
    compression: { codec: 'gzip' },
    ...config,
  }
}

/** The messages of `node` the broker holds, in arrival order. */
export async function brokerMessages(url: string, node: string, token?: string): Promise<any[]> {
  const page = await getMessages(url, { topic: '#', order: 'arrival', limit: 1000 }, token)
  if (page.status !== 200) throw new Error(`GET /v1/messages: ${page.status} ${JSON.stringify(page.body)}`)
  return (page.body.messages as any[]).filter((m) => m.node === node)
}

/** A driver that counts append calls (one call = one transaction). */
export function countingDriver(driver: StorageDriver): { driver: StorageDriver; appends: () => number } {
  let appends = 0
  const wrapped = new Proxy(driver, {
    get(target, key) {
      if (key === 'append')
        return (messages: Parameters<StorageDriver['append']>[0]) => {
          appends++
          return target.append(messages)
        }
      const v = (target as any)[key]
      return typeof v === 'function' ? v.bind(target) : v
    },
  })
  return { driver: wrapped, appends: () => appends }
}
