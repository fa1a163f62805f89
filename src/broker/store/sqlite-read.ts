/**
 * Reads of the SQLite broker store: pages of the event or arrival stream,
 * filtered by topic through the topic index (schema 3), and the report of
 * what is held behind the watermark.
 *
 * A filter is resolved to the ids of the topics it matches (the topic list
 * is cached per connection and refreshed when new topics appear). When few
 * topics match, each one's index (topic_id, position) or (topic_id, arrival)
 * gives its next `limit` keys and the smallest `limit` of them make the page
 * (a k-way merge): a match after a million other messages costs a few index
 * seeks. When many topics match, matches are dense anyway and a bounded scan
 * of the stream's narrow (key, topic_id) columns is cheaper; it stops after
 * READ_MAX_ROWS rows with `more: true`. docs/broker-storage.md has the
 * measurements.
 *
 * Every page is read in one read transaction, so `head` and the rows agree:
 * a page that found nothing up to the head can say `next: head` safely
 * (positions are never assigned below a committed head).
 */
import { toMessage, type MessageRow } from './node-rows.js'
import { holdFloor, liveSince } from './holders.js'
import type BetterSqlite3 from 'better-sqlite3'
import { topicMatcher } from '../../protocol/topic-filter.js'
import { TOPIC_BLOCK } from './sqlite-schema.js'
import {
  HELD_COUNT_MAX,
  HELD_NODES_MAX,
  READ_MAX_ROWS,
  type HeldQuery,
  type HeldReport,
  type ReadQuery,
  type ReadResult,
  type StoredMessage,
} from './types.js'

/** At most this many matching topics are read through the topic block index; more fall back to a scan. */
export const MERGE_MAX_TOPICS = 64
/** Blocks listed per matching topic and read. */
const BLOCKS_PER_TOPIC = 128
/** The fallback scan: rows per statement (READ_MAX_ROWS per read before it answers `more: true`). */
const SCAN_CHUNK = 5000
/** Filters whose matching topic ids are kept (least recently used dropped first). */
const FILTER_CACHE = 256

/** Columns of a message read back, with its stream's node and epoch and `position` (NULL while held). */
const readColumns = (position: string) =>
  'm.arrival, s.node, s.epoch, m.seq, t.topic, m.ts, m.payload, m.enc, m.content_type, m.priority, ' +
  `m.expires_at, m.headers, m.received_at, ${position} AS position, m.late`

const EVENT_FROM =
  'FROM events e CROSS JOIN messages m ON m.arrival = e.arrival JOIN streams s ON s.id = m.stream ' +
  'JOIN topics t ON t.id = m.topic_id'
const ARRIVAL_FROM =
  'FROM messages m JOIN streams s ON s.id = m.stream JOIN topics t ON t.id = m.topic_id ' +
  'LEFT JOIN released_later r ON r.arrival = m.arrival'
const IN_JSON = 'IN (SELECT value FROM json_each(?))'

