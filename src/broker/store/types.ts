/**
 * The broker's durable state behind one interface. SQLite (embedded, default)
 * and PostgreSQL (several broker processes on several hosts sharing one
 * database) implement it; both must pass
 * src/testing/broker-store-conformance.ts.
 *
 * Rules for implementations:
 * - Every method that changes state does it in ONE transaction and has
 *   committed durably before its promise resolves.
 * - Nothing durable lives only in process memory: the watermark, the next
 *   release/arrival position, node records, tokens and consumer-group
 *   positions are all in the store, so any number of broker processes can
 *   serve the same store.
 * - Positions (event `position` and `arrival`) are assigned so that a reader
 *   that has seen position P never later finds a newly committed message
 *   with a position <= P. In SQLite this follows from the single writer; in
 *   PostgreSQL positions are given after commit, one release pass at a time,
 *   only to rows below the horizon of running transactions (rmq_pass), rather
 *   than from a sequence, whose values can commit out of order.
 * - Time comes from the caller (`now`), never from the database clock, so
 *   tests can drive it.
 */
import type { BatchCheckOptions, BatchReply } from '../batch-checks.js'
import type { BatchAck, BatchBody } from '../../protocol/batch.js'
import type { ConsumeOrder, MessageFields } from '../../protocol/messages.js'
import type { AlertRecord, NodeCounters } from '../../protocol/fleet-status.js'

export type { AlertRecord, AlertRule, NodeCounters } from '../../protocol/fleet-status.js'

export type ReadOrder = ConsumeOrder

/** A message as the store keeps it: the served fields plus both its positions. */
export interface StoredMessage extends MessageFields {
  /** Position in the arrival stream (ingest order), >= 1. */
  arrival: number
  /** Position in the event-time stream, or null while held back by the watermark. */
  position: number | null
}

/** What the broker knows about one edge node (or direct producer). */
export interface NodeRecord {
  node: string
  /** Epoch of the node's current store (the last one seen). */
  epoch: string
  /** The last batch was sent by a direct-mode producer (does not hold W back). */
  direct: boolean
  firstSeen: number
  /** Last request of any kind (batch or heartbeat), broker time. */
  lastContact: number
  /** Last batch that carried at least one message, broker time; null if never. */
  lastSync: number | null
  /** Node clock minus broker receive time at the last contact, ms. */
  clockSkew: number
  /** Node's clock as last reported, epoch ms (node clock). */
  lastClock: number
  backlog: { pending: number; bytes: number; oldestTs: number | null }
  /** Oldest ts the node still holds unsent, or its last clock when it holds nothing. */
  lowMark: number
  /**
   * The `stats` object of the last batch that had one, as the store was given it (the batches
   * route gives the fixed fields of node-stats.ts); shared and frozen: never modify it.
   */
  stats: Record<string, unknown> | null
  counters: NodeCounters
  /**
   * Requests (batches and heartbeats) accepted from the node's current epoch:
   * what the broker saw of its syncs, counted at commit (0 for requests
   * accepted before the store had this count).
   */
  epochBatches: number
  /** Messages accepted from the node's current epoch (duplicates not counted). */
  epochReceived: number
  /** Highest seq received from the node's current epoch (0: none yet). */
  epochMaxSeq: number
}

export interface IngestContext {
  /** Broker receive time, epoch ms. */
  now: number
  /** A node silent for longer than this stops holding the watermark back (ms). */
  maxLateness: number
  /**
   * A live node whose low mark is further behind `now` than this stops holding
   * the watermark back (ms; broker.ordering.maxHoldBack; undefined: no bound).
   * So one node can delay everyone's event order by at most this much.
   */
  maxHoldBack?: number
  /**
   * Other batch requests the broker is handling at this moment (a hint): a
   * store may commit a lone batch differently from concurrent ones.
   */
  concurrent?: number
}

export interface ReleaseResult {
  /** Messages newly released to the event stream by this call. */
  released: number
  watermark: number | null
}

