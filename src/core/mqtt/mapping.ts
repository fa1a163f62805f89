/**
 * What `rmq mqtt ingest` makes of one MQTT PUBLISH (docs/mqtt.md): the rmq
 * topic (as is, `mqtt.topicPrefix`, the first matching `mqtt.rules` entry),
 * the payload bytes as they came, the content type of MQTT 5, and the event
 * time (MQTT 5 user property `ts`, else the JSON field `mqtt.tsField`, else
 * arrival). Pure and synchronous: it runs in MQTT.js's 'message' handler.
 */
import { MAX_TS, topicProblem } from '../../protocol/batch.js'
import { topicFilterProblem, topicMatcher } from '../../protocol/topic-filter.js'
import { ConfigError } from '../../shared/errors.js'
import { DURATION_FORMS, parseDuration, parseTimestamp } from '../../shared/units.js'
import type { RmqConfig } from '../config/schema.js'
import { buildTemplate, payloadProblem, type PublishOptions } from '../outbox.js'
import type { NewMessage } from '../storage/driver.js'

/** MQTT 5 PUBACK reason codes ingest answers with when it does not store a message. */
export const PUBACK_TOPIC_NAME_INVALID = 144
export const PUBACK_PAYLOAD_FORMAT_INVALID = 153

export interface IngestRule {
  /** The rule as written, for messages. */
  text: string
  filter: string
  matches(topic: string): boolean
  /** Rewrite of the topic: `+N` is the level the N-th `+` of the filter matched, `#` what its `#` matched. */
  topic?: string
  priority?: number
  ttl?: number
  skip: boolean
}

export interface MappingOptions {
  prefix: string
  rules: IngestRule[]
  tsField: string
  onBadTimestamp: 'arrival' | 'reject'
  retained: boolean
  sys: boolean
  publish: PublishOptions
}

/** What ingest does with one PUBLISH. */
export type Mapped =
  | { kind: 'store'; message: NewMessage; badTimestamp?: string }
  | { kind: 'skip'; reason: 'retained' | 'sys' | 'rule' }
  | {
      kind: 'refuse'
      reason: 'invalidTopic' | 'invalidPayload' | 'badTimestamp'
      /** Why, in words (the stderr warning and the summary name it). */
      problem: string
      /** PUBACK reason code: the broker learns it was not taken, never "success". */
      reasonCode: number
    }

/** The parts of an MQTT.js packet mapping reads. */
export interface IncomingPublish {
  topic: string
  payload: Uint8Array
  retain?: boolean
  properties?: { contentType?: string; userProperties?: Record<string, string | string[]> }
}

/** One `mqtt.rules` entry, or a ConfigError naming it. */
export function parseRule(text: string): IngestRule {
  const bad = (why: string) =>
    new ConfigError(`mqtt.rules entry ${JSON.stringify(text)}: ${why}`, {
      suggestion:
        'write "FILTER key=value ...", e.g. "sensors/+/temp topic=plant/+1/temp priority=7 ttl=1h" or "debug/# skip"',
    })
  const [filter, ...parts] = text.trim().split(/\s+/)
  if (!filter) throw bad('no topic filter')
  const fp = topicFilterProblem(filter)
  if (fp) throw bad(fp)
  const rule: IngestRule = { text, filter, matches: topicMatcher(filter), skip: false }
  if (parts.length === 0) throw bad('no action (topic=, priority=, ttl= or skip)')
  for (const part of parts) {
    if (part === 'skip') {
      rule.skip = true
      continue
    }
    const eq = part.indexOf('=')
    const key = eq < 0 ? part : part.slice(0, eq)
    const value = eq < 0 ? '' : part.slice(eq + 1)
    if (key === 'topic') {
      if (!value) throw bad('topic= needs a rewrite')
      const plus = (filter.match(/(^|\/)\+(?=\/|$)/g) ?? []).length
      for (const m of value.matchAll(/\+(\d+)/g))
        if (Number(m[1]) < 1 || Number(m[1]) > plus)
          throw bad(`${m[0]} refers to no + of the filter (it has ${plus})`)
      if (value.includes('#') && !filter.endsWith('#')) throw bad('# in the rewrite but not in the filter')
      rule.topic = value
    } else if (key === 'priority') {
      if (!/^\d$/.test(value)) throw bad(`priority=${value}: use 0 (lowest) to 9 (highest)`)
      rule.priority = Number(value)
    } else if (key === 'ttl') {
      const ttl = parseDuration(value)
      if (ttl === undefined) throw bad(`ttl=${value}: use ${DURATION_FORMS}`)
      rule.ttl = ttl
    } else throw bad(`unknown key ${JSON.stringify(key)} (topic, priority, ttl, skip)`)
  }
  return rule
}

export function mappingOptionsFrom(config: RmqConfig, publish: PublishOptions): MappingOptions {
  const m = config.mqtt
  return {
    prefix: m.topicPrefix,
    rules: m.rules.map(parseRule),
    tsField: m.tsField,
    onBadTimestamp: m.onBadTimestamp,
    retained: m.retained,
    sys: m.sys,
    publish,
  }
}

