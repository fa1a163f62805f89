import { afterEach, describe, expect, it } from 'vitest'
import { makeBatch, message, postBatch, startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { parseJson, runCli, spawnCli } from '../helpers/cli.js'

describe('rmq consume into a pipe whose reader goes away (`rmq consume … | head`)', () => {
  let broker: BrokerProcess | undefined
  afterEach(async () => broker?.cleanup())

  it('stops quietly with exit 0, and a group does not move past what was not printed', async () => {
    broker = await startBrokerProcess({ auth: 'none' })
    const now = Date.now()
    const ack = await postBatch(
      broker.url,
      makeBatch(
        'gw-1',
        [1, 2, 3].map((s) => message(s, now - 100 + s)),
      ),
    )
    expect(ack.status).toBe(200)
    const env = { RMQ_BROKER_URL: broker.url }

    // The read end of stdout is closed before the consumer prints, so its first write gets EPIPE.
    const child = spawnCli(['consume', '#', '--group', 'etl'], { env })
    child.stdout!.destroy()
    let stderr = ''
    child.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d))
    child.stdin!.end()
    const code = await new Promise((resolve) => child.once('close', resolve))
    expect(stderr).toBe('')
    expect(code).toBe(0)

    // Nothing reached a reader, so the group starts from the first message again.
    const again = await runCli(['consume', '#', '--group', 'etl', '--json'], { env })
    expect(again.code).toBe(0)
    const seqs = again.stdout
      .trim()
      .split('\n')
      .map((l) => parseJson<{ seq: number }>(l).seq)
    expect(seqs).toEqual([1, 2, 3])
  })
})