export interface ReadQuery {
  order: ReadOrder
  /** Return messages with a position (event) or arrival (arrival order) greater than this. */
  after: number
  limit: number
  /** MQTT-style filter (`+` one level, `#` the rest); undefined or '#' for all. */
  topic?: string
}

export interface ReadResult {
  messages: StoredMessage[]
  /**
   * Position to pass as `after` next time. It may be beyond the last message
   * returned when rows not matching the topic filter were skipped. Never
   * beyond a matching message that was not returned.
   */
  next: number
  /**
   * The read stopped before the head (`next < head`): the page is full, or a
   * bounded scan ran out of work. Read again from `next`; an empty page with
   * `more: true` is not the end of the stream.
   */
  more: boolean
  /** Highest position of the order read when the page was read (0 when none). */
  head: number
  /** The watermark when the page was read. */
  watermark: number | null
}

export interface HeldQuery {
  /** MQTT-style filter; undefined or '#' for all. */
  topic?: string
  /** Broker time, epoch ms: which nodes are live (heard from within maxLateness). */
  now: number
  maxLateness: number
  /** As IngestContext.maxHoldBack: nodes cut loose for holding back too long are not holders. */
  maxHoldBack?: number
}

/** Why messages matching a filter are not in the event stream yet (docs/ordering.md). */
export interface HeldReport {
  /** Stored, matching the filter, held behind the watermark: among the oldest HELD_COUNT_MAX held at most. */
  count: number
  /** More than HELD_COUNT_MAX messages are held: counting stopped there and `count` is a lower bound. */
  capped: boolean
  /**
   * Live edge nodes whose low mark is at or below the newest matching held
   * message: each must report (send newer messages or a heartbeat) before
   * some of them are released. Lowest low mark first, at most HELD_NODES_MAX.
   */
  nodes: { node: string; lowMark: number; lastContact: number }[]
}

/**
 * One filtered read examines at most this many rows (positions or arrivals)
 * in every store, then answers `more: true`: the bound on one page's work.
 */
export const READ_MAX_ROWS = 100_000

/** Counting held messages examines at most this many (a bound on the work of one page). */
export const HELD_COUNT_MAX = 100_000
export const HELD_NODES_MAX = 5

/** What a credential may do (src/broker/authorization.ts, docs/security.md). */
export type TokenRole = 'node' | 'consumer' | 'monitor' | 'admin'

/** A credential as stored: its name (for a node token, the node id), role and scopes; never the token. */
export interface TokenRecord {
  name: string
  role: TokenRole
  /** consumer: the topic filters it may read (empty for other roles). */
  topics: string[]
  /** consumer: the consumer groups it may use (empty for other roles). */
  groups: string[]
  createdAt: number
  lastUsedAt: number | null
  /** After this (ms) the token is refused (401 TOKEN_EXPIRED); null: never. */
  expiresAt: number | null
  /** Set after a rotation: the previous token is still accepted until then (ms). */
  previousUntil: number | null
}

/** A token found by digest: `previous` when it matched the digest a rotation replaced. */
export interface FoundToken extends TokenRecord {
  previous: boolean
}

/** What the fleet status reads of a node credential. */
export type NodeTokenRecord = Pick<TokenRecord, 'name' | 'createdAt'>

/** BrokerStore.fleetVersions: equal texts, equal rows (see there). */
export interface FleetVersions {
  nodes: string
  tokens: string
}

/** A node row's id and version (BrokerStore.nodeVersions). */
export type NodeVersion = readonly [node: string, version: number]

/** The stored part of a new credential. */
export type NewTokenRecord = Pick<TokenRecord, 'name' | 'role' | 'topics' | 'groups' | 'expiresAt'>

export interface GroupRecord {
  name: string
  order: ReadOrder
  position: number
  updatedAt: number
}

export interface StreamHeads {
  /** Highest event position released so far (0 when none). */
  event: number
  /** Highest arrival position so far (0 when none). */
  arrival: number
  watermark: number | null
  /** Messages stored but not yet released to the event stream. */
  held: number
  /** All messages stored. */
  total: number
  /**
   * A store that gives positions after the ingest's commit (PostgreSQL): what
   * waits on this broker for them. Absent: positions are given in the
   * ingest's own transaction (SQLite).
   */
  positionWaits?: PositionWaits
}

