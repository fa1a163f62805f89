import type { IngestSummary } from '../core/mqtt/ingest.js'

/** One line for the operator: what came in and what became of it. */
export function ingestSummaryLine(s: IngestSummary): string {
  const skipped = s.skipped.retained + s.skipped.sys + s.skipped.rules
  const parts = [
    `${s.received} received`,
    `${s.stored} stored in ${s.commits} commit(s)`,
    `${s.duplicates} duplicate(s)`,
    `${skipped} skipped (retained ${s.skipped.retained}, $SYS ${s.skipped.sys}, rules ${s.skipped.rules})`,
    `${s.badTimestamp} bad timestamp(s)`,
    `${s.invalidTopic} invalid topic(s)` + (s.invalidTopics.length ? ` [${s.invalidTopics.join(', ')}]` : ''),
  ]
  if (s.invalidPayload) parts.push(`${s.invalidPayload} invalid payload(s)`)
  if (s.outboxFull) parts.push(`outbox full ${s.outboxFull} time(s)`)
  if (s.reconnects) parts.push(`${s.reconnects} reconnect(s)`)
  if (s.unacknowledged) parts.push(`${s.unacknowledged} left unacknowledged (redelivered)`)
  return `mqtt ingest: ${parts.join(', ')}`
}
