import { Flags } from '@oclif/core'
import { BaseCommand } from '../cli/base-command.js'
import type { DoctorReport } from '../core/doctor.js'
import type { RepairReport } from '../core/repair.js'

export default class Doctor extends BaseCommand<typeof Doctor> {
  static override summary = 'Check this node: outbox, disk, node id, clock, broker, token, sync and schedule.'
  static override description =
    'One report of every check with ok, warning or error and the fix. Opens the outbox read-only. ' +
    'Exit codes: 0 every check passed (warnings allowed, unless --strict: then 1); on an error, the code of ' +
    'the first one: 70 the outbox is damaged (run `rmq doctor --repair`), 74 it cannot be read, 69 the broker ' +
    'cannot be reached, 78 a configuration problem (token refused, node id). ' +
    '--repair copies every readable message of a damaged outbox (seq, status, times, the epoch and node id) into ' +
    'a fresh file and moves the damaged one aside as outbox.db.corrupt-<time>; it reports what was recovered and ' +
    'the seq ranges lost. docs/operations.md "Checking a node", "Repairing a damaged outbox".'
  static override examples = [
    '<%= config.bin %> doctor',
    '<%= config.bin %> doctor --full --json',
    '<%= config.bin %> doctor --offline --strict',
    '<%= config.bin %> doctor --repair',
  ]
  static override flags = {
    full: Flags.boolean({ description: 'A full integrity check (slower on a large outbox).' }),
    offline: Flags.boolean({ description: 'Skip the broker and token checks.' }),
    strict: Flags.boolean({ description: 'Exit 1 when any check gives a warning.' }),
    repair: Flags.boolean({
      description: 'Repair a damaged outbox: copy what is readable into a fresh file, keep the damaged one.',
      exclusive: ['full', 'offline', 'strict'],
    }),
  }

  async run(): Promise<DoctorReport | RepairReport> {
    if (this.flags.repair) return this.repair()
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

  private async repair(): Promise<RepairReport> {
    await import('../plugins/salvagers.js')
    const { repairOutbox, formatRanges } = await import('../core/repair.js')
    const { Progress } = await import('../cli/progress.js')
    const loaded = await this.loadConfig()
    const progress = new Progress('repairing')
    let r: RepairReport
    try {
      r = await repairOutbox(loaded, {
        onProgress: (done, total) => progress.update(`${done}/${total} seqs`),
      })
    } finally {
      progress.done()
    }
    const { recovered: rec } = r
    this.say(
      `recovered ${rec.messages} message(s) (${rec.pending} pending, ${rec.sent} sent, ${rec.expired} expired) ` +
        `of seqs ${r.firstSeq}-${r.lastSeq} into ${r.file}; node ${r.nodeId ?? '(none recorded)'}, epoch ${r.epoch} kept`,
    )
    this.say(
      r.lostSeqs === 0
        ? 'lost: nothing'
        : `lost: seqs ${formatRanges(r.lost)} (${r.lostSeqs} seq(s), ${r.lostPending} of them known pending; ` +
            'sent or cleaned-up ones among them were already delivered)',
    )
    if (r.statusUnknown > 0)
      this.say(
        `${r.statusUnknown} message(s) whose status was unreadable are kept pending (the broker drops a copy it has)`,
      )
    this.say(`the damaged file is kept as ${r.movedTo}; run \`rmq sync\` to send what is pending`)
    return r
  }
}
