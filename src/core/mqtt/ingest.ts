/**
 * `rmq mqtt ingest` (docs/mqtt.md): subscribe to the gateway's MQTT broker
 * and commit every QoS 1 message to the outbox before its PUBACK leaves, so
 * a message the broker handed over is never lost: a crash before the commit
 * means redelivery, and a crash between the commit and the PUBACK means a
 * redelivery the outbox recognises (dedup.ts). Messages are group-committed
 * (up to mqtt.batchSize per transaction, a message waits at most
 * mqtt.commitInterval), outside MQTT.js's 'message' handler, so the stream
 * keeps flowing while SQLite syncs.
 */
import { BLOCKED_STATE_KEY } from './blocked.js'
import os from 'node:os'
import type { MqttClient } from 'mqtt'
import { edgeNow, sleep } from '../../shared/clock.js'
import { failpoint } from '../../shared/failpoints.js'
import { BrokerUnavailableError, ConfigError, StorageFullError, isRmqError } from '../../shared/errors.js'
import { formatDuration } from '../../shared/units.js'
import { topicFilterProblem } from '../../protocol/topic-filter.js'
import type { LoadedConfig } from '../config/load.js'
import { openOutbox, publishOptionsFrom } from '../outbox.js'
import type { CompleteDriver } from '../storage/complete-driver.js'
import { connectMqtt, holdPubacks, mqttConnectionFrom, redactedUrl, type MqttConnection } from './connect.js'
import { DedupWindow, SESSION_STATE_PREFIX, sameMessage, withIngestHeaders } from './dedup.js'
import { mapPublish, mappingOptionsFrom, type Mapped } from './mapping.js'

export interface IngestOptions {
  /** Drain and return after this many ms without a message; undefined: resident (run until signal). */
  untilIdle?: number
  /** Stop: commit what was received, flush its PUBACKs, disconnect, return the summary. */
  signal?: AbortSignal
  /** On top of the mqtt.* keys (flags): url, clientId, ... */
  connection?: Partial<MqttConnection>
  /** Topic filters (default mqtt.topics). */
  topics?: string[]
  qos?: 0 | 1
  /** The outbox to write (default: openOutbox of the config, closed at the end). */
  outbox?: CompleteDriver
  /** How often onProgress is called (ms, default 10 s). */
  progressInterval?: number
}

export interface IngestHooks {
  onConnect?(info: { url: string; clientId: string; sessionPresent: boolean; reconnect: boolean }): void
  /** Something the operator must see (stderr): refused messages, a full outbox, a lost connection. */
  onWarning?(text: string): void
  onProgress?(summary: IngestSummary): void
}

export interface IngestSummary {
  url: string
  clientId: string
  /** PUBLISH packets taken from the broker. */
  received: number
  stored: number
  /** Redeliveries (DUP) of a message already stored, acknowledged without storing it again. */
  duplicates: number
  skipped: { retained: number; sys: number; rules: number }
  /** Stored with the arrival time (onBadTimestamp=arrival) or refused (reject): no usable event time. */
  badTimestamp: number
  invalidTopic: number
  /** The first distinct MQTT topics refused for their mapped topic, for the report. */
  invalidTopics: string[]
  /** Over message.maxBytes, or not JSON under a JSON content type. */
  invalidPayload: number
  commits: number
  /** Commits refused because the outbox was full (storage.overflow=reject), retried. */
  outboxFull: number
  reconnects: number
  /** Received but not committed when the run ended: not acknowledged, the broker redelivers them. */
  unacknowledged: number
  stoppedBy: 'idle' | 'signal' | 'error'
}

interface Entry {
  mapped: Mapped
  mqttTopic: string
  pid?: number
  dup: boolean
  /** A redelivery of a message already stored: acknowledged, not stored again. */
  duplicate?: boolean
  /** The connection it came on: its PUBACK goes there, or nowhere if that connection is gone. */
  link: Link
}

interface Link {
  client: MqttClient
  acks: ReturnType<typeof holdPubacks>
}

const WARN_DISTINCT = 20
export { BLOCKED_STATE_KEY }

/** Announced Receive Maximum: a few thousand, and always more than one group. */
export function receiveMaximumFor(batchSize: number): number {
  return Math.min(16_384, Math.max(4_096, 2 * batchSize))
}