/** Ingests and release calls of one broker waiting for positions (a PostgreSQL release pass). */
export interface PositionWaits {
  /** Waiting now. */
  waiting: number
  /** How long the oldest of them has waited (0: none waits). */
  oldestWaitMs: number
  /** Ingests answered 503 since the store opened: an open transaction held positions back too long. */
  stalled: number
}

export type NewAlert = Pick<AlertRecord, 'rule' | 'node' | 'severity' | 'message' | 'value' | 'threshold'>

export interface AlertQuery {
  state?: 'active' | 'resolved'
  /** Newest first; at most this many. */
  limit: number
}

export interface BrokerStore {
  /** `sqlite`, `postgres`, ... */
  readonly kind: string

  /**
   * Store one validated batch (or heartbeat) in one durable transaction:
   * update the node record (contact, skew, backlog, low mark, stats,
   * counters), insert messages idempotently on (node, epoch, seq) counting
   * duplicates, recompute the watermark (monotonic) and release what it
   * allows. Messages whose ts is below the watermark as it stood before this
   * batch are released at once with `late: true`. The low mark counts
   * `backlog.unacked.oldestTs` unless that batch is the node's last
   * committed one (`lowMarkOf`): the broker's acks promise it to pipelining
   * nodes (docs/protocol.md), and the conformance suite checks it.
   */
  ingest(batch: BatchBody, ctx: IngestContext): Promise<BatchAck>

  /**
   * Optional: parse, check (batch-checks.ts) and store a JSON batch body
   * given as its decoded bytes, which the caller gives up (they may be
   * transferred to another thread). The threaded SQLite store does this on
   * its writer thread, so that a large body is never parsed on the event loop.
   */
  ingestJson?(bytes: Uint8Array, checks: BatchCheckOptions, ctx: IngestContext): Promise<BatchReply>

  /** Recompute the watermark at `now` (silent nodes age out) and release. */
  release(ctx: IngestContext): Promise<ReleaseResult>

  /**
   * Read one page of the event or arrival stream. A filtered read may stop
   * early after a bounded amount of work (`more: true`), but never returns an
   * empty page with `more: false` while a matching message is at or below
   * the head.
   */
  read(query: ReadQuery): Promise<ReadResult>

  /** Matching messages held behind the watermark, and the live nodes holding them. */
  heldBack(query: HeldQuery): Promise<HeldReport>

  heads(): Promise<StreamHeads>

  /**
   * Set the watermark to `to` (an admin repair of a poisoned watermark,
   * `rmq broker watermark --reset-to`): messages already released keep their
   * positions; later ones at or above `to` are held and released in order
   * again instead of arriving late. Returns the watermark before and after.
   */
  resetWatermark(to: number): Promise<{ before: number | null; after: number }>

  nodes(): Promise<NodeRecord[]>
  node(id: string): Promise<NodeRecord | undefined>
  /**
   * Every node row's id and version, by id. The version (the row's `batches`,
   * requests accepted from the node) grows with every write of the row, so a
   * reader that keeps rows (fleet-rows.ts: the fleet status and /metrics)
   * reads again only the rows whose version moved.
   */
  nodeVersions(): Promise<NodeVersion[]>
  /** The rows of these node ids, by id (ids without a row are left out). */
  nodesNamed(ids: readonly string[]): Promise<NodeRecord[]>
  /**
   * Fingerprints of the node rows and of the node credentials, from
   * aggregates (no row is read): `nodes` changes with every write of a node
   * row (the rows' count and the sum of their versions, which every write
   * raises); `tokens` with every node credential created, replaced or
   * removed (their count, creation times and name lengths), except one
   * removed and one of a name as long made in the same millisecond.
   */
  fleetVersions(): Promise<FleetVersions>

