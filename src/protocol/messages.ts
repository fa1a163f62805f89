/**
 * What the broker serves on `GET /v1/messages` (docs/consuming.md): one
 * definition of a served message's fields, shared by the broker's store (which
 * adds its two positions) and the consumer (which sees the position of the
 * order it reads).
 */

export type ConsumeOrder = 'event' | 'arrival'

/** The fields of a message as the broker keeps and serves it. */
export interface MessageFields {
  node: string
  epoch: string
  seq: number
  topic: string
  /** Original generation time, epoch ms (node clock). */
  ts: number
  payload: string
  enc: 'utf8' | 'base64'
  contentType: string | null
  priority: number
  expiresAt: number | null
  headers: Record<string, string> | null
  /** Broker time of ingest, epoch ms. */
  receivedAt: number
  /** Released at once because its ts was already below the watermark when it arrived. */
  late: boolean
}

export interface ConsumedMessage extends MessageFields {
  /** `node:epoch:seq` (messageId in protocol/batch.ts). */
  id: string
  /** Position in the order read (event release position or arrival position). */
  position: number
}

/** What an event-order page at the head says is held behind the watermark (docs/ordering.md). */
export interface HeldInfo {
  /** Messages matching the filter, stored but held behind the watermark (among the oldest 100,000 held). */
  count: number
  /** More than 100,000 messages are held in all: `count` is a lower bound. */
  capped: boolean
  /** Live edge nodes the held messages wait for (lowest low mark first): their low mark and last contact. */
  nodes: { node: string; lowMark: number; lastContact: number }[]
}

export interface MessagesPage {
  order: ConsumeOrder
  messages: ConsumedMessage[]
  /** Pass as `after` next time. */
  next: number
  /** The read stopped before the head: read again from `next` (even after an empty page). */
  more: boolean
  /** Highest position of the order read when the page was read. */
  headPosition: number
  watermark: number | null
  /** Event order, at the head (`more: false`) only. */
  held?: HeldInfo
}
