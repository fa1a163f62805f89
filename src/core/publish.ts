/**
 * What `rmq publish` does once its arguments are parsed: check the message
 * fields, then store (or send) one payload or every line of an input through
 * the same rules as the library (src/core/producer.ts: mode, forward). The
 * CLI (src/cli/publish-fast.ts) parses argv, reads the input and words the
 * outcome; this module loads no network code in edge mode with
 * forward=deferred, the case `rmq publish` is timed for.
 */
import type { LoadedConfig } from './config/load.js'
import {
  buildTemplate,
  openOutbox,
  publishLines,
  publishOptionsFrom,
  type LinesCommit,
  type LinesResult,
  type PublishRecord,
} from './outbox.js'
import { openProducer, type Producer, type SendReceipt, type SendStatus } from './producer.js'
import type { NewMessage } from './storage/driver.js'

/** The message fields of `rmq publish` (its flags), as given: validated by buildTemplate. */
export type PublishFields = Omit<PublishRecord, 'payload'>

/**
 * The payload: one message read by `read` (given message.maxBytes, so that
 * it can stop reading one byte past it), or, with `lines`, one message per
 * line of what `open` returns. Neither is called before the fields are valid.
 */
export type PublishInput =
  | { lines?: false; read: (maxBytes: number) => Promise<Uint8Array> }
  | { lines: true; open: () => AsyncIterable<Uint8Array> | Iterable<Uint8Array> }

export interface PublishHooks {
  /** lines: every 1,000 lines read. */
  onProgress?: (linesRead: number, stored: number) => void
  /** lines: each commit; `status` is what its messages are (stored, or sent by a producer). */
  onCommit?: (c: LinesCommit, at: { status: SendStatus; node: string; epoch: string }) => void
}

export type PublishOutcome =
  | { kind: 'message'; receipt: Omit<SendReceipt, 'dropped'>; dropped: number }
  | {
      kind: 'lines'
      result: LinesResult
      /** `stored`, or `sent` when a producer (mode=direct, forward=immediate) had every line acknowledged. */
      status: SendStatus
      /** Why lines of a producer are `stored` rather than `sent`. */
      reason?: string
      /** True when the lines went through a Producer (mode=direct or forward=immediate). */
      viaProducer: boolean
    }

/** Publish `input` with `fields` under `loaded`; throws the rmq error of the first problem. */
export async function publishInput(
  loaded: LoadedConfig,
  fields: PublishFields,
  input: PublishInput,
  hooks: PublishHooks = {},
): Promise<PublishOutcome> {
  const opts = publishOptionsFrom(loaded.config)
  buildTemplate(fields, opts) // fail on bad fields before reading input or touching the outbox
  if (input.lines) return publishEachLine(loaded, fields, input.open(), hooks)
  const payload = await input.read(opts.maxBytes)
  // The Producer decides `sent` or `stored` by the same rules as the library (mode, forward).
  const producer = await openProducer(loaded)
  try {
    const { dropped = 0, ...receipt } = await producer.send(fields.topic, payload, {
      timestamp: fields.ts,
      ttl: fields.ttl,
      priority: fields.priority,
      contentType: fields.contentType,
    })
    return { kind: 'message', receipt, dropped }
  } finally {
    await producer.close()
  }
}

async function publishEachLine(
  loaded: LoadedConfig,
  fields: PublishFields,
  input: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  hooks: PublishHooks,
): Promise<PublishOutcome> {
  const opts = publishOptionsFrom(loaded.config)
  const { mode, forward } = loaded.config
  // Edge + deferred (the common case) appends straight to the outbox; otherwise
  // each chunk goes through the Producer, which sends or forwards it.
  const producer = mode === 'direct' || forward === 'immediate' ? await openProducer(loaded) : undefined
  const sink = producer ? producerSink(producer) : undefined
  const target = sink ?? (await openOutbox(loaded.config, loaded.cwd))
  const status = (): SendStatus => sink?.status() ?? 'stored'
  try {
    const result = await publishLines(target, input, fields, {
      ...opts,
      onProgress: hooks.onProgress,
      onCommit: hooks.onCommit
        ? (c) => hooks.onCommit!(c, { status: status(), node: opts.nodeId, epoch: target.epoch })
        : undefined,
    })
    const reason = sink?.reason()
    return {
      kind: 'lines',
      result,
      status: status(),
      viaProducer: Boolean(producer),
      ...(reason ? { reason } : {}),
    }
  } finally {
    await (producer ?? (target as { close(): Promise<void> })).close()
  }
}

/** publishLines' target backed by a Producer: each chunk is one sendMany; remembers the weakest status. */
function producerSink(producer: Producer) {
  let status: SendStatus = 'sent'
  let reason: string | undefined
  return {
    epoch: producer.epoch,
    status: () => status,
    reason: () => reason,
    async append(messages: NewMessage[]) {
      const receipts = await producer.sendMany(
        messages.map((m) => ({
          topic: m.topic,
          payload: m.payload,
          timestamp: m.ts,
          // Already resolved by the template: null means never expire (not the default TTL).
          ...(m.expiresAt == null ? { ttl: 0 } : { expiresAt: m.expiresAt }),
          priority: m.priority,
          contentType: m.contentType,
          headers: m.headers,
        })),
      )
      for (const r of receipts)
        if (r.status === 'stored') {
          status = 'stored'
          reason ??= r.reason
        }
      return { seqs: receipts.map((r) => r.seq), dropped: receipts[0]?.dropped ?? 0 }
    },
  }
}