  /**
   * Create or replace the credential `token.name` (only the token's hash is
   * stored); a replaced one's token, and any rotated-out one, stop working.
   */
  putToken(token: NewTokenRecord, tokenHash: string, now: number): Promise<void>
  /**
   * Rotate: `tokenHash` becomes the credential's hash, the one it had is
   * still accepted until `previousUntil` (a grace of 0 ends it at once).
   * False when there is no credential of that name.
   */
  rotateToken(name: string, tokenHash: string, previousUntil: number): Promise<boolean>
  /** The credential whose hash, or rotated-out previous hash, equals tokenHash (exact lookup). */
  findToken(tokenHash: string): Promise<FoundToken | undefined>
  /** Record use of a credential (may be coalesced by the caller). */
  touchToken(name: string, now: number): Promise<void>
  /** Every credential, by name. */
  listTokens(): Promise<TokenRecord[]>
  /** The node credentials' names and creation times, by name (the fleet's never-seen nodes). */
  nodeTokens(): Promise<NodeTokenRecord[]>
  /** Remove a credential (its current and previous token); false when there is none. */
  revokeToken(name: string): Promise<boolean>

  /** Committed position of a consumer group in one order; undefined if never committed. */
  groupPosition(name: string, order: ReadOrder): Promise<number | undefined>
  /** Commit a group position; it never moves backwards (max of old and new). Returns the stored one. */
  commitGroup(name: string, order: ReadOrder, position: number, now: number): Promise<number>
  listGroups(): Promise<GroupRecord[]>

  /**
   * Delete released messages received before `receivedBefore`, at most
   * `limit` per call. Returns how many were deleted. Held (unreleased)
   * messages are never deleted.
   */
  purge(options: { receivedBefore: number; limit: number }): Promise<number>

  /** Alerts, newest first (by id). */
  listAlerts(query: AlertQuery): Promise<AlertRecord[]>
  /** The most recent alert of every key, active or resolved (one row per key). */
  latestAlerts(): Promise<AlertRecord[]>
  /**
   * Fire an alert unless one with the same key (`rule:node`) is already
   * active. Returns the new record, or undefined when it was already active
   * (another evaluation or another broker fired it): only the caller that
   * gets a record sends it to the sinks.
   */
  fireAlert(alert: NewAlert, now: number): Promise<AlertRecord | undefined>
  /** Update value and message of the active alert with this key; false when none is active. */
  updateAlert(key: string, patch: { value: number; message: string }, now: number): Promise<boolean>
  /** Resolve the active alert with this key; returns it, or undefined when none was active. */
  resolveAlert(key: string, now: number): Promise<AlertRecord | undefined>

  /**
   * Optional, for stores shared by several processes: call `listener` soon
   * after ANY process commits new arrivals or releases (PostgreSQL:
   * LISTEN/NOTIFY), so long-polls on every broker wake at once. May also
   * fire spuriously (e.g. after reconnecting). Returns an unsubscribe
   * function. Readers still poll as a fallback; correctness never depends on it.
   */
  subscribe?(listener: () => void): () => void

  close(): Promise<void>
}

export interface BrokerStoreOptions {
  /** Directory for file-based stores (SQLite): `<dataDir>/broker.db`. */
  dataDir: string
  /** Connection URL for server stores (PostgreSQL). */
  url?: string
  /**
   * Opened by a long-running broker: SQLite then commits on a writer thread
   * (sqlite-threaded.ts). Short-lived commands (tokens) leave it off.
   */
  writerThread?: boolean
  /** Where a server store reports what an operator should see (the PostgreSQL primary in use, a switch). */
  log?: (level: 'info' | 'warn', message: string, fields?: Record<string, unknown>) => void
}

export type BrokerStoreFactory = (options: BrokerStoreOptions) => Promise<BrokerStore>

/**
 * Thrown by a store that cannot commit right now (disk full, database busy
 * or unreachable). The broker answers 503 with Retry-After; nothing was stored.
 */
export class StoreUnavailableError extends Error {
  readonly code = 'STORE_UNAVAILABLE'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'StoreUnavailableError'
  }
}
