/**
 * The filter flags `rmq messages`, `messages export` and `messages import`
 * share (status, topic, event-time range), and the core filter they make.
 */
import { Flags } from '@oclif/core'
import type { ListMessagesOptions } from '../core/messages.js'

// Types only: a command's flags load with oclif's manifest, before any core module is needed.
type MessageStatus = NonNullable<ListMessagesOptions['status']>

export function messageFilterFlags(status: { default: MessageStatus; description: string }) {
  return {
    status: Flags.string({
      description: status.description,
      options: ['pending', 'sent', 'expired', 'all'] satisfies MessageStatus[],
      default: status.default,
    }),
    topic: Flags.string({ description: 'MQTT-style topic filter (+ one level, # the rest).' }),
    since: Flags.string({ description: 'Event time from (inclusive): ISO 8601 or epoch ms.' }),
    until: Flags.string({ description: 'Event time until (exclusive): ISO 8601 or epoch ms.' }),
  }
}

/** The parsed filter flags as core's filter (the status is one of the flag's options). */
export function messageFilter(flags: { status: string; topic?: string; since?: string; until?: string }): {
  status: MessageStatus
  topic?: string
  since?: string
  until?: string
} {
  return {
    status: flags.status as MessageStatus,
    topic: flags.topic,
    since: flags.since,
    until: flags.until,
  }
}
