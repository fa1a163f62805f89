/**
 * Every prepared statement of the SQLite broker store's ingest, release,
 * node and purge paths (sqlite-ingest.ts, sqlite.ts), in one place: the SQL
 * is written once and prepared once per connection. Tokens, groups and
 * alerts are in sqlite-admin.ts (SQL shared with PostgreSQL).
 */
import type BetterSqlite3 from 'better-sqlite3'
import { TOPIC_BLOCK } from './sqlite-schema.js'
import {
  EPOCH_BATCHES_UPDATE,
  EPOCH_SEQS_UPDATE,
  NODE_COLUMNS,
  NODE_REPORT_UPDATE,
  type NodeRow,
} from './node-rows.js'

export interface MetaRow {
  watermark: number | null
  next_position: number
  next_arrival: number
}

export interface Stream {
  id: number
  node: string
  epoch: string
}

/** Rows per multi-row INSERT of messages, and its columns. */
export const INSERT_ROWS = 32
export const INSERT_COLUMNS = 14
/** Rows per bulk INSERT (fast group path), its per-statement constants and per-row columns. */
export const BULK_ROWS = 100
export const BULK_CONSTANTS = 8
export const BULK_COLUMNS = 6
/** Rows per INSERT into events/held/released_later. */
export const PAIR_ROWS = 200

export function insertSql(rows: number): string {
  return (
    `INSERT INTO messages (arrival, stream, seq, topic_id, ts, payload, enc, content_type, priority, expires_at, headers,
       received_at, late, position) VALUES ` +
    Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ') +
    ' ON CONFLICT (stream, seq) DO NOTHING'
  )
}

/**
 * @internal Its inferred type names better-sqlite3's internal Statement
 * namespace, which a declaration file cannot: the store's statements are
 * not part of the package's types (stripInternal).
 */
