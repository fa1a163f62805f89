/**
 * Pieces of the broker monitoring tests: broker app options with short
 * alert limits, an in-memory alert sink, node stats as an edge reports them,
 * a webhook receiver on 127.0.0.1, and polling until a condition holds.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { CreateBrokerAppOptions } from '../../src/broker/app.js'
import type { AlertEvent, AlertSink } from '../../src/broker/alerts.js'
import { brokerAppOptions, MIN, T0 } from './broker-app.js'

export const SEC = 1000
export { MIN, T0 }

/** Collects alert events like a sink would deliver them. */
export class MemorySink implements AlertSink {
  readonly name = 'memory'
  events: AlertEvent[] = []
  send(e: AlertEvent) {
    this.events.push(e)
  }
  close() {}
}

/** The test broker's options (./broker-app.ts) with alert limits the monitoring tests count on. */
export function options(
  dataDir: string,
  extra: Partial<CreateBrokerAppOptions> = {},
): CreateBrokerAppOptions {
  return brokerAppOptions(dataDir, {
    alerts: {
      noSyncFor: 10 * MIN,
      backlogAge: 30 * MIN,
      dataLoss: true,
      dataLossClearAfter: 15 * MIN,
      neverSyncedFor: 60 * MIN,
      interval: 10 * SEC,
      webhooks: [],
    },
    ...extra,
  })
}

export function stats(s: { attempts?: number; successes?: number; dropped?: number; expired?: number } = {}) {
  return {
    sync: { attempts: s.attempts ?? 4, successes: s.successes ?? 3, failures: 1, lastError: null },
    storage: {
      pending: 0,
      totalBytes: 2048,
      maxBytes: 1 << 20,
      droppedTotal: s.dropped ?? 0,
      expiredTotal: s.expired ?? 0,
    },
  }
}

/** A webhook receiver on 127.0.0.1 that answers with the statuses given, then 200. */
export async function startReceiver(statuses: number[] = []) {
  const got: Array<{ body: AlertEvent; headers: http.IncomingHttpHeaders }> = []
  let attempts = 0
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const status = statuses[attempts++] ?? 200
      if (status === 200)
        got.push({ body: JSON.parse(Buffer.concat(chunks).toString('utf8')), headers: req.headers })
      res.writeHead(status).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook?secret=s3`
  return {
    url,
    got,
    attempts: () => attempts,
    close: () => new Promise<void>((r) => server.close(() => r())),
  }
}

/** Poll `fn` every 20 ms until it returns something truthy, and return that; throw after timeoutMs. */
export async function until<T>(
  fn: () => T | Promise<T>,
  what: string,
  timeoutMs = 5000,
): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v as NonNullable<T>
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
