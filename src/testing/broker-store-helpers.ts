/** Batches and messages the BrokerStore conformance suites build. */
import type { BatchBody, WireMessage } from '../protocol/batch.js'
import type { BrokerStore } from '../broker/store/types.js'

export interface StoreHandle {
  store: BrokerStore
  /** Open a second handle on the same data (another broker process would). */
  reopen?: () => Promise<BrokerStore>
  cleanup: () => Promise<void> | void
}

const T0 = 1_764_000_000_000

export function wireMessage(
  seq: number,
  ts: number,
  topic = 'plant/line1/temp',
  payload?: string,
): WireMessage {
  return {
    seq,
    topic,
    ts,
    payload: payload ?? `{"seq":${seq}}`,
    enc: 'utf8',
    expiresAt: null,
    priority: 4,
    contentType: 'application/json',
  }
}

export function batchOf(
  node: string,
  messages: WireMessage[],
  opts: Partial<Omit<BatchBody, 'messages' | 'node'>> = {},
): BatchBody {
  return {
    node,
    epoch: opts.epoch ?? `epoch-${node}`,
    batch: opts.batch ?? `b-${node}-${messages[0]?.seq ?? 'hb'}`,
    clock: opts.clock ?? T0,
    backlog: opts.backlog ?? { pending: 0, bytes: 0, oldestTs: null },
    ...(opts.direct === undefined ? {} : { direct: opts.direct }),
    ...(opts.stats === undefined ? {} : { stats: opts.stats }),
    messages,
  }
}
