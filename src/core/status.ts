/**
 * `rmq status`: what this edge node holds and how its syncs go, read from
 * the outbox (counters and sync state the sync engine keeps there); and
 * `rmq status --broker`: the fleet as the broker sees it (GET /v1/nodes and
 * GET /v1/alerts). A library: no oclif here. docs/monitoring.md.
 */
import { BLOCKED_STATE_KEY, parseIngestBlocked, type IngestBlocked } from './mqtt/blocked.js'
import fs from 'node:fs'
import path from 'node:path'
import type { AlertRecord, FleetStatus } from '../protocol/fleet-status.js'
import type { LoadedConfig } from './config/load.js'
import { brokerError, brokerRequest } from './consumer.js'
import { openOutbox } from './outbox.js'
import { readSyncStats, type SyncStats } from './sync.js'
import { tlsFromConfig } from './tls.js'
import { looseMode } from '../shared/private-files.js'

export interface EdgeStatus {
  node: string
  brokerUrl: string
  mode: string
  /** The config file in effect (null: defaults, .env and environment only), and the .env read. */
  configFile: string | null
  dotenvFile: string | null
  outbox: {
    driver: string
    /** File of file-backed drivers. */
    path: string | null
    /** False when nothing was ever published here (no outbox file yet). */
    exists: boolean
    epoch: string | null
  }
  pending: { messages: number; bytes: number; oldestTs: number | null; oldestAge: number | null }
  /**
   * Since the outbox was created. `expired` counts every message that expired
   * unsent, including those past their TTL still stored (`expiredPending`)
   * that the next cleanup removes.
   */
  totals: { appended: number; sent: number; expired: number; expiredPending: number; dropped: number }
  store: {
    /** Accounted bytes stored (pending and sent kept for retention) against storage.maxBytes. */
    bytes: number
    maxBytes: number
    messages: number
    maxMessages: number
    sentKept: number
    /** bytes / maxBytes (0..1). */
    used: number
    /** Size of the outbox file on disk, when there is one. */
    fileBytes: number | null
  }
  /** `rmq mqtt ingest` waiting for room in a full outbox (nothing acknowledged meanwhile), or null. */
  mqttIngest: { blocked: IngestBlocked | null }
  sync: {
    lastAttemptAt: number | null
    lastSuccessAt: number | null
    lastError: string | null
    lastErrorAt: number | null
    attempts: number
    successes: number
    failures: number
    /** successes / attempts; null before the first attempt. */
    successRate: number | null
    batches: number
    heartbeats: number
    messagesSent: number
    bytesRaw: number
    bytesWire: number
    /** Consecutive failures and the delay in force (null when the last attempt succeeded). */
    backoff: { failures: number; delayMs: number; reason: string; since: number } | null
    /** When the next run may send: null = at once (no backoff in force). */
    nextAttemptAt: number | null
  }
  /** Files holding the token or payloads that group or others can read (chmod 600 fixes each). */
  exposed: ExposedFile[]
  now: number
}

export interface ExposedFile {
  file: string
  /** As `ls -l` shows it, e.g. -rw-r--r--. */
  mode: string
  /** What is in it that others should not read. */
  holds: string
}

/**
 * The files rmq writes secrets or payloads to, as configured here, that are
 * group- or world-accessible (made before rmq created them 0600, or chmod-ed since).
 */
export function exposedFiles(loaded: LoadedConfig): ExposedFile[] {
  const { config, cwd } = loaded
  const candidates: Array<[string | undefined, string]> = [
    [loaded.filePath, 'the configuration (and the token when set there)'],
    [loaded.dotenvPath, 'environment settings (and the token when set there)'],
    [config.tokenFile ? path.resolve(cwd, config.tokenFile) : undefined, 'the token'],
  ]
  if (config.storage.driver === 'sqlite') {
    const db = path.resolve(cwd, config.storage.path)
    for (const f of [db, `${db}-wal`, `${db}-shm`]) candidates.push([f, 'outbox payloads'])
  }
  if (config.broker.store === 'sqlite') {
    const dir = path.resolve(cwd, config.broker.dataDir)
    for (const f of ['broker.db', 'broker.db-wal', 'broker.db-shm'])
      candidates.push([path.join(dir, f), 'broker tokens and payloads'])
  }
  const out: ExposedFile[] = []
  for (const [file, holds] of candidates) {
    const mode = file ? looseMode(file) : undefined
    if (file && mode) out.push({ file, mode, holds })
  }
  return out
}

