/**
 * Schema of the PostgreSQL broker store, as numbered migrations. They run at
 * start under a transaction-scoped advisory lock, so several brokers starting
 * at once apply each migration exactly once; `rmq_schema_version` records
 * which ones are in. Append new migrations, never edit an applied one.
 *
 * Text that is compared or ordered (node, epoch, topic) uses COLLATE "C":
 * byte order, as in SQLite, whatever the database's locale. Payloads are
 * bytea because PostgreSQL text cannot hold U+0000.
 */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE rmq_meta (
    id integer PRIMARY KEY CHECK (id = 1),
    watermark bigint,
    next_position bigint NOT NULL,
    next_arrival bigint NOT NULL,
    held bigint NOT NULL,
    ingested bigint NOT NULL
  );
  INSERT INTO rmq_meta (id, watermark, next_position, next_arrival, held, ingested) VALUES (1, NULL, 1, 1, 0, 0);
  -- Purge keeps its own counter so that it never waits for the ingest lock.
  CREATE TABLE rmq_purged (
    id integer PRIMARY KEY CHECK (id = 1),
    purged bigint NOT NULL
  );
  INSERT INTO rmq_purged (id, purged) VALUES (1, 0);
  CREATE TABLE rmq_messages (
    arrival bigint PRIMARY KEY,
    node text COLLATE "C" NOT NULL,
    epoch text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    topic text COLLATE "C" NOT NULL,
    ts bigint NOT NULL,
    payload bytea NOT NULL,
    enc text NOT NULL,
    content_type text,
    priority integer NOT NULL,
    expires_at bigint,
    headers text,
    received_at bigint NOT NULL,
    position bigint UNIQUE,
    late boolean NOT NULL DEFAULT false,
    UNIQUE (node, epoch, seq)
  );
  CREATE INDEX rmq_messages_held ON rmq_messages (ts, node, seq, epoch) WHERE position IS NULL;
  CREATE TABLE rmq_nodes (
    node text COLLATE "C" PRIMARY KEY,
    epoch text NOT NULL,
    direct boolean NOT NULL,
    first_seen bigint NOT NULL,
    last_contact bigint NOT NULL,
    last_sync bigint,
    clock_skew bigint NOT NULL,
    last_clock bigint NOT NULL,
    backlog_pending bigint NOT NULL,
    backlog_bytes bigint NOT NULL,
    backlog_oldest_ts bigint,
    low_mark bigint NOT NULL,
    stats text,
    received bigint NOT NULL,
    duplicates bigint NOT NULL,
    late bigint NOT NULL,
    batches bigint NOT NULL
  );
  CREATE TABLE rmq_tokens (
    node text COLLATE "C" PRIMARY KEY,
    hash text NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    last_used_at bigint
  );
  CREATE TABLE rmq_groups (
    name text COLLATE "C" NOT NULL,
    ord text COLLATE "C" NOT NULL,
    position bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (name, ord)
  );
  `,
  // 2: alerts (src/broker/alerts.ts). At most one active alert per key, across all brokers.
  `
  CREATE TABLE rmq_alerts (
    id bigserial PRIMARY KEY,
    key text COLLATE "C" NOT NULL,
    rule text NOT NULL,
    node text COLLATE "C" NOT NULL,
    state text NOT NULL,
    severity text NOT NULL,
    message text NOT NULL,
    value bigint NOT NULL,
    threshold bigint NOT NULL,
    fired_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    resolved_at bigint
  );
  CREATE UNIQUE INDEX rmq_alerts_active ON rmq_alerts (key) WHERE state = 'active';
  `,
  // The node's last committed batch: a pipelined batch's backlog.unacked is checked against it.
  `ALTER TABLE rmq_nodes ADD COLUMN last_batch text COLLATE "C"`,
  // The batch the last committed one named in backlog.unacked, and that one's low mark without it.
  `ALTER TABLE rmq_nodes ADD COLUMN waiting_for text COLLATE "C", ADD COLUMN ahead_low_mark bigint`,
  // Requests accepted from the node's current epoch (EPOCH_BATCHES_UPDATE); 0 for nodes seen before it.
  `ALTER TABLE rmq_nodes ADD COLUMN epoch_batches bigint NOT NULL DEFAULT 0`,
  // Messages accepted from, and the highest seq of, the node's current epoch (EPOCH_SEQS_UPDATE).
  `ALTER TABLE rmq_nodes ADD COLUMN epoch_received bigint NOT NULL DEFAULT 0,
     ADD COLUMN epoch_max_seq bigint NOT NULL DEFAULT 0`,
  // Tokens are named credentials with a role, grants, an expiry and a rotated-out previous hash;
  // a token keyed by its node keeps working as role node (its name is the node id).
  `ALTER TABLE rmq_tokens RENAME COLUMN node TO name;
   ALTER TABLE rmq_tokens ADD COLUMN role text NOT NULL DEFAULT 'node',
     ADD COLUMN topic_grants text, ADD COLUMN group_grants text, ADD COLUMN expires_at bigint,
     ADD COLUMN previous_hash text UNIQUE, ADD COLUMN previous_until bigint`,
]

/** Key of the transaction-scoped advisory lock that serializes migrations ('rmq' + 1). */
export const MIGRATION_LOCK_KEY = 0x726d7101

/** LISTEN/NOTIFY channel: a commit added arrivals or released messages. */
export const NOTIFY_CHANNEL = 'rmq_messages'