export function prepareStatements(db: BetterSqlite3.Database) {
  const tuples = (table: 'events' | 'held' | 'released_later', cols: string[], rows: number) =>
    db.prepare(
      `INSERT INTO ${table} (${cols.join(', ')}) VALUES ` +
        Array.from({ length: rows }, () => `(${cols.map(() => '?').join(', ')})`).join(', '),
    )
  const HELD = ['ts', 'arrival', 'stream', 'seq', 'topic_id']
  const EVENT = ['position', 'arrival', 'topic_id']
  const LATER = ['arrival', 'position']
  return {
    meta: db.prepare<[], MetaRow>(
      'SELECT watermark, next_position, next_arrival FROM broker_meta WHERE id = 1',
    ),
    setArrival: db.prepare<[number]>('UPDATE broker_meta SET next_arrival = ? WHERE id = 1'),
    setRelease: db.prepare<[number | null, number]>(
      'UPDATE broker_meta SET watermark = ?, next_position = ? WHERE id = 1',
    ),
    allStreams: db.prepare<[], Stream>('SELECT id, node, epoch FROM streams'),
    findStream: db.prepare<[string, string], Stream>(
      'SELECT id, node, epoch FROM streams WHERE node = ? AND epoch = ?',
    ),
    addStream: db.prepare<[string, string], Stream>(
      'INSERT INTO streams (node, epoch) VALUES (?, ?) RETURNING id, node, epoch',
    ),
    allTopics: db.prepare<[], [number, string]>('SELECT id, topic FROM topics').raw(),
    findTopic: db.prepare<[string], number>('SELECT id FROM topics WHERE topic = ?').pluck(),
    addTopic: db.prepare<[string], number>('INSERT INTO topics (topic) VALUES (?) RETURNING id').pluck(),
    insertOne: db.prepare(insertSql(1)),
    insertMany: db.prepare(insertSql(INSERT_ROWS)),
    insertBulk: db.prepare(
      `INSERT INTO messages (arrival, stream, seq, topic_id, ts, payload, enc, content_type, priority, expires_at,
         headers, received_at, late, position)
       SELECT column1, ?, column2, column3, column4, column5, ?, ?, ?, ?, ?, ?, ?, column6
       FROM (VALUES ${Array.from({ length: BULK_ROWS }, () => '(?, ?, ?, ?, ?, ?)').join(', ')}) WHERE true
       ON CONFLICT (stream, seq) DO NOTHING`,
    ),
    holdOne: tuples('held', HELD, 1),
    holdMany: tuples('held', HELD, PAIR_ROWS),
    eventOne: tuples('events', EVENT, 1),
    eventMany: tuples('events', EVENT, PAIR_ROWS),
    laterOne: tuples('released_later', LATER, 1),
    laterMany: tuples('released_later', LATER, PAIR_ROWS),
    // The topic block index on the general path and for releases by the timer (topic_blocks, TOPIC_BLOCK).
    arrivalBlocksSince: db.prepare<[number]>(
      `INSERT OR IGNORE INTO topic_blocks (ord, topic_id, block)
       SELECT DISTINCT 0, topic_id, arrival / ${TOPIC_BLOCK} FROM messages WHERE arrival >= ?`,
    ),
    eventBlocksSince: db.prepare<[number]>(
      `INSERT OR IGNORE INTO topic_blocks (ord, topic_id, block)
       SELECT DISTINCT 1, topic_id, position / ${TOPIC_BLOCK} FROM events WHERE position >= ?`,
    ),
    laterSince: db.prepare<[number]>(
      'INSERT INTO released_later (arrival, position) SELECT arrival, position FROM events WHERE position >= ?',
    ),
    existingRange: db
      .prepare<[number, number, number], number>(
        'SELECT seq FROM messages WHERE stream = ? AND seq BETWEEN ? AND ?',
      )
      .pluck(),
    existingList: db
      .prepare<[number, string], number>(
        'SELECT seq FROM messages WHERE stream = ? AND seq IN (SELECT value FROM json_each(?))',
      )
      .pluck(),
    heldBelow: db
      .prepare<[number], [number, number, number, number, number]>(
        'SELECT arrival, ts, stream, seq, topic_id FROM held WHERE ts < ?',
      )
      .raw(),
    dropHeld: db.prepare<[number]>('DELETE FROM held WHERE ts < ?'),
    setAll: db.prepare<[number | null, number, number]>(
      'UPDATE broker_meta SET watermark = ?, next_position = ?, next_arrival = ? WHERE id = 1',
    ),
    upsertNode: db.prepare(
      `INSERT INTO nodes (node, epoch, direct, first_seen, last_contact, last_sync, clock_skew, last_clock,
         backlog_pending, backlog_bytes, backlog_oldest_ts, low_mark, stats, received, duplicates, late, batches,
         epoch_batches, last_batch, waiting_for, ahead_low_mark, epoch_received, epoch_max_seq)
       VALUES (@node, @epoch, @direct, @now, @now, @lastSync, @skew, @clock, @pending, @bytes, @oldest,
         @unackedLowMark, @stats, @received, @duplicates, @late, @batches, 1, @batch, @unacked, @lowMark,
         @received, @maxSeq)
       ON CONFLICT (node) DO UPDATE SET
         ${EPOCH_BATCHES_UPDATE('nodes')},
         ${EPOCH_SEQS_UPDATE('nodes', (a, b) => `max(${a}, ${b})`)},
         epoch = excluded.epoch, direct = excluded.direct, last_contact = excluded.last_contact,
         last_sync = COALESCE(excluded.last_sync, nodes.last_sync),
         received = nodes.received + excluded.received, duplicates = nodes.duplicates + excluded.duplicates,
         late = nodes.late + excluded.late, batches = nodes.batches + excluded.batches,
         ${NODE_REPORT_UPDATE('nodes')}`,
    ),
    liveLowMark: db.prepare<[number, number], { lm: number | null; n: number }>(
      'SELECT MIN(low_mark) AS lm, COUNT(*) AS n FROM nodes WHERE direct = 0 AND last_contact >= ? AND low_mark >= ?',
    ),
    maxHeldTs: db.prepare<[], { m: number | null }>('SELECT MAX(ts) AS m FROM held'),
    // Held messages below the watermark take the next positions in (ts, node, seq, epoch) order.
    releaseUpTo: db.prepare<[number, number]>(
      `INSERT INTO events (position, arrival, topic_id)
       SELECT ? + ROW_NUMBER() OVER (ORDER BY h.ts, s.node, h.seq, s.epoch) - 1, h.arrival, h.topic_id
       FROM held h JOIN streams s ON s.id = h.stream
       WHERE h.ts < ?`,
    ),
    counts: db.prepare<[], { held: number; total: number }>(
      'SELECT (SELECT COUNT(*) FROM held) AS held, (SELECT COUNT(*) FROM messages) AS total',
    ),
    nodes: db.prepare<[], unknown[]>(`SELECT ${NODE_COLUMNS} FROM nodes ORDER BY node`).raw(),
    node: db.prepare<[string], NodeRow>('SELECT * FROM nodes WHERE node = ?'),
    fleetVersions: db.prepare<[], { nodes: string; tokens: string }>(
      `SELECT (SELECT count(*) || ':' || total(batches) FROM nodes) AS nodes,
         (SELECT count(*) || ':' || total(created_at) || ':' || total(length(name)) FROM tokens
          WHERE role = 'node') AS tokens`,
    ),
    // Moves with every commit: data_version with those of other connections (another process, the
    // writer thread), total_changes() with this connection's own.
    changeMarks: db
      .prepare<[], [string]>(
        `SELECT (SELECT data_version FROM pragma_data_version()) || ':' || total_changes()`,
      )
      .raw(),
    nodeVersions: db.prepare<[], [string, number]>('SELECT node, batches FROM nodes ORDER BY node').raw(),
    // The ids as one JSON array parameter: no limit on how many.
    nodesNamed: db
      .prepare<[string], unknown[]>(
        `SELECT ${NODE_COLUMNS} FROM nodes WHERE node IN (SELECT value FROM json_each(?)) ORDER BY node`,
      )
      .raw(),
    purgeSelect: db
      .prepare<[number, number], [number, number]>(
        `SELECT m.arrival, COALESCE(m.position, r.position) FROM messages m
         LEFT JOIN released_later r ON r.arrival = m.arrival
         WHERE m.received_at < ? AND (m.position IS NOT NULL OR r.position IS NOT NULL)
         ORDER BY m.arrival LIMIT ?`,
      )
      .raw(),
    purgeEvents: db.prepare<[string]>(
      'DELETE FROM events WHERE position IN (SELECT value FROM json_each(?))',
    ),
    purgeLater: db.prepare<[string]>(
      'DELETE FROM released_later WHERE arrival IN (SELECT value FROM json_each(?))',
    ),
    purgeMessages: db.prepare<[string]>(
      'DELETE FROM messages WHERE arrival IN (SELECT value FROM json_each(?))',
    ),
  }
}

/** @internal */
export type Statements = ReturnType<typeof prepareStatements>