function prepare(db: BetterSqlite3.Database) {
  const ev = readColumns('e.position')
  const ar = readColumns('COALESCE(m.position, r.position)')
  return {
    meta: db.prepare<[], { watermark: number | null; next_position: number; next_arrival: number }>(
      'SELECT watermark, next_position, next_arrival FROM broker_meta WHERE id = 1',
    ),
    newTopics: db.prepare<[number], [number, string]>('SELECT id, topic FROM topics WHERE id > ?').raw(),
    blocksOfTopic: db
      .prepare<[number, number, number, number, number], number>(
        `SELECT block FROM topic_blocks WHERE ord = ? AND topic_id = ? AND block >= ? AND block <= ?
         ORDER BY block LIMIT ?`,
      )
      .pluck(),
    event: {
      range: db.prepare<[number, number, number], MessageRow>(
        `SELECT ${ev} ${EVENT_FROM} WHERE e.position > ? AND e.position <= ? ORDER BY e.position LIMIT ?`,
      ),
      scan: db
        .prepare<[number, number, number], [number, number]>(
          'SELECT position, topic_id FROM events WHERE position > ? AND position <= ? ORDER BY position LIMIT ?',
        )
        .raw(),
      byKeys: db.prepare<[string], MessageRow>(
        `SELECT ${ev} ${EVENT_FROM} WHERE e.position ${IN_JSON} ORDER BY e.position`,
      ),
    },
    arrival: {
      range: db.prepare<[number, number, number], MessageRow>(
        `SELECT ${ar} ${ARRIVAL_FROM} WHERE m.arrival > ? AND m.arrival <= ? ORDER BY m.arrival LIMIT ?`,
      ),
      scan: db
        .prepare<[number, number, number], [number, number]>(
          'SELECT arrival, topic_id FROM messages WHERE arrival > ? AND arrival <= ? ORDER BY arrival LIMIT ?',
        )
        .raw(),
      byKeys: db.prepare<[string], MessageRow>(
        `SELECT ${ar} ${ARRIVAL_FROM} WHERE m.arrival ${IN_JSON} ORDER BY m.arrival`,
      ),
    },
    heldAll: db.prepare<[number], number>('SELECT COUNT(*) FROM (SELECT 1 FROM held LIMIT ?)').pluck(),
    // The oldest `limit` held rows at most (held is ordered by ts): the work is bounded however many are held.
    heldOfTopics: db.prepare<[string, string, number], { scanned: number; n: number; newest: number | null }>(
      `SELECT COUNT(*) AS scanned, COALESCE(SUM(topic_id ${IN_JSON}), 0) AS n,
         MAX(CASE WHEN topic_id ${IN_JSON} THEN ts END) AS newest FROM (SELECT ts, topic_id FROM held LIMIT ?)`,
    ),
    heldNewest: db.prepare<[], number | null>('SELECT MAX(ts) FROM held').pluck(),
    holders: db.prepare<
      [number, number, number, number],
      { node: string; low_mark: number; last_contact: number }
    >(
      `SELECT node, low_mark, last_contact FROM nodes
       WHERE direct = 0 AND last_contact >= ? AND low_mark >= ? AND low_mark <= ? ORDER BY low_mark, node LIMIT ?`,
    ),
  }
}

/**
 * The keys of matching rows in `ranges` ((lo, hi], ascending), at most
 * `limit`, examining at most READ_MAX_ROWS rows. `next` is the last key
 * examined when it stopped early, else `end`: rows between the ranges hold
 * no match.
 */
function scanRanges(
  scan: BetterSqlite3.Statement<[number, number, number], [number, number]>,
  want: Set<number>,
  ranges: [number, number][],
  end: number,
  limit: number,
): { keys: number[]; next: number } {
  const keys: number[] = []
  let scanned = 0
  for (const [lo, hi] of ranges) {
    let from = lo
    for (;;) {
      if (scanned >= READ_MAX_ROWS) return { keys, next: from }
      const rows = scan.all(from, hi, SCAN_CHUNK)
      scanned += rows.length
      for (const [k, topic] of rows) if (want.has(topic) && keys.push(k) >= limit) return { keys, next: k }
      if (rows.length < SCAN_CHUNK) break
      from = rows[rows.length - 1][0]
    }
  }
  return { keys, next: end }
}

export class SqliteReader {
  private readonly s: ReturnType<typeof prepare>
  /** Every committed topic this connection has seen, by id. */
  private readonly topics = new Map<number, string>()
  private maxTopic = 0
  /** Matching topic ids of recent filters (kept up to date as topics appear). */
  private readonly filters = new Map<string, number[]>()
  private readonly readTx: BetterSqlite3.Transaction<(q: ReadQuery) => ReadResult>
  private readonly heldTx: BetterSqlite3.Transaction<(q: HeldQuery) => HeldReport>

  constructor(db: BetterSqlite3.Database) {
    this.s = prepare(db)
    // Deferred transactions: one snapshot per page, no write lock.
    this.readTx = db.transaction((q: ReadQuery) => this.readSync(q))
    this.heldTx = db.transaction((q: HeldQuery) => this.heldSync(q))
  }

  read(q: ReadQuery): ReadResult {
    return this.readTx(q)
  }

  heldBack(q: HeldQuery): HeldReport {
    return this.heldTx(q)
  }

  private refreshTopics(): void {
    const rows = this.s.newTopics.all(this.maxTopic)
    if (rows.length === 0) return
    for (const [id, topic] of rows) {
      this.topics.set(id, topic)
      if (id > this.maxTopic) this.maxTopic = id
    }
    for (const [filter, ids] of this.filters) {
      const match = topicMatcher(filter)
      for (const [id, topic] of rows) if (match(topic)) ids.push(id)
    }
  }

