import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../cli/base-command.js'
import { MESSAGE_ARG, PUBLISH_FLAGS, TOPIC_ARG, runPublishCli } from '../cli/publish-fast.js'

const flags = Object.fromEntries(
  PUBLISH_FLAGS.map((f) => [
    f.name,
    f.type === 'boolean'
      ? Flags.boolean({ description: f.description, ...(f.char ? { char: f.char as 'f' } : {}) })
      : Flags.string({
          description: f.description,
          helpValue: f.helpValue,
          ...(f.char ? { char: f.char as 'f' } : {}),
        }),
  ]),
)

/**
 * Help text and manifest entry for `rmq publish`. bin/run.js normally runs
 * the lean path (src/cli/publish-fast.ts) directly; this command delegates to
 * it too, so flags, output and exit codes are the same either way.
 */
export default class Publish extends BaseCommand<typeof Publish> {
  static override summary =
    'Publish a message: store it durably in the local outbox (edge mode) or send it to the broker (direct mode).'
  static override description =
    'The payload comes from MESSAGE, from a file (-f FILE, the whole file is one message), from stdin (-f -), ' +
    'or, with --lines, one message per line (bulk NDJSON, committed in large transactions). Prints ' +
    '`stored <id>` once the message is on disk, or `sent <id>` once the broker acknowledged it (mode=direct, ' +
    'or forward=immediate with the broker reachable; a summary for --lines); ids are node:epoch:seq. ' +
    'Exit codes: 2 a mistake on the command line (unknown flag, missing TOPIC or MESSAGE), ' +
    '65 invalid topic/payload/line/flag value (nothing from the bad record is stored), ' +
    '69 broker unavailable (mode=direct), 73 outbox or disk full, 78 configuration error.'
  static override examples = [
    '<%= config.bin %> publish plant/line1/temp \'{"c":21.5}\' --content-type application/json',
    '<%= config.bin %> publish sensors/t1 -f data.json',
    'sensor-read | <%= config.bin %> publish sensors/t1 -f - --ttl 10m --priority 7',
    '<%= config.bin %> publish sensors/bulk --lines -f readings.ndjson',
    '<%= config.bin %> publish alarms/door open --timestamp 2025-11-26T10:00:00Z --json',
  ]
  static override args = {
    topic: Args.string({ description: TOPIC_ARG.description, required: true }),
    message: Args.string({ description: MESSAGE_ARG.description }),
  }
  static override flags = flags

  /**
   * A mistake on the command line is left to runPublishCli, which reports it
   * exactly as the fast path does (the same words, exit code and --json document).
   */
  public override async init(): Promise<void> {
    try {
      await super.init()
    } catch (err) {
      if ((err as { oclif?: { exit?: number } })?.oclif?.exit !== 2) throw err
    }
  }

  async run(): Promise<void> {
    process.exitCode = await runPublishCli(this.argv)
  }
}
