import { Args } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import type { MessageRecord } from '../../core/messages.js'

export default class MessagesShow extends BaseCommand<typeof MessagesShow> {
  static override summary = 'Show one stored message: status, times, headers and the payload (text or hex).'
  static override description =
    'Opens the outbox read-only. Exit 65 when no message with that seq is stored (cleanup may have removed it).'
  static override examples = [
    '<%= config.bin %> messages show 42',
    '<%= config.bin %> messages show 42 --json',
  ]
  static override args = {
    seq: Args.integer({ description: 'The message seq (from `rmq messages`).', required: true }),
  }

  async run(): Promise<MessageRecord> {
    const { showMessage, messageRecord, payloadText } = await import('../../core/messages.js')
    const loaded = await this.loadConfig()
    const m = await showMessage(loaded, this.args.seq)
    const out = messageRecord(m, payloadText(m.payload))
    const { renderPairs } = await import('../../cli/render.js')
    this.say(
      renderPairs([
        ['seq', m.seq],
        ['status', m.status + (m.sentAt !== null ? ` (${out.sentAtIso})` : '')],
        ['topic', m.topic],
        ['ts', out.tsIso!],
        ['arrived', new Date(m.arrivedAt).toISOString()],
        ['expires', m.expiresAt === null ? 'never' : new Date(m.expiresAt).toISOString()],
        ['priority', m.priority],
        ['content type', m.contentType ?? '-'],
        ['attempts', m.attempts],
        ['size', m.size],
        ...Object.entries(m.headers ?? {}).map(([k, v]): [string, string] => [`header ${k}`, v]),
        [`payload (${out.enc})`, out.payload],
      ]),
    )
    return out
  }
}
