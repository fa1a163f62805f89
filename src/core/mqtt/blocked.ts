/**
 * The outbox state `rmq mqtt ingest` keeps while it waits for room (a full
 * outbox under overflow=reject: nothing is acknowledged, the MQTT broker keeps
 * the messages). `rmq status` shows it. A small module of its own so that
 * status does not load the ingest code.
 */
export const BLOCKED_STATE_KEY = 'mqtt.ingest.blocked'

export interface IngestBlocked {
  /** When ingest found the outbox full (ms since the epoch). */
  since: number
  reason: string
  clientId: string
}

/** The stored record, or null when there is none or it does not parse (never throws). */
export function parseIngestBlocked(raw: string | undefined): IngestBlocked | null {
  if (raw === undefined) return null
  try {
    const v = JSON.parse(raw) as Partial<IngestBlocked>
    if (typeof v.since !== 'number' || typeof v.reason !== 'string') return null
    return { since: v.since, reason: v.reason, clientId: typeof v.clientId === 'string' ? v.clientId : '' }
  } catch {
    return null
  }
}