/** The rewrite of `rule` applied to `topic` (which the rule's filter matches). */
export function rewriteTopic(rule: IngestRule, topic: string): string {
  if (rule.topic === undefined) return topic
  const levels = topic.split('/')
  const f = rule.filter.split('/')
  const plus: string[] = []
  let rest = ''
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '+') plus.push(levels[i])
    else if (f[i] === '#') rest = levels.slice(i).join('/')
  }
  return rule.topic
    .replace(/\+(\d+)/g, (_, n: string) => plus[Number(n) - 1] ?? '')
    .replace(/#/g, rest)
    .replace(/\/+$/, '') // "a/#" matched "a": no empty last level
}

/** Epoch ms from a user property, a JSON number or a string; undefined when it is none. */
function toMs(v: unknown): number | undefined {
  const t =
    typeof v === 'number'
      ? v
      : typeof v === 'string' && v.trim() !== ''
        ? parseTimestamp(v.trim())
        : undefined
  return t !== undefined && Number.isSafeInteger(t) && t >= 0 && t <= MAX_TS ? t : undefined
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** The event time the message carries, or why it has none usable (undefined both: use arrival). */
function eventTime(p: IncomingPublish, tsField: string): { ts?: number; problem?: string } {
  const prop = p.properties?.userProperties?.ts
  if (prop !== undefined) {
    const v = Array.isArray(prop) ? prop[0] : prop
    const ts = toMs(v)
    return ts === undefined ? { problem: `user property ts ${JSON.stringify(v)} is not a time` } : { ts }
  }
  if (!tsField) return {}
  let doc: unknown
  try {
    doc = JSON.parse(utf8.decode(p.payload))
  } catch {
    return { problem: `the payload is not JSON (mqtt.tsField ${tsField})` }
  }
  let v: unknown = doc
  for (const k of tsField.split('.'))
    v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined
  if (v === undefined) return { problem: `the payload has no field ${tsField}` }
  const ts = toMs(v)
  return ts === undefined ? { problem: `field ${tsField} ${JSON.stringify(v)} is not a time` } : { ts }
}

/** Map one PUBLISH; `now` is its arrival time. Never throws for a message: refusals are data. */
export function mapPublish(p: IncomingPublish, o: MappingOptions, now: number): Mapped {
  if (p.topic.startsWith('$') && !o.sys) return { kind: 'skip', reason: 'sys' }
  if (p.retain && !o.retained) return { kind: 'skip', reason: 'retained' }
  const rule = o.rules.find((r) => r.matches(p.topic))
  if (rule?.skip) return { kind: 'skip', reason: 'rule' }
  const topic = o.prefix + (rule ? rewriteTopic(rule, p.topic) : p.topic)
  const tp = topicProblem(topic, { forPublish: true })
  if (tp)
    return {
      kind: 'refuse',
      reason: 'invalidTopic',
      problem: `MQTT topic ${JSON.stringify(p.topic)} maps to the invalid rmq topic ${JSON.stringify(topic)}: ${tp}`,
      reasonCode: PUBACK_TOPIC_NAME_INVALID,
    }
  const et = eventTime(p, o.tsField)
  if (et.problem && o.onBadTimestamp === 'reject')
    return {
      kind: 'refuse',
      reason: 'badTimestamp',
      problem: `MQTT topic ${JSON.stringify(p.topic)}: ${et.problem} (mqtt.onBadTimestamp=reject)`,
      reasonCode: PUBACK_PAYLOAD_FORMAT_INVALID,
    }
  let template
  try {
    template = buildTemplate(
      {
        topic,
        ts: et.ts,
        priority: rule?.priority,
        ttl: rule?.ttl,
        contentType: p.properties?.contentType || null,
      },
      o.publish,
      now,
    )
  } catch (err) {
    // The ts was checked above: what is left is the content type the publisher set.
    return {
      kind: 'refuse',
      reason: 'invalidPayload',
      problem: `MQTT topic ${JSON.stringify(p.topic)}: ${(err as Error).message}`,
      reasonCode: PUBACK_PAYLOAD_FORMAT_INVALID,
    }
  }
  const pp = payloadProblem(p.payload, template, o.publish.maxBytes)
  if (pp)
    return {
      kind: 'refuse',
      reason: 'invalidPayload',
      problem: `MQTT topic ${JSON.stringify(p.topic)}: ${pp}`,
      reasonCode: PUBACK_PAYLOAD_FORMAT_INVALID,
    }
  const message: NewMessage = {
    topic,
    payload: p.payload,
    ts: template.ts ?? now,
    contentType: template.contentType,
    expiresAt: template.expiresAt,
    priority: template.priority,
    headers: null,
  }
  return et.problem ? { kind: 'store', message, badTimestamp: et.problem } : { kind: 'store', message }
}