export async function runIngest(
  loaded: Pick<LoadedConfig, 'config' | 'cwd'>,
  options: IngestOptions = {},
  hooks: IngestHooks = {},
): Promise<IngestSummary> {
  const { config, cwd } = loaded
  const m = config.mqtt
  // Everything the config can get wrong, before any connection: exit 78 at once.
  const mapping = mappingOptionsFrom(config, publishOptionsFrom(config))
  const topics = options.topics ?? m.topics
  if (topics.length === 0)
    throw new ConfigError('no MQTT topic filter to subscribe to (mqtt.topics, --topic)')
  for (const t of topics) {
    const p = topicFilterProblem(t)
    if (p)
      throw new ConfigError(`MQTT topic filter ${JSON.stringify(t)}: ${p}`, {
        suggestion: 'fix mqtt.topics or --topic',
      })
  }
  const qos = options.qos ?? (m.qos as 0 | 1)
  const receiveMaximum = receiveMaximumFor(m.batchSize)
  const conn = mqttConnectionFrom(
    config,
    { clientId: `rmq-ingest-${config.nodeId || os.hostname()}`, clean: false },
    cwd,
    { receiveMaximum, ...options.connection },
  )
  const url = redactedUrl(conn.url)
  const outbox = options.outbox ?? (await openOutbox(config, cwd))
  // Left by an earlier run that stopped while the outbox was full: cleared by this run's first commit.
  let staleBlocked = (await outbox.getState(BLOCKED_STATE_KEY)) !== undefined
  const summary: IngestSummary = {
    url,
    clientId: conn.clientId,
    received: 0,
    stored: 0,
    duplicates: 0,
    skipped: { retained: 0, sys: 0, rules: 0 },
    badTimestamp: 0,
    invalidTopic: 0,
    invalidTopics: [],
    invalidPayload: 0,
    commits: 0,
    outboxFull: 0,
    reconnects: 0,
    unacknowledged: 0,
    stoppedBy: 'signal',
  }
  const warn = (t: string) => hooks.onWarning?.(t)
  const warnedProblems = new Set<string>()
  const sessionKey = SESSION_STATE_PREFIX + conn.clientId
  // W = 2R: a redelivered message's first copy is among the last R stored (at most R are unacknowledged).
  const window = await DedupWindow.load(
    outbox,
    conn.clientId,
    2 * receiveMaximum,
    await outbox.getState(sessionKey),
  )

  let queue: Entry[] = []
  let link: Link | undefined
  let stopping = false
  let fatal: unknown
  /** Timer mode lost its connection: thrown after the last commit. */
  let lost: BrokerUnavailableError | undefined
  let lastActivity = Date.now()
  let committing: Promise<void> | undefined
  let timer: NodeJS.Timeout | undefined
  let stopWake: () => void = () => {}
  const stopped = new Promise<void>((resolve) => (stopWake = resolve))
  const stop = (by: IngestSummary['stoppedBy']) => {
    if (stopping) return
    stopping = true
    summary.stoppedBy = by
    stopWake()
  }
  const onAbort = () => stop('signal')
  if (options.signal?.aborted) stop('signal')
  options.signal?.addEventListener('abort', onAbort, { once: true })

  const onMessage = (
    l: Link,
    topic: string,
    payload: Buffer,
    packet: {
      messageId?: number
      qos: number
      dup: boolean
      retain: boolean
      properties?: { contentType?: string; userProperties?: Record<string, string | string[]> }
    },
  ) => {
    // Once stopping, nothing new is taken: unacknowledged, the broker keeps it for the next run.
    if (stopping) return
    summary.received++
    lastActivity = Date.now()
    const mapped = mapPublish(
      { topic, payload, retain: packet.retain, properties: packet.properties },
      mapping,
      edgeNow(),
    )
    queue.push({
      mapped,
      mqttTopic: topic,
      pid: packet.qos > 0 ? packet.messageId : undefined,
      dup: packet.dup,
      link: l,
    })
    schedule(queue.length >= m.batchSize ? 0 : m.commitInterval)
  }

  /** Start the commit loop after `delay` ms (0: now), never inside the 'message' handler itself. */
  const schedule = (delay: number) => {
    if (committing) return // the loop takes the queue when its current group is done
    if (delay === 0) {
      if (timer) clearTimeout(timer)
      timer = undefined
      committing = Promise.resolve()
        .then(commitLoop)
        .finally(() => (committing = undefined))
      return
    }
    timer ??= setTimeout(() => {
      timer = undefined
      schedule(0)
    }, delay)
  }

  let fullSince: number | undefined
  const commitLoop = async () => {
    let limit = m.batchSize
    let delay = 100
    try {
      while (queue.length > 0 && fatal === undefined) {
        const group = queue.slice(0, limit)
        let ok: boolean
        try {
          ok = await commitGroup(group)
        } catch (err) {
          if (!(err instanceof StorageFullError)) throw err
          await outboxFull(err)
          ok = false
        }
        if (ok) {
          queue = queue.slice(group.length)
          limit = Math.min(m.batchSize, limit * 2)
          delay = 100
          if (staleBlocked && fullSince === undefined) {
            staleBlocked = false
            await outbox.setState(BLOCKED_STATE_KEY, undefined)
          }
          // Room again only once a whole group fits or the queue is drained (not after each smaller group).
          if (fullSince !== undefined && (queue.length === 0 || group.length >= m.batchSize)) {
            warn(
              `the outbox has room again after ${formatDuration(Date.now() - fullSince)}: ingest continues`,
            )
            fullSince = undefined
            staleBlocked = false
            await outbox.setState(BLOCKED_STATE_KEY, undefined)
          }
          continue
        }
        // Full: a smaller group may fit in the room there is (a group is all or nothing) ...
        if (limit > 1) {
          limit = Math.max(1, limit >> 1)
          continue
        }
        // ... and when one message does not, wait: nothing is acknowledged, the broker keeps it all.
        if (stopping) return
        if (options.untilIdle !== undefined && Date.now() - fullSince! >= options.untilIdle) {
          fatal = new StorageFullError(
            `the outbox stayed full for ${formatDuration(Date.now() - fullSince!)} (--until-idle): ` +
              `${queue.length} message(s) left unacknowledged at the MQTT broker ${url}, which keeps them`,
            {
              suggestion:
                'run rmq sync (and rmq cleanup) to free room, or raise storage.maxMessages/maxBytes',
            },
          )
          stop('error')
          return
        }
        await Promise.race([sleep(delay), stopped])
        delay = Math.min(delay * 2, 5_000)
      }
    } catch (err) {
      fatal = err
      stop('error')
    }
  }

  const outboxFull = async (err: StorageFullError) => {
    summary.outboxFull++
    if (fullSince !== undefined) return
    fullSince = Date.now()
    warn(
      `the outbox is full (${err.message}): ${queue.length} message(s) stay unacknowledged at the MQTT broker, ` +
        'which keeps them; retrying (free room with rmq sync / rmq cleanup, or raise storage.maxBytes/maxMessages)',
    )
    await outbox.setState(
      BLOCKED_STATE_KEY,
      JSON.stringify({ since: fullSince, reason: err.message, clientId: conn.clientId }),
    )
  }

  /** Store one group in one transaction, then release its PUBACKs (StorageFullError: nothing changed). */
  const commitGroup = async (group: Entry[]): Promise<boolean> => {
    const toStore: Entry[] = []
    const inGroup = new Map<number, Entry>()
    for (const e of group) {
      if (e.mapped.kind !== 'store' || e.duplicate) continue
      if (e.pid !== undefined) {
        const msg = e.mapped.message
        const earlier = inGroup.get(e.pid)
        // Only a redelivery (DUP=1) can be a copy; dedup.ts says why this never drops a distinct message.
        if (
          e.dup &&
          ((earlier?.mapped.kind === 'store' && sameMessage(earlier.mapped.message, msg)) ||
            (await window.holds(outbox, e.pid, msg)))
        ) {
          e.duplicate = true
          continue
        }
        inGroup.set(e.pid, e)
      }
      toStore.push(e)
    }
    const duplicates = group.filter((e) => e.duplicate).length
    const messages = toStore.map((e) =>
      withIngestHeaders((e.mapped as Extract<Mapped, { kind: 'store' }>).message, conn.clientId, e.pid),
    )
    let seqs: number[] = []
    if (messages.length > 0) {
      seqs = (await outbox.append(messages)).seqs
      // A crash here is the case dedup.ts is for: stored, never acknowledged, redelivered with DUP=1.
      await failpoint('mqtt.ingest.after-commit-before-puback')
    }
    toStore.forEach((e, i) => e.pid !== undefined && window.add(e.pid, seqs[i]))
    summary.commits += messages.length > 0 ? 1 : 0
    summary.stored += messages.length
    summary.duplicates += duplicates
    const byLink = new Map<Link, { ids: number[]; codes: Map<number, number> }>()
    for (const e of group) {
      const k = e.mapped
      if (e.duplicate) {
        // acknowledged as a success: its first copy is stored
      } else if (k.kind === 'store') {
        if (k.badTimestamp) summary.badTimestamp++
      } else if (k.kind === 'skip') {
        summary.skipped[k.reason === 'rule' ? 'rules' : k.reason]++
      } else refused(e, k)
      if (e.pid === undefined) continue
      let acks = byLink.get(e.link)
      if (!acks) byLink.set(e.link, (acks = { ids: [], codes: new Map() }))
      acks.ids.push(e.pid)
      if (k.kind === 'refuse' && !e.duplicate) acks.codes.set(e.pid, k.reasonCode)
    }
    // A link that is gone drops them (holdPubacks): the broker redelivers, the window recognises them.
    for (const [l, a] of byLink) l.acks.release(a.ids, a.codes)
    return true
  }

  const refused = (e: Entry, k: Extract<Mapped, { kind: 'refuse' }>) => {
    summary[k.reason]++
    if (
      k.reason === 'invalidTopic' &&
      summary.invalidTopics.length < WARN_DISTINCT &&
      !summary.invalidTopics.includes(e.mqttTopic)
    )
      summary.invalidTopics.push(e.mqttTopic)
    const key = `${k.reason}:${e.mqttTopic}`
    if (warnedProblems.size < WARN_DISTINCT && !warnedProblems.has(key)) {
      warnedProblems.add(key)
      warn(`not stored (PUBACK reason code ${k.reasonCode}): ${k.problem}`)
    }
  }

  const connect = async (reconnect: boolean) => {
    let l: Link | undefined
    const { client, sessionPresent } = await connectMqtt(conn, (c) => {
      l = { client: c, acks: holdPubacks(c) }
      const me = l
      c.on('message', (topic, payload, packet) => onMessage(me, topic, payload, packet as never))
      // After the first connection, errors come with a 'close'; this keeps them from throwing.
      c.on('error', (err) => warn(`MQTT ${url}: ${err.message}`))
    })
    if (!sessionPresent) {
      // A new session: nothing of an earlier one can be redelivered; only later seqs may be matched.
      const last = await outbox.browse({ status: 'all', order: 'desc', limit: 1, now: edgeNow() })
      const since = String(last[0]?.seq ?? 0)
      await outbox.setState(sessionKey, since)
      window.clear(Number(since))
    }
    try {
      const granted = await client.subscribeAsync(
        Object.fromEntries(topics.map((t) => [t, { qos, rh: m.retained ? 1 : 0 }])) as never,
      )
      const refusedTopics = granted.filter((g) => g.qos >= 128).map((g) => g.topic)
      if (refusedTopics.length > 0)
        throw new ConfigError(
          `the MQTT broker ${url} refused the subscription to ${refusedTopics.join(', ')}`,
          {
            suggestion: 'check the broker ACL for this user, or mqtt.topics / --topic',
          },
        )
    } catch (err) {
      client.end(true)
      throw isRmqError(err)
        ? err
        : new BrokerUnavailableError(`subscribing at ${url} failed: ${(err as Error).message}`)
    }
    link = l
    lastActivity = Date.now()
    hooks.onConnect?.({ url, clientId: conn.clientId, sessionPresent, reconnect })
    client.once('close', () => {
      if (link === l) link = undefined
      if (stopping) return
      if (options.untilIdle !== undefined) {
        // Timer mode: commit what came, exit 69; the next run resumes the session.
        lost = new BrokerUnavailableError(
          `lost the connection to the MQTT broker ${url} (--until-idle); what was received is committed, ` +
            'the rest is redelivered to the next run',
          { suggestion: 'check the MQTT broker; the next run resumes the session' },
        )
        stop('error')
        return
      }
      warn(
        `lost the connection to the MQTT broker ${url}; reconnecting (unacknowledged messages are redelivered)`,
      )
      void reconnectLoop()
    })
  }

  const reconnectLoop = async () => {
    let delay = 500
    while (!stopping) {
      await Promise.race([sleep(delay), stopped])
      if (stopping) return
      try {
        await connect(true)
        summary.reconnects++
        return
      } catch (err) {
        warn(`reconnecting to ${url} failed: ${(err as Error).message}; next try in ${formatDuration(delay)}`)
        delay = Math.min(delay * 2, 30_000)
      }
    }
  }

  let progressTimer: NodeJS.Timeout | undefined
  let idleTimer: NodeJS.Timeout | undefined
  try {
    await connect(false)
    progressTimer = setInterval(() => hooks.onProgress?.(summary), options.progressInterval ?? 10_000)
    if (options.untilIdle !== undefined) {
      const idle = options.untilIdle
      idleTimer = setInterval(
        () => {
          if (queue.length === 0 && !committing && Date.now() - lastActivity >= idle) stop('idle')
        },
        Math.max(20, Math.min(250, idle / 4)),
      )
    }
    await stopped
    // Commit what was received (unless the outbox failed), then the PUBACKs leave before DISCONNECT.
    if (timer) clearTimeout(timer)
    timer = undefined
    while (committing) await committing
    if (fatal === undefined && queue.length > 0) {
      schedule(0)
      while (committing) await committing
    }
    summary.unacknowledged = queue.length
  } finally {
    options.signal?.removeEventListener('abort', onAbort)
    clearInterval(progressTimer)
    clearInterval(idleTimer)
    stopping = true
    const l = link
    link = undefined
    if (l) await endClient(l.client, fatal !== undefined)
    if (!options.outbox) await outbox.close()
  }
  if (fatal !== undefined) throw fatal
  if (lost) throw lost
  return summary
}

/** DISCONNECT after the PUBACKs already written; force when the run failed. */
function endClient(client: MqttClient, force: boolean): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      client.end(true)
      resolve()
    }, 2_000)
    client.end(force, {}, () => {
      clearTimeout(t)
      resolve()
    })
  })
}
