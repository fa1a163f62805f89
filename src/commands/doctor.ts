import { Flags } from '@oclif/core'
import { BaseCommand } from '../cli/base-command.js'
import type { DoctorReport } from '../core/doctor.js'

export default class Doctor extends BaseCommand<typeof Doctor> {
  static override summary = 'Check this node: outbox, disk, node id, clock, broker, token, sync and schedule.'
  static override description =
    'One report of every check with ok, warning or error and the fix. Opens the outbox read-only. ' +
    'Exit codes: 0 every check passed (warnings allowed, unless --strict: then 1); on an error, the code of ' +
    'the first one: 74 the outbox is damaged or cannot be read, 69 the broker cannot be reached, 78 a ' +
    'configuration problem (token refused, node id). docs/operations.md "Checking a node".'
  static override examples = [
    '<%= config.bin %> doctor',
    '<%= config.bin %> doctor --full --json',
    '<%= config.bin %> doctor --offline --strict',
  ]
  static override flags = {
    full: Flags.boolean({ description: 'A full integrity check (slower on a large outbox).' }),
    offline: Flags.boolean({ description: 'Skip the broker and token checks.' }),
    strict: Flags.boolean({ description: 'Exit 1 when any check gives a warning.' }),
  }

  async run(): Promise<DoctorReport> {
    const { runDoctor } = await import('../core/doctor.js')
    const { renderTable } = await import('../cli/render.js')
    const loaded = await this.loadConfig()
    const report = await runDoctor(loaded, { full: this.flags.full, offline: this.flags.offline })
    this.say(
      renderTable(
        ['check', 'state', 'detail', 'fix'],
        report.checks.map((c) => [c.name, c.state, c.detail, c.fix ?? '']),
      ),
    )
    this.say(`${report.checks.length} checks: ${report.errors} error(s), ${report.warnings} warning(s)`)
    const code = report.exitCode || (this.flags.strict && report.warnings > 0 ? 1 : 0)
    if (code !== 0) process.exitCode = code
    return report
  }
}
