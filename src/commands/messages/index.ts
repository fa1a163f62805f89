import { Flags } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import { messageFilter, messageFilterFlags } from '../../cli/message-filter-flags.js'

export default class Messages extends BaseCommand<typeof Messages> {
  static override summary = 'List what is stored in the outbox: pending, sent or expired messages.'
  static override description =
    'Newest first. Opens the outbox read-only: a listing never blocks or slows a running publish or sync. ' +
    'The same data is in the outbox file as the SQL view `outbox` (docs/storage.md "Looking inside"). ' +
    '--json prints one JSON object per line (NDJSON) with the whole payload (text, or hex when binary). ' +
    'Show one message with `rmq messages show SEQ`; move messages to another node with ' +
    '`rmq messages export FILE` and `rmq messages import FILE`.'
  static override examples = [
    '<%= config.bin %> messages',
    '<%= config.bin %> messages --status pending --topic "plant/+/temp" --limit 50',
    '<%= config.bin %> messages --since 2026-12-03T08:00:00Z --until 2026-12-03T09:00:00Z --order asc',
    '<%= config.bin %> messages --status all --json > outbox.ndjson',
  ]
  static override enableJsonFlag = false
  static override flags = {
    json: Flags.boolean({ description: 'One JSON object per message and line (NDJSON).' }),
    ...messageFilterFlags({ default: 'all', description: 'Which messages.' }),
    limit: Flags.integer({ description: 'At most this many (1..100000).', default: 20 }),
    order: Flags.string({
      description: 'desc: newest first; asc: oldest first.',
      options: ['desc', 'asc'],
      default: 'desc',
    }),
  }

  async run(): Promise<void> {
    const { listMessages, messageRecord, payloadText } = await import('../../core/messages.js')
    const loaded = await this.loadConfig()
    const messages = await listMessages(loaded, {
      ...messageFilter(this.flags),
      limit: this.flags.limit,
      order: this.flags.order as 'asc' | 'desc',
    })
    if (this.flags.json) {
      for (const m of messages)
        process.stdout.write(JSON.stringify(messageRecord(m, payloadText(m.payload))) + '\n')
      return
    }
    if (messages.length === 0) {
      this.log(`no ${this.flags.status === 'all' ? '' : this.flags.status + ' '}messages match`)
      return
    }
    const { renderTable } = await import('../../cli/render.js')
    this.log(
      renderTable(
        ['seq', 'status', 'ts', 'topic', 'prio', 'size', 'payload'],
        messages.map((m) => [
          m.seq,
          m.status,
          new Date(m.ts).toISOString(),
          m.topic,
          m.priority,
          m.size,
          payloadText(m.payload, 40).text.replace(/\r?\n/g, '\\n'),
        ]),
      ),
    )
  }
}
