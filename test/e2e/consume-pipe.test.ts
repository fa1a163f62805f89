import { afterEach, describe, expect, it } from 'vitest'
import { makeBatch, message, postBatch, startBrokerProcess, type BrokerProcess } from '../helpers/broker.js'
import { parseJson, runCli, runCliReaderGone } from '../helpers/cli.js'

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

    const r = await runCliReaderGone(['consume', '#', '--group', 'etl'], { env })
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)

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
