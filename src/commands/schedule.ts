import { Flags } from '@oclif/core'
import { BaseCommand } from '../cli/base-command.js'
import { UsageError } from '../shared/errors.js'
import type { SchedulePlan } from '../core/schedule.js'
import type { MqttRunMode } from '../core/schedule-mqtt.js'
import { parseDurationFlag } from '../cli/duration-flag.js'

export default class Schedule extends BaseCommand<typeof Schedule> {
  static override summary = 'Print crontab lines or systemd units that run `rmq sync` and `rmq cleanup`.'
  static override description =
    'Uses the current configuration: absolute paths of node and rmq, this working directory, the config file ' +
    'in effect, sync.interval and cleanup.interval. crontab runs at most once a minute (a shorter ' +
    'sync.interval is rounded up, and said so); systemd timers keep second intervals, catch up after a power ' +
    'cut (Persistent=true) and spread a fleet (RandomizedDelaySec). No flock is needed: overlapping runs of ' +
    '`rmq sync` or `rmq cleanup` exit 0 at once because each takes a lease in the outbox. ' +
    'Without --cron or --systemd both are printed. Deployment guide: docs/operations.md.'
  static override examples = [
    '<%= config.bin %> schedule',
    '<%= config.bin %> schedule --cron | crontab -',
    'sudo <%= config.bin %> schedule --systemd --write /etc/systemd/system && sudo systemctl daemon-reload && ' +
      'sudo systemctl enable --now rmq-sync.timer rmq-cleanup.timer',
    '<%= config.bin %> schedule --mqtt-ingest resident --systemd',
    '<%= config.bin %> schedule --mqtt-ingest timer --cron',
    '<%= config.bin %> schedule --json',
  ]
  static override flags = {
    cron: Flags.boolean({ description: 'Print only the crontab lines.' }),
    systemd: Flags.boolean({ description: 'Print only the systemd units.' }),
    write: Flags.string({
      description:
        'Write the systemd unit files into DIR (e.g. /etc/systemd/system) instead of printing them.',
      helpValue: 'DIR',
    }),
    user: Flags.string({
      description: 'systemd User= to run as (default: the current user; none for root).',
    }),
    name: Flags.string({ description: 'Prefix of unit names and log files.', default: 'rmq' }),
    'mqtt-ingest': Flags.string({
      description:
        'Also run `rmq mqtt ingest`: resident (a service with Restart=always) or timer (every sync.interval with --until-idle, persistent session). docs/mqtt.md',
      options: ['resident', 'timer'],
    }),
    'mqtt-forward': Flags.string({
      description: 'Also run `rmq mqtt forward` (central side): resident or timer.',
      options: ['resident', 'timer'],
    }),
    'until-idle': Flags.string({
      description: 'How long a timer run of the MQTT jobs waits for new messages before it exits.',
      default: '30s',
      helpValue: 'DURATION',
    }),
  }

  async run(): Promise<SchedulePlan & { written: string[] }> {
    const f = this.flags
    if (f.cron && f.systemd)
      throw new UsageError('--cron and --systemd exclude each other', {
        suggestion: 'give one of them, or neither to print both',
      })
    const loaded = await this.loadConfig()
    const { buildSchedule, writeUnits } = await import('../core/schedule.js')
    const plan = buildSchedule({
      config: loaded.config,
      cwd: loaded.cwd,
      configFile: loaded.filePath,
      user: f.user,
      name: f.name,
      mqtt: {
        ingest: f['mqtt-ingest'] as MqttRunMode | undefined,
        forward: f['mqtt-forward'] as MqttRunMode | undefined,
        idleMs: parseDurationFlag(f['until-idle'], '--until-idle'),
      },
    })
    const written = f.write ? writeUnits(plan, f.write) : []
    const showCron = !f.systemd
    const showSystemd = !f.cron
    const notes = plan.notes.map((n) => `# note: ${n}`)
    const out: string[] = []
    if (showCron) out.push(plan.crontab, ...notes)
    if (showSystemd && written.length > 0) {
      if (showCron) out.push('')
      out.push(
        `# wrote ${written.join(', ')}`,
        '# then: systemctl daemon-reload && systemctl enable --now ' +
          plan.units
            .filter((u) => u.name.endsWith('.timer') || /^\[Service\][^[]*Restart=always/m.test(u.text))
            .map((u) => u.name)
            .join(' '),
      )
      if (!showCron) out.push(...notes)
    } else if (showSystemd) {
      for (const u of plan.units) {
        if (out.length > 0) out.push('')
        out.push(`# ---- ${u.name} (e.g. /etc/systemd/system/${u.name}) ----`, u.text.trimEnd())
      }
      if (!showCron) out.push('', ...notes)
    }
    this.say(out.join('\n'))
    return { ...plan, written }
  }
}
