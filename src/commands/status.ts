import { Flags } from '@oclif/core'
import { BaseCommand } from '../cli/base-command.js'
import type { BrokerFleetStatus, EdgeStatus } from '../core/status.js'
import { formatAge, formatBytes, formatDuration } from '../shared/units.js'

export default class Status extends BaseCommand<typeof Status> {
  static override summary = "Show this node's outbox and sync health, or (--broker) the whole fleet."
  static override description =
    'Without flags: node identity, broker URL, pending messages and bytes, the oldest pending age, ' +
    'sent/expired/dropped totals, the last sync attempt and success, success rate, the backoff in force and ' +
    'the next attempt, outbox size against storage.maxBytes, and the config file in effect. Reads the local ' +
    'outbox only (works offline), and warns about a config, token, outbox or broker database file that other ' +
    'users can read. With --broker: every node as the broker at brokerUrl sees it (health ok, ' +
    'behind, holding-back, stale, never-seen or never-synced; last sync; success rate; backlog; counters) and the active alerts; exits 69 when the ' +
    'broker cannot be reached. Health and alert rules: docs/monitoring.md.'
  static override examples = [
    '<%= config.bin %> status',
    '<%= config.bin %> status --json',
    '<%= config.bin %> status --broker',
    '<%= config.bin %> status --broker --json | jq \'.nodes[] | select(.health != "ok")\'',
  ]
  static override flags = {
    broker: Flags.boolean({
      description: 'Show the fleet from the broker (GET /v1/nodes) instead of this node.',
    }),
  }

  async run(): Promise<EdgeStatus | BrokerFleetStatus> {
    const loaded = await this.loadConfig()
    const { brokerFleetStatus, edgeStatus } = await import('../core/status.js')
    const { renderPairs, renderTable } = await import('../cli/render.js')
    if (this.flags.broker) {
      const fleet = await brokerFleetStatus(loaded)
      this.say(renderFleet(fleet, renderTable))
      return fleet
    }
    const s = await edgeStatus(loaded)
    this.say(renderPairs(edgePairs(s)))
    for (const e of s.exposed)
      this.note(
        `warning: ${e.file} is readable by other users (${e.mode}) and holds ${e.holds}; fix: chmod 600 ${e.file}`,
      )
    return s
  }
}

const int = (n: number) => n.toLocaleString('en-US')
const pct = (x: number) => `${(x * 100).toFixed(x >= 0.995 || x === 0 ? 0 : 1)}%`
const ago = (t: number | null, now: number) =>
  t === null ? 'never' : `${formatAge(now - t)} ago (${new Date(t).toISOString()})`

