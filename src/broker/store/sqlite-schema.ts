/**
 * The SQLite broker store's schema and its migrations in place.
 *
 * Schema 4: tokens are named credentials with a role, grants, an expiry
 * and a rotated-out previous hash (src/broker/authorization.ts).
 * Schema 3. Messages are written once: a stream id instead of (node, epoch)
 * text in every row and its dedup index, a topic id instead of the topic
 * text, and the event order in `events` (position -> arrival). A message
 * released as it is stored carries its position in its row; one released
 * later (held first, listed in `held` by ts) gets a narrow `released_later`
 * row instead of a rewrite of the message. `topic_blocks` lists, for each
 * topic, the blocks of TOPIC_BLOCK arrivals (ord 0) and event positions
 * (ord 1) that hold at least one of its messages, so that a topic filter
 * reads only those blocks (sqlite-read.ts). docs/broker-storage.md has the why.
 */
import type BetterSqlite3 from 'better-sqlite3'

export const SCHEMA_VERSION = 4

/** Keys (arrivals or positions) per block of the topic block index: block = key / TOPIC_BLOCK. */
export const TOPIC_BLOCK = 1024

const MESSAGES = `CREATE TABLE IF NOT EXISTS messages (
  arrival INTEGER PRIMARY KEY,
  stream INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  ts INTEGER NOT NULL,
  topic_id INTEGER NOT NULL,
  payload TEXT NOT NULL,
  enc TEXT NOT NULL,
  content_type TEXT,
  priority INTEGER NOT NULL,
  expires_at INTEGER,
  headers TEXT,
  received_at INTEGER NOT NULL,
  late INTEGER NOT NULL DEFAULT 0,
  position INTEGER,
  UNIQUE (stream, seq)
);`
const EVENTS = `CREATE TABLE IF NOT EXISTS events (
  position INTEGER PRIMARY KEY,
  arrival INTEGER NOT NULL,
  topic_id INTEGER NOT NULL
);`
const TOPIC_BLOCKS = `CREATE TABLE IF NOT EXISTS topic_blocks (
  ord INTEGER NOT NULL,
  topic_id INTEGER NOT NULL,
  block INTEGER NOT NULL,
  PRIMARY KEY (ord, topic_id, block)
) WITHOUT ROWID;`
const HELD = `CREATE TABLE IF NOT EXISTS held (
  ts INTEGER NOT NULL,
  arrival INTEGER NOT NULL,
  stream INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  topic_id INTEGER NOT NULL,
  PRIMARY KEY (ts, arrival)
) WITHOUT ROWID;`

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS broker_meta (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  schema_version INTEGER NOT NULL,
  watermark INTEGER,
  next_position INTEGER NOT NULL,
  next_arrival INTEGER NOT NULL
);
INSERT INTO broker_meta (id, schema_version, watermark, next_position, next_arrival)
  VALUES (1, ${SCHEMA_VERSION}, NULL, 1, 1) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS topics (
  id INTEGER PRIMARY KEY,
  topic TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS streams (
  id INTEGER PRIMARY KEY,
  node TEXT NOT NULL,
  epoch TEXT NOT NULL,
  UNIQUE (node, epoch)
);
${MESSAGES}
${EVENTS}
CREATE TABLE IF NOT EXISTS released_later (
  arrival INTEGER PRIMARY KEY,
  position INTEGER NOT NULL
);
${HELD}
${TOPIC_BLOCKS}
CREATE TABLE IF NOT EXISTS nodes (
  node TEXT PRIMARY KEY,
  epoch TEXT NOT NULL,
  direct INTEGER NOT NULL,
  first_seen INTEGER NOT NULL,
  last_contact INTEGER NOT NULL,
  last_sync INTEGER,
  clock_skew INTEGER NOT NULL,
  last_clock INTEGER NOT NULL,
  backlog_pending INTEGER NOT NULL,
  backlog_bytes INTEGER NOT NULL,
  backlog_oldest_ts INTEGER,
  low_mark INTEGER NOT NULL,
  stats TEXT,
  last_batch TEXT,
  waiting_for TEXT,
  ahead_low_mark INTEGER,
  received INTEGER NOT NULL,
  duplicates INTEGER NOT NULL,
  late INTEGER NOT NULL,
  batches INTEGER NOT NULL,
  epoch_batches INTEGER NOT NULL DEFAULT 0,
  epoch_received INTEGER NOT NULL DEFAULT 0,
  epoch_max_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
  name TEXT PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  last_used_at INTEGER,
  role TEXT NOT NULL DEFAULT 'node',
  topic_grants TEXT,
  group_grants TEXT,
  expires_at INTEGER,
  previous_hash TEXT,
  previous_until INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_previous ON tokens (previous_hash) WHERE previous_hash IS NOT NULL;
CREATE TABLE IF NOT EXISTS consumer_groups (
  name TEXT NOT NULL,
  ord TEXT NOT NULL,
  position INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (name, ord)
);
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL,
  rule TEXT NOT NULL,
  node TEXT NOT NULL,
  state TEXT NOT NULL,
  severity TEXT NOT NULL,
  message TEXT NOT NULL,
  value INTEGER NOT NULL,
  threshold INTEGER NOT NULL,
  fired_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  resolved_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_active ON alerts (key) WHERE state = 'active';
`

/**
 * Schema 1 -> 2: schema 1 kept node and epoch in every message row and
 * released a message by writing its position column. The schema 2 tables
 * are spelled out here as they were; 2 -> 3 follows.
 */
const MIGRATE_1_TO_2 = `
DROP INDEX IF EXISTS messages_held;
DROP INDEX IF EXISTS messages_position;
ALTER TABLE messages RENAME TO messages_v1;
CREATE TABLE streams (id INTEGER PRIMARY KEY, node TEXT NOT NULL, epoch TEXT NOT NULL, UNIQUE (node, epoch));
CREATE TABLE messages (arrival INTEGER PRIMARY KEY, stream INTEGER NOT NULL, seq INTEGER NOT NULL,
  ts INTEGER NOT NULL, topic TEXT NOT NULL, payload TEXT NOT NULL, enc TEXT NOT NULL, content_type TEXT,
  priority INTEGER NOT NULL, expires_at INTEGER, headers TEXT, received_at INTEGER NOT NULL,
  late INTEGER NOT NULL DEFAULT 0, position INTEGER, UNIQUE (stream, seq));
CREATE TABLE events (position INTEGER PRIMARY KEY, arrival INTEGER NOT NULL);
CREATE TABLE released_later (arrival INTEGER PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE held (ts INTEGER NOT NULL, arrival INTEGER NOT NULL, stream INTEGER NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (ts, arrival)) WITHOUT ROWID;
INSERT INTO streams (node, epoch) SELECT DISTINCT node, epoch FROM messages_v1 ORDER BY node, epoch;
INSERT INTO messages (arrival, stream, seq, ts, topic, payload, enc, content_type, priority, expires_at, headers,
    received_at, late, position)
  SELECT m.arrival, s.id, m.seq, m.ts, m.topic, m.payload, m.enc, m.content_type, m.priority, m.expires_at,
    m.headers, m.received_at, m.late, m.position
  FROM messages_v1 m JOIN streams s ON s.node = m.node AND s.epoch = m.epoch ORDER BY m.arrival;
INSERT INTO events (position, arrival) SELECT position, arrival FROM messages_v1 WHERE position IS NOT NULL
  ORDER BY position;
INSERT INTO held (ts, arrival, stream, seq)
  SELECT m.ts, m.arrival, s.id, m.seq FROM messages_v1 m JOIN streams s ON s.node = m.node AND s.epoch = m.epoch
  WHERE m.position IS NULL;
DROP TABLE messages_v1;
UPDATE broker_meta SET schema_version = 2 WHERE id = 1;
`

/**
 * Schema 2 -> 3: the topics table, messages, events and held rebuilt with
 * a topic id (one pass over each, in key order), and the topic blocks.
 */
const MIGRATE_2_TO_3 = `
CREATE TABLE topics (id INTEGER PRIMARY KEY, topic TEXT NOT NULL UNIQUE);
INSERT INTO topics (topic) SELECT DISTINCT topic FROM messages ORDER BY topic;
ALTER TABLE messages RENAME TO messages_v2;
ALTER TABLE events RENAME TO events_v2;
ALTER TABLE held RENAME TO held_v2;
${MESSAGES}
${EVENTS}
${HELD}
${TOPIC_BLOCKS}
INSERT INTO messages (arrival, stream, seq, ts, topic_id, payload, enc, content_type, priority, expires_at,
    headers, received_at, late, position)
  SELECT m.arrival, m.stream, m.seq, m.ts, t.id, m.payload, m.enc, m.content_type, m.priority, m.expires_at,
    m.headers, m.received_at, m.late, m.position
  FROM messages_v2 m JOIN topics t ON t.topic = m.topic ORDER BY m.arrival;
INSERT INTO events (position, arrival, topic_id)
  SELECT e.position, e.arrival, COALESCE(m.topic_id, 0) FROM events_v2 e LEFT JOIN messages m ON m.arrival = e.arrival
  ORDER BY e.position;
INSERT INTO held (ts, arrival, stream, seq, topic_id)
  SELECT h.ts, h.arrival, h.stream, h.seq, COALESCE(m.topic_id, 0) FROM held_v2 h
  LEFT JOIN messages m ON m.arrival = h.arrival;
INSERT INTO topic_blocks (ord, topic_id, block)
  SELECT DISTINCT 0, topic_id, arrival / ${TOPIC_BLOCK} FROM messages;
INSERT INTO topic_blocks (ord, topic_id, block)
  SELECT DISTINCT 1, topic_id, position / ${TOPIC_BLOCK} FROM events;
DROP TABLE messages_v2;
DROP TABLE events_v2;
DROP TABLE held_v2;
UPDATE broker_meta SET schema_version = 3 WHERE id = 1;
`

/**
 * Schema 3 -> 4: a token was keyed by its node; now by a credential name
 * (a node token's name is its node id) with a role, and every existing
 * token keeps working as role `node`.
 */
const MIGRATE_3_TO_4_TOKENS = `
ALTER TABLE tokens RENAME COLUMN node TO name;
ALTER TABLE tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'node';
ALTER TABLE tokens ADD COLUMN topic_grants TEXT;
ALTER TABLE tokens ADD COLUMN group_grants TEXT;
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN previous_hash TEXT;
ALTER TABLE tokens ADD COLUMN previous_until INTEGER;
`

/** Bring a store at `version` (SCHEMA_VERSION for a new file) to the current schema; inside a transaction. */
export function migrate(db: BetterSqlite3.Database, version: number): void {
  if (version === 1) db.exec(MIGRATE_1_TO_2)
  if (version <= 2) db.exec(MIGRATE_2_TO_3)
  if (version <= 3) {
    // A store that never had a tokens table gets the new one from SCHEMA below.
    const columns = db.prepare("SELECT name FROM pragma_table_info('tokens')").pluck().all()
    if (columns.includes('node')) db.exec(MIGRATE_3_TO_4_TOKENS)
    db.exec(`UPDATE broker_meta SET schema_version = ${SCHEMA_VERSION} WHERE id = 1`)
  }
  db.exec(SCHEMA)
}
