/**
 * The words of `rmq sync` and `rmq drain` for a person: the one-line summary
 * of a run (the engine, src/core/sync/, returns figures). The fix for each
 * way a run fails is in advice.ts.
 */
import type { SyncResult } from '../core/sync.js'
import { formatBytes, formatDuration } from '../shared/units.js'

/** One line about a sync or drain run, for people and cron logs. */
export function syncSummary(r: SyncResult): string {
  if (r.status === 'backoff') return `${r.message ?? r.status}; use --force to try now`
  if (r.status !== 'ok') return r.message ?? r.status
  const parts: string[] = []
  if (r.messages > 0) {
    const ratio = r.bytesWire > 0 ? ` (${(r.bytesRaw / r.bytesWire).toFixed(1)}x)` : ''
    parts.push(
      `sent ${r.messages} message(s) in ${r.batches} batch(es): ${formatBytes(r.bytesRaw)} -> ` +
        `${formatBytes(r.bytesWire)} ${r.codec}${ratio}`,
    )
    if (r.duplicates > 0) parts.push(`${r.duplicates} already at the broker`)
    if (r.order === 'newest') parts.push('newest first (backlog larger than the budget)')
  } else if (r.heartbeat) parts.push('nothing to send; heartbeat sent')
  else parts.push('nothing sent')
  if (r.retries > 0) parts.push(`${r.retries} failed attempt(s) retried`)
  const why: Record<string, string> = {
    budget: `budget of ${formatBytes(r.budget)} reached`,
    'max-batches': 'batch limit reached',
    deadline: 'time limit reached',
    aborted: 'interrupted',
    'lease-lost': 'another sync took over',
  }
  if (r.stoppedBy && why[r.stoppedBy]) parts.push(why[r.stoppedBy])
  parts.push(`${r.pending} pending${r.pending > 0 ? ` (${formatBytes(r.pendingBytes)})` : ''}`)
  parts.push(`in ${formatDuration(r.durationMs)}`)
  return parts.join('; ')
}

/** A run's result as `--json` shows it: `message` in the words of syncSummary. */
export function syncResultJson(r: SyncResult): SyncResult {
  return r.status === 'ok' ? r : { ...r, message: syncSummary(r) }
}