/** The status of this edge node, read from its outbox. Never creates an outbox that does not exist. */
export async function edgeStatus(loaded: LoadedConfig, options: { now?: number } = {}): Promise<EdgeStatus> {
  const { config, cwd } = loaded
  const now = options.now ?? Date.now()
  const file = config.storage.driver === 'memory' ? null : path.resolve(cwd, config.storage.path)
  const builtinFile = config.storage.driver === 'sqlite'
  const exists = !builtinFile || (file !== null && fs.existsSync(file))
  const base = {
    node: config.nodeId,
    brokerUrl: config.brokerUrl,
    mode: config.mode,
    configFile: loaded.filePath ?? null,
    dotenvFile: loaded.dotenvPath ?? null,
    exposed: exposedFiles(loaded),
    now,
  }
  if (!exists)
    return {
      ...base,
      outbox: { driver: config.storage.driver, path: file, exists: false, epoch: null },
      pending: { messages: 0, bytes: 0, oldestTs: null, oldestAge: null },
      totals: { appended: 0, sent: 0, expired: 0, expiredPending: 0, dropped: 0 },
      store: {
        bytes: 0,
        maxBytes: config.storage.maxBytes,
        messages: 0,
        maxMessages: config.storage.maxMessages,
        sentKept: 0,
        used: 0,
        fileBytes: null,
      },
      mqttIngest: { blocked: null },
      sync: syncPart(undefined, now),
    }
  // Read-only: status never writes (no migration, no identity record) and never waits for a writer.
  const driver = await openOutbox(config, cwd, { readOnly: true })
  try {
    const s = await driver.stats(now)
    const sync = await readSyncStats(driver)
    const blocked = parseIngestBlocked(await driver.getState(BLOCKED_STATE_KEY))
    return {
      ...base,
      outbox: { driver: driver.name, path: file, exists: true, epoch: driver.epoch },
      pending: {
        messages: s.pending,
        bytes: s.pendingBytes,
        oldestTs: s.oldestPendingTs,
        oldestAge: s.oldestPendingTs === null ? null : Math.max(0, now - s.oldestPendingTs),
      },
      totals: {
        appended: s.appendedTotal,
        sent: s.sentTotal,
        expired: s.expiredTotal + (s.expiredPending ?? 0),
        expiredPending: s.expiredPending ?? 0,
        dropped: s.droppedTotal,
      },
      store: {
        bytes: s.totalBytes,
        maxBytes: s.maxBytes,
        messages: s.totalMessages,
        maxMessages: s.maxMessages,
        sentKept: s.sentKept,
        used: s.maxBytes > 0 ? s.totalBytes / s.maxBytes : 0,
        fileBytes: s.fileBytes,
      },
      mqttIngest: { blocked },
      sync: syncPart(sync, now),
    }
  } finally {
    await driver.close()
  }
}

function syncPart(s: SyncStats | undefined, now: number): EdgeStatus['sync'] {
  const b = s?.backoff ?? null
  return {
    lastAttemptAt: s?.lastAttemptAt ?? null,
    lastSuccessAt: s?.lastSuccessAt ?? null,
    lastError: s?.lastError ?? null,
    lastErrorAt: s?.lastErrorAt ?? null,
    attempts: s?.attempts ?? 0,
    successes: s?.successes ?? 0,
    failures: s?.failures ?? 0,
    successRate: s && s.attempts > 0 ? s.successes / s.attempts : null,
    batches: s?.batches ?? 0,
    heartbeats: s?.heartbeats ?? 0,
    messagesSent: s?.messagesSent ?? 0,
    bytesRaw: s?.bytesRaw ?? 0,
    bytesWire: s?.bytesWire ?? 0,
    backoff: b ? { failures: b.failures, delayMs: b.delayMs, reason: b.reason, since: b.since } : null,
    nextAttemptAt: b && b.nextAttemptAt > now ? b.nextAttemptAt : null,
  }
}

export interface BrokerFleetStatus extends FleetStatus {
  brokerUrl: string
  alerts: AlertRecord[]
}

/**
 * The fleet as the broker at brokerUrl sees it: every node with its health,
 * and the active alerts. Throws BrokerUnavailableError (exit 69) when the
 * broker cannot be reached, ConfigError (78) when it refuses the token.
 */
export async function brokerFleetStatus(
  loaded: LoadedConfig,
  options: { timeoutMs?: number } = {},
): Promise<BrokerFleetStatus> {
  const { brokerUrl, token } = loaded.config
  const tls = tlsFromConfig(loaded.config, loaded.cwd)
  const timeoutMs = options.timeoutMs ?? loaded.config.sync.timeout
  const [nodes, alerts] = await Promise.all([
    brokerRequest(brokerUrl, 'GET', 'v1/nodes', { token, timeoutMs, tls }),
    brokerRequest(brokerUrl, 'GET', 'v1/alerts?state=active', { token, timeoutMs, tls }),
  ])
  if (nodes.status !== 200) throw brokerError(nodes, 'reading node status')
  if (alerts.status !== 200) throw brokerError(alerts, 'reading alerts')
  return {
    brokerUrl,
    ...(nodes.body as FleetStatus),
    alerts: (alerts.body as { active: AlertRecord[] }).active,
  }
}