function edgePairs(s: EdgeStatus): Array<[string, string]> {
  const y = s.sync
  let backoff = 'none'
  if (y.backoff)
    backoff =
      `${y.backoff.failures} failure(s) in a row since ${new Date(y.backoff.since).toISOString()}, ` +
      `delay ${formatDuration(y.backoff.delayMs)}`
  const next =
    y.nextAttemptAt === null
      ? y.backoff
        ? 'now (the backoff delay is over)'
        : 'now (no backoff in force)'
      : `in ${formatAge(y.nextAttemptAt - s.now)} (${new Date(y.nextAttemptAt).toISOString()}; sync --force tries now)`
  const failed =
    y.lastErrorAt !== null &&
    y.lastAttemptAt !== null &&
    y.lastErrorAt >= y.lastAttemptAt &&
    (y.lastSuccessAt === null || y.lastErrorAt > y.lastSuccessAt)
  const limit =
    s.store.maxMessages > 0 ? `, ${int(s.store.messages)} of ${int(s.store.maxMessages)} messages` : ''
  return [
    ['node', s.node],
    ['broker', s.brokerUrl],
    ['mode', s.mode],
    ['config file', s.configFile ?? '(none: defaults, .env and environment)'],
    ...(s.dotenvFile ? [['.env', s.dotenvFile] as [string, string]] : []),
    [
      'outbox',
      `${s.outbox.driver}${s.outbox.path ? ` ${s.outbox.path}` : ''}` +
        (s.outbox.exists ? '' : ' (not created yet: nothing published)'),
    ],
    ...(s.outbox.epoch ? [['epoch', s.outbox.epoch] as [string, string]] : []),
    ['pending', `${int(s.pending.messages)} message(s), ${formatBytes(s.pending.bytes)}`],
    [
      'oldest pending',
      s.pending.oldestAge === null
        ? '-'
        : `${formatAge(s.pending.oldestAge)} old (${new Date(s.pending.oldestTs!).toISOString()})`,
    ],
    ['sent', int(s.totals.sent)],
    [
      'expired',
      int(s.totals.expired) +
        (s.totals.expiredPending > 0
          ? ` (${int(s.totals.expiredPending)} past the TTL, not yet removed by cleanup)`
          : ''),
    ],
    ['dropped', int(s.totals.dropped)],
    ...(s.mqttIngest.blocked
      ? [
          [
            'mqtt ingest',
            `blocked since ${ago(s.mqttIngest.blocked.since, s.now)}: the outbox is full; nothing is ` +
              `acknowledged, the MQTT broker keeps the messages (free room: rmq sync, rmq cleanup)`,
          ] as [string, string],
        ]
      : []),
    [
      'last attempt',
      y.lastAttemptAt === null ? 'never' : `${ago(y.lastAttemptAt, s.now)}, ${failed ? 'failed' : 'ok'}`,
    ],
    ['last success', ago(y.lastSuccessAt, s.now)],
    ...(y.lastError
      ? [['last error', `${y.lastError}, ${formatAge(s.now - y.lastErrorAt!)} ago`] as [string, string]]
      : []),
    [
      'success rate',
      y.successRate === null
        ? '-'
        : `${pct(y.successRate)} (${int(y.successes)} of ${int(y.attempts)} attempts)`,
    ],
    ['backoff', backoff],
    ['next attempt', next],
    [
      'store size',
      `${formatBytes(s.store.bytes)} of ${formatBytes(s.store.maxBytes)} (${pct(s.store.used)})${limit}` +
        (s.store.fileBytes !== null ? `, file ${formatBytes(s.store.fileBytes)}` : ''),
    ],
  ]
}

function renderFleet(
  f: BrokerFleetStatus,
  renderTable: (h: string[], r: Array<Array<string | number>>) => string,
) {
  const s = f.summary
  const head =
    `${f.brokerUrl}: ${s.total} node(s): ${s.ok} ok, ${s.behind} behind, ${s['holding-back'] ?? 0} holding-back, ${s.stale} stale, ` +
    `${s['never-seen']} never-seen, ${s['never-synced'] ?? 0} never-synced; ${f.alerts.length} active alert(s)`
  if (f.nodes.length === 0)
    return `${head}\nno nodes yet (they appear after their first batch, or with a token)`
  const table = renderTable(
    [
      'node',
      'health',
      'last sync',
      'success',
      'pending',
      'oldest',
      'received',
      'dupes',
      'late',
      'skew',
      'lost',
    ],
    f.nodes.map((n) => [
      n.node,
      n.health,
      n.sinceContact === null ? 'never' : `${formatAge(n.sinceContact)} ago`,
      n.successRate === null ? '-' : pct(n.successRate),
      int(n.backlog.pending),
      n.backlogAge === null ? '-' : formatAge(n.backlogAge),
      int(n.received),
      int(n.duplicates),
      int(n.late),
      n.clockSkew === null ? '-' : `${n.clockSkew >= 0 ? '+' : '-'}${formatAge(Math.abs(n.clockSkew))}`,
      int(n.dropped + n.expired),
    ]),
  )
  const alerts = f.alerts.map((a) => `  ${a.severity.toUpperCase()} ${a.rule} ${a.node}: ${a.message}`)
  return [head, '', table, ...(alerts.length ? ['', 'active alerts:', ...alerts] : [])].join('\n')
}
