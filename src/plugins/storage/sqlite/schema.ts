/**
 * The outbox schema (docs/storage.md, "Schema") and the migrations of older
 * files (run by migrate.ts when a file is opened). Only SQL: the package's
 * type declarations export SCHEMA_VERSION from here without better-sqlite3's.
 */

const SMALL_TABLES = `
   CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
   CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE queue_totals (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     pending INTEGER NOT NULL, pending_bytes INTEGER NOT NULL,
     sent INTEGER NOT NULL, sent_bytes INTEGER NOT NULL,
     appended_total INTEGER NOT NULL, sent_total INTEGER NOT NULL,
     expired_total INTEGER NOT NULL, dropped_total INTEGER NOT NULL
   );
   INSERT INTO queue_totals VALUES (1, 0, 0, 0, 0, 0, 0, 0, 0);`

/**
 * The queue state, apart from the immutable messages (schema 2): `pending`
 * holds one narrow row per pending message (deleted when it is sent), `sent`
 * one row per run of consecutive seqs marked sent together. Sending a batch
 * so rewrites a few narrow pages instead of every message row.
 */
const QUEUE_TABLES = `
   CREATE TABLE pending (
     priority INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     ts INTEGER NOT NULL,
     expires_at INTEGER,
     size INTEGER NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (priority, seq)
   ) WITHOUT ROWID;
   CREATE INDEX pending_ts ON pending (ts);
   CREATE TABLE sent (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, sent_at INTEGER NOT NULL);
   CREATE INDEX sent_at ON sent (sent_at);`

/** Epoch ms as ISO 8601 text, in SQL (any sqlite3 shell, no extension). */
const iso = (col: string) => `strftime('%Y-%m-%dT%H:%M:%fZ', ${col} / 1000.0, 'unixepoch')`

/**
 * The operator's view (schema 3, docs/storage.md "Looking inside"): every
 * stored message with its status, so that
 * `sqlite3 outbox.db "select seq, topic, status, ts_iso from outbox order by seq desc limit 10"`
 * answers "what is waiting?". Status is membership in `pending` (expired once
 * past expires_at by the database clock) or in a `sent` run. A view costs
 * nothing on the write path.
 */
export const outboxStatusSql = (now: string) => `CASE
       WHEN p.seq IS NOT NULL THEN
         CASE WHEN m.expires_at IS NOT NULL AND m.expires_at <= ${now} THEN 'expired' ELSE 'pending' END
       WHEN s.first IS NOT NULL THEN 'sent'
       ELSE 'expired' END`

/** FROM clause of the view: `m` messages, `p` its pending row, `s` the sent run holding it. */
export const OUTBOX_FROM_SQL = `messages m
     LEFT JOIN pending p ON p.priority = m.priority AND p.seq = m.seq
     LEFT JOIN sent s ON s.first = (SELECT max(first) FROM sent WHERE first <= m.seq) AND s.last >= m.seq`

const OUTBOX_VIEW = `
   CREATE VIEW outbox AS
   SELECT m.seq, m.topic, m.payload, m.content_type, m.ts, m.arrived_at, m.expires_at, m.priority,
     ${outboxStatusSql("CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)")} AS status,
     s.sent_at, m.headers,
     ${iso('m.ts')} AS ts_iso, ${iso('m.arrived_at')} AS arrived_at_iso,
     ${iso('m.expires_at')} AS expires_at_iso, ${iso('s.sent_at')} AS sent_at_iso
   FROM ${OUTBOX_FROM_SQL};`

/** A new file gets the current schema at once. */
export const CREATE_SCHEMA = `CREATE TABLE messages (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     topic TEXT NOT NULL,
     payload BLOB NOT NULL,
     content_type TEXT,
     ts INTEGER NOT NULL,
     arrived_at INTEGER NOT NULL,
     expires_at INTEGER,
     priority INTEGER NOT NULL,
     headers TEXT,
     size INTEGER NOT NULL
   );
   CREATE INDEX messages_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
   ${QUEUE_TABLES}
   ${SMALL_TABLES}
   ${OUTBOX_VIEW}`

/**
 * Each entry moves an existing file from version i+1 to i+2 (PRAGMA
 * user_version); version 1 files were created with the schema of 1.
 */
export const MIGRATIONS: string[] = [
  // 1 -> 2: queue state out of `messages`. Each pending row gets its `pending`
  // row; sent rows become runs of consecutive seqs with one sent_at (gaps and
  // islands). The old status/sent_at/attempts columns stay, unused, so the
  // migration does not rewrite every message.
  `${QUEUE_TABLES}
   INSERT INTO pending (priority, seq, ts, expires_at, size, attempts)
     SELECT priority, seq, ts, expires_at, size, attempts FROM messages WHERE status = 0;
   INSERT INTO sent (first, last, sent_at)
     SELECT min(seq), max(seq), sent_at FROM (
       SELECT seq, coalesce(sent_at, 0) AS sent_at,
         seq - row_number() OVER (PARTITION BY coalesce(sent_at, 0) ORDER BY seq) AS island
       FROM messages WHERE status = 1)
     GROUP BY sent_at, island;
   DROP INDEX messages_pending;
   DROP INDEX messages_pending_ts;
   DROP INDEX messages_sent;
   -- Every write of schema 1 code updates \`totals\`: a process of an older rmq that had the file
   -- open fails loudly (no such table) instead of appending messages that would never be queued.
   ALTER TABLE totals RENAME TO queue_totals;`,
  // 2 -> 3: the operator's view of every message with its status.
  OUTBOX_VIEW,
]

export const SCHEMA_VERSION = MIGRATIONS.length + 1
