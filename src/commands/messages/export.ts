import { once } from 'node:events'
import { Args } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import { messageFilter, messageFilterFlags } from '../../cli/message-filter-flags.js'
import type { ExportResult } from '../../core/messages-transfer.js'
import { ConfigError } from '../../shared/errors.js'
import { openPrivateFileStream, type PrivateFileStream } from '../../shared/private-files.js'

export default class MessagesExport extends BaseCommand<typeof MessagesExport> {
  static override summary = 'Write stored messages to an NDJSON file (or stdout), for `rmq messages import`.'
  static override description =
    'One JSON object per message and line, by seq: seq, topic, payload (UTF-8 text, or base64 with ' +
    '"encoding":"base64" when binary), contentType, headers, ts (and tsIso), expiresAt, priority, status. ' +
    'The same filters as `rmq messages`; all statuses by default (use --status pending to move a backlog). ' +
    'Opens the outbox read-only. A FILE is written as FILE.partial (mode 600) and renamed when complete. ' +
    'docs/operations.md "Moving a backlog off a dying device".'
  static override examples = [
    '<%= config.bin %> messages export --status pending backlog.ndjson',
    '<%= config.bin %> messages export --topic "plant/#" --since 2026-12-03T00:00:00Z - | gzip > plant.ndjson.gz',
  ]
  static override args = {
    file: Args.string({ description: 'Where to write; - for stdout.', required: true }),
  }
  static override flags = messageFilterFlags({ default: 'all', description: 'Which messages.' })

  async run(): Promise<ExportResult & { file: string }> {
    const { exportMessages, exportJsonProblem } = await import('../../core/messages-transfer.js')
    const { Progress } = await import('../../cli/progress.js')
    const file = this.args.file
    const problem = exportJsonProblem(file, this.jsonEnabled())
    if (problem) throw problem
    const loaded = await this.loadConfig()
    let sink: PrivateFileStream | undefined
    if (file !== '-')
      try {
        // Payloads leave the outbox here: owner-only, like the outbox.
        sink = await openPrivateFileStream(file)
      } catch (err) {
        throw new ConfigError(`cannot write ${file}.partial: ${(err as Error).message}`, {
          suggestion: 'give a FILE in a writable directory, or - for stdout',
        })
      }
    const out: NodeJS.WritableStream = sink?.stream ?? process.stdout
    const progress = new Progress('exporting')
    let r: ExportResult
    try {
      r = await exportMessages(
        loaded,
        messageFilter(this.flags),
        async (line) => {
          if (!out.write(line)) await once(out, 'drain')
        },
        (n) => progress.update(`${n} messages`),
      )
      await sink?.commit()
    } catch (err) {
      sink?.abort()
      throw err
    } finally {
      progress.done()
    }
    this.note(
      `exported ${r.exported} message(s)` +
        (r.firstSeq !== null ? ` (seqs ${r.firstSeq}..${r.lastSeq})` : '') +
        ` to ${file === '-' ? 'stdout' : file}`,
    )
    return { ...r, file }
  }
}
