import fs from 'node:fs'
import { afterEach, describe, expect, it } from 'vitest'
import { makeBatch, message, postBatch, startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { runCli } from '../helpers/cli.js'
import { startFollowConsumer } from '../helpers/consumer-process.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Established TCP connections whose local port is `port` (the broker's side), from /proc/net/tcp. */
function establishedTo(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, '0')
  let n = 0
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = ''
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols.length > 3 && cols[1].endsWith(`:${hex}`) && cols[3] === '01') n++
    }
  }
  return n
}

describe('rmq consume --follow across a broker restart', () => {
  let broker: BrokerProcess | undefined
  afterEach(async () => broker?.cleanup())

  it('rides out a broker killed while its very first long-poll is in flight', async () => {
    broker = await startBrokerProcess({ auth: 'none' })
    const consumer = startFollowConsumer({ url: broker.url })
    try {
      // Nothing to read yet: the consumer's first request is a long-poll held open by the broker.
      const until0 = Date.now() + 20_000
      while (establishedTo(broker.port) === 0 && Date.now() < until0) await sleep(50)
      expect(establishedTo(broker.port)).toBeGreaterThan(0)
      await sleep(200)
      await broker.kill()
      await sleep(500)
      expect(consumer.exitCode(), `stderr: ${consumer.stderr()}`).toBeUndefined()
      broker = await broker.restart()
      const now = Date.now()
      const ack = await postBatch(broker.url, makeBatch('gw-1', [message(1, now - 10), message(2, now - 5)]))
      expect(ack.status).toBe(200)
      await consumer.waitFor(2, 20_000)
      expect(consumer.lines.map((l) => l.seq)).toEqual([1, 2])
      expect(consumer.stderr()).toContain('retrying')
    } finally {
      await consumer.kill()
    }
  })

  it('still exits 69 at once when the broker was never reachable', async () => {
    const r = await runCli(['consume', '#', '--follow'], { env: { RMQ_BROKER_URL: 'http://127.0.0.1:9' } })
    expect(r.code).toBe(69)
    expect(r.stderr).toContain('cannot reach the broker')
  })
})