  /** Ids of the topics `filter` matches (call refreshTopics first). */
  private matching(filter: string): number[] {
    let ids = this.filters.get(filter)
    if (ids) {
      this.filters.delete(filter)
    } else {
      const match = topicMatcher(filter)
      ids = []
      for (const [id, topic] of this.topics) if (match(topic)) ids.push(id)
      if (this.filters.size >= FILTER_CACHE) this.filters.delete(this.filters.keys().next().value!)
    }
    this.filters.set(filter, ids)
    return ids
  }

  private readSync(q: ReadQuery): ReadResult {
    const meta = this.s.meta.get()!
    const head = q.order === 'event' ? meta.next_position - 1 : meta.next_arrival - 1
    const st = q.order === 'event' ? this.s.event : this.s.arrival
    const done = (messages: StoredMessage[], next: number): ReadResult => ({
      messages,
      next,
      more: next < head,
      head,
      watermark: meta.watermark,
    })
    if (q.after >= head) return done([], q.after)
    const key = (m: StoredMessage) => (q.order === 'event' ? m.position! : m.arrival)
    const all = () => {
      const messages = st.range.all(q.after, head, q.limit).map(toMessage)
      return done(messages, messages.length === q.limit ? key(messages[messages.length - 1]) : head)
    }
    if (q.topic === undefined || q.topic === '#') return all()
    this.refreshTopics()
    const ids = this.matching(q.topic)
    if (ids.length === 0) return done([], head)
    // Every topic stored matches (all were read in this transaction): the filter leaves nothing out.
    if (ids.length === this.topics.size) return all()
    const want = new Set(ids)
    let ranges: [number, number][]
    let end = head
    if (ids.length <= MERGE_MAX_TOPICS) {
      // Only the blocks that hold a message of a matching topic are read.
      const first = Math.floor((q.after + 1) / TOPIC_BLOCK)
      let bound = Math.floor(head / TOPIC_BLOCK)
      const candidates: number[] = []
      for (const id of ids) {
        const blocks = this.s.blocksOfTopic.all(
          q.order === 'event' ? 1 : 0,
          id,
          first,
          bound,
          BLOCKS_PER_TOPIC,
        )
        for (const b of blocks) candidates.push(b)
        // Listed up to its last block only: the candidates are complete up to there.
        if (blocks.length === BLOCKS_PER_TOPIC) bound = Math.min(bound, blocks[blocks.length - 1])
      }
      candidates.sort((a, b) => a - b)
      if (bound < Math.floor(head / TOPIC_BLOCK)) end = Math.min(head, (bound + 1) * TOPIC_BLOCK - 1)
      ranges = []
      for (const b of candidates) {
        if (b > bound) break
        const lo = Math.max(q.after, b * TOPIC_BLOCK - 1)
        const hi = Math.min(head, (b + 1) * TOPIC_BLOCK - 1)
        const prev = ranges[ranges.length - 1]
        if (prev && prev[1] >= lo) prev[1] = Math.max(prev[1], hi)
        else ranges.push([lo, hi])
      }
    } else {
      // Many topics match: they are dense, a scan of the stream is cheaper than the block lists.
      ranges = [[q.after, head]]
    }
    const { keys, next } = scanRanges(st.scan, want, ranges, end, q.limit)
    const messages = keys.length === 0 ? [] : st.byKeys.all(JSON.stringify(keys)).map(toMessage)
    return done(messages, next)
  }

  private heldSync(q: HeldQuery): HeldReport {
    let n: number
    let capped: boolean
    let newest: number | null
    if (q.topic === undefined || q.topic === '#') {
      n = this.s.heldAll.get(HELD_COUNT_MAX + 1)!
      capped = n > HELD_COUNT_MAX
      newest = n > 0 ? this.s.heldNewest.get()! : null
    } else {
      this.refreshTopics()
      const ids = this.matching(q.topic)
      if (ids.length === 0) return { count: 0, capped: false, nodes: [] }
      const json = JSON.stringify(ids)
      const r = this.s.heldOfTopics.get(json, json, HELD_COUNT_MAX + 1)!
      n = r.n
      capped = r.scanned > HELD_COUNT_MAX
      // Counting stopped early: the newest of all held bounds the holders from above.
      newest = capped ? this.s.heldNewest.get()! : r.newest
    }
    if ((n === 0 && !capped) || newest === null) return { count: 0, capped: false, nodes: [] }
    const nodes = this.s.holders
      .all(liveSince(q), holdFloor(q), newest, HELD_NODES_MAX)
      .map((r) => ({ node: r.node, lowMark: r.low_mark, lastContact: r.last_contact }))
    return { count: Math.min(n, HELD_COUNT_MAX), capped, nodes }
  }
}
