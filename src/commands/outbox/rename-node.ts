import { Args, Flags } from '@oclif/core'
import { BaseCommand } from '../../cli/base-command.js'
import type { RenameResult } from '../../core/rename-node.js'

export default class OutboxRenameNode extends BaseCommand<typeof OutboxRenameNode> {
  static override summary = 'Make this outbox store for another node id, under a new epoch.'
  static override description =
    'An outbox records the node id it stores for; `rmq sync`, `drain` and the Producer API refuse to send ' +
    'it under another one (exit 78), because a batch that reached the broker under the old id would be ' +
    'delivered twice. When a gateway really changes its identity, rename the outbox: pending messages are ' +
    'sent as NODE from then on, under a new epoch. Refused while a sync runs, and when the last sync attempt ' +
    'failed (a batch may be at the broker unacknowledged) unless --force. Then set nodeId to NODE. ' +
    'docs/operations.md "Renaming a node".'
  static override examples = [
    '<%= config.bin %> outbox rename-node gw-b',
    '<%= config.bin %> outbox rename-node gw-b --force',
  ]
  static override args = {
    node: Args.string({ description: 'The new node id.', required: true }),
  }
  static override flags = {
    force: Flags.boolean({
      description: 'Rename even after a failed sync attempt (its messages may arrive twice).',
    }),
  }

  async run(): Promise<RenameResult> {
    const { nodeIdProblem } = await import('../../protocol/node-id.js')
    const { UsageError } = await import('../../shared/errors.js')
    const problem = nodeIdProblem(this.args.node)
    if (problem) throw new UsageError(`NODE ${JSON.stringify(this.args.node)}: ${problem}`)
    const { openOutbox } = await import('../../core/outbox.js')
    const { renameNode } = await import('../../core/rename-node.js')
    const loaded = await this.loadConfig()
    const driver = await openOutbox(loaded.config, loaded.cwd)
    try {
      const r = await renameNode(driver, this.args.node, { force: this.flags.force })
      this.say(
        r.unchanged
          ? `the outbox already stores for ${r.after}; nothing changed`
          : `the outbox now stores for ${r.after} (was ${r.before ?? 'unrecorded'}), new epoch ${r.epoch}; ` +
              `${r.pending} pending message(s) will be sent as ${r.after}`,
      )
      if (loaded.config.nodeId !== r.after)
        this.say(`set nodeId to ${r.after} (now ${loaded.config.nodeId}): rmq config set nodeId ${r.after}`)
      return r
    } finally {
      await driver.close()
    }
  }
}
