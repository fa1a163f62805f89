import fs from 'node:fs'
import { Args } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import { messageFilter, messageFilterFlags } from '../../cli/message-filter-flags.js'
import type { ImportResult } from '../../core/messages-transfer.js'
import { ValidationError } from '../../shared/errors.js'

export default class MessagesImport extends BaseCommand<typeof MessagesImport> {
  static override summary = 'Publish the messages of an export (`rmq messages export`) into this outbox.'
  static override description =
    'Each line is published like `rmq publish` does (same checks, mode and forward settings) with its ' +
    'original topic, ts, expiry, priority, content type and headers; it becomes a new message of this node. ' +
    'Only pending records by default: the broker already has the sent ones (--status all imports every one). ' +
    'A FILE is checked whole first: a bad line fails the import (exit 65, naming the line) and nothing is ' +
    'stored. From stdin (-) each chunk of 1,000 lines is one transaction and a bad line stops the import ' +
    'with what was imported before it. docs/operations.md "Moving a backlog off a dying device".'
  static override examples = [
    '<%= config.bin %> messages import backlog.ndjson',
    'ssh old-gw rmq messages export --status pending - | <%= config.bin %> messages import -',
  ]
  static override args = {
    file: Args.string({ description: 'An export; - for stdin.', required: true }),
  }
  static override flags = messageFilterFlags({
    default: 'pending',
    description: 'Which exported records (their status field).',
  })

  async run(): Promise<ImportResult> {
    const { importMessages } = await import('../../core/messages-transfer.js')
    const { Progress } = await import('../../cli/progress.js')
    const file = this.args.file
    if (file !== '-')
      try {
        fs.accessSync(file, fs.constants.R_OK)
      } catch (err) {
        // Exit 65 like `rmq publish -f` with a file it cannot read.
        throw new ValidationError(`cannot read ${file}: ${(err as Error).message}`, {
          suggestion: 'give the path of a file written by `rmq messages export`, or - for stdin',
        })
      }
    const loaded = await this.loadConfig()
    const progress = new Progress('importing')
    let r: ImportResult
    try {
      r = await importMessages(
        loaded,
        () => (file === '-' ? process.stdin : fs.createReadStream(file)),
        file !== '-',
        {
          ...messageFilter(this.flags),
          onProgress: (lines, imported) => progress.update(`${lines} lines, ${imported} messages`),
        },
      )
    } finally {
      progress.done()
    }
    this.say(
      `imported ${r.imported} message(s) from ${r.lines} line(s)` +
        (r.firstSeq !== null ? ` as seqs ${r.firstSeq}..${r.lastSeq} (${r.status})` : '') +
        (r.skipped ? `; ${r.skipped} left out by the filters` : ''),
    )
    return r
  }
}
