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
import { RELEASE_LOCK_KEY, RELEASE_PASS_12 } from './postgres-pass.js'

export { RELEASE_LOCK_KEY }

/**
 * Migration 9's release pass, kept as it was applied (migrations are never
 * edited): it found the new messages by their own (tx, id) index. Migration
 * 10 replaces it with RELEASE_PASS_10, which reads them from the batch log.
 */
const RELEASE_PASS_9 = `
  CREATE FUNCTION rmq_pass(live_since bigint, hold_floor bigint, need xid8)
  RETURNS TABLE (p_frontier xid8, p_watermark bigint, p_sequenced bigint, p_released bigint)
  LANGUAGE plpgsql AS $$
  DECLARE
    m record;
    h xid8;
    w bigint;
    cand bigint;
    lm bigint;
    n bigint;
    s bigint := 0;
    r bigint := 0;
    u bigint := 0;
  BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);
    -- Plain index scans only: they mark the entries of released rows dead as they pass them, so
    -- the held index stays cheap to scan between vacuums (a bitmap scan visits them every time).
    PERFORM set_config('enable_bitmapscan', 'off', true);
    IF NOT pg_try_advisory_xact_lock(${RELEASE_LOCK_KEY}) THEN
      -- Another broker's pass runs. Once it has committed, the frontier it wrote may already cover
      -- what this pass was for (need: the newest transaction its callers wait for): then stop here.
      PERFORM pg_advisory_xact_lock(${RELEASE_LOCK_KEY});
      SELECT * INTO m FROM rmq_meta WHERE id = 1;
      IF need IS NOT NULL AND m.frontier > need THEN
        RETURN QUERY SELECT m.frontier, m.watermark, 0::bigint, 0::bigint;
        RETURN;
      END IF;
    END IF;
    h := pg_snapshot_xmin(pg_current_snapshot());
    SELECT * INTO m FROM rmq_meta WHERE id = 1;
    IF h <= m.frontier THEN
      h := m.frontier;
    END IF;
    SELECT MIN(d.low_mark), COUNT(*) INTO lm, n FROM rmq_nodes d
      WHERE NOT d.direct AND d.last_contact >= live_since AND d.low_mark >= hold_floor;
    IF n > 0 THEN
      cand := lm;
    ELSE
      SELECT GREATEST((SELECT MAX(k.ts) FROM rmq_order k WHERE k.position IS NULL),
                      (SELECT MAX(x.ts) FROM rmq_messages x WHERE x.tx >= m.frontier AND x.tx < h)) + 1
        INTO cand;
    END IF;
    w := m.watermark;
    IF cand IS NOT NULL AND (w IS NULL OR cand > w) THEN
      w := cand;
    END IF;
    -- One statement: the new messages get their arrivals; those of them below w, and the held ones
    -- below w, get event positions (a new message due at once is inserted with it, never updated).
    WITH fresh AS (
      SELECT m.next_arrival + ROW_NUMBER() OVER (ORDER BY x.tx, x.id) - 1 AS arrival,
        x.tx, x.id, x.ts, x.node, x.seq, x.epoch, x.topic
      FROM rmq_messages x WHERE x.tx >= m.frontier AND x.tx < h
    ), due AS (
      SELECT f.arrival, f.ts, f.node, f.seq, f.epoch FROM fresh f WHERE f.ts < w
      UNION ALL
      SELECT k.arrival, k.ts, k.node, k.seq, k.epoch FROM rmq_order k WHERE k.position IS NULL AND k.ts < w
    ), pos AS (
      SELECT d.arrival, m.next_position + ROW_NUMBER() OVER (ORDER BY d.ts, d.node, d.seq, d.epoch) - 1 AS p
      FROM due d
    ), ins AS (
      INSERT INTO rmq_order (arrival, tx, id, ts, node, seq, epoch, topic, position, late)
      SELECT f.arrival, f.tx, f.id, f.ts, f.node, f.seq, f.epoch, f.topic, q.p,
        q.p IS NOT NULL AND m.watermark IS NOT NULL AND f.ts < m.watermark
      FROM fresh f LEFT JOIN pos q ON q.arrival = f.arrival
      RETURNING 1
    ), upd AS (
      -- Only rows already in rmq_order match: this statement does not see what ins inserts.
      UPDATE rmq_order o SET position = q.p, late = (m.watermark IS NOT NULL AND o.ts < m.watermark)
      FROM pos q WHERE o.arrival = q.arrival
      RETURNING 1
    )
    SELECT (SELECT COUNT(*) FROM ins), (SELECT COUNT(*) FROM pos), (SELECT COUNT(*) FROM upd) INTO s, r, u;
    -- No new message and nothing moved: write nothing (the empty range below h needs no record).
    IF s > 0 OR r > 0 OR w IS DISTINCT FROM m.watermark THEN
      UPDATE rmq_meta SET watermark = w, next_position = next_position + r, next_arrival = next_arrival + s,
        held = held + s - r, ingested = ingested + s, frontier = h WHERE id = 1;
    END IF;
    IF s > 0 OR r > 0 THEN
      PERFORM pg_notify('rmq_messages', ''); -- NOTIFY_CHANNEL
    END IF;
    RETURN QUERY SELECT h, w, s, r;
  END $$;
`

/**
 * Migration 10's release pass, kept as it was applied (migrations are never
 * edited): it numbered the new messages' arrivals with a sort of every
 * message, and found each one's event position through a join back to them.
 * Migration 11 replaces it with RELEASE_PASS_11 (below), migration 12 with RELEASE_PASS_12.
 */
const RELEASE_PASS_10 = `
  CREATE OR REPLACE FUNCTION rmq_pass(live_since bigint, hold_floor bigint, need xid8)
  RETURNS TABLE (p_frontier xid8, p_watermark bigint, p_sequenced bigint, p_released bigint)
  LANGUAGE plpgsql AS $$
  DECLARE
    m record;
    h xid8;
    w bigint;
    cand bigint;
    lm bigint;
    n bigint;
    s bigint := 0;
    r bigint := 0;
    u bigint := 0;
    ha bigint[];
    hp bigint[];
  BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);
    -- Plain index scans only: they mark the entries of released rows dead as they pass them, so
    -- the held index stays cheap to scan between vacuums (a bitmap scan visits them every time).
    PERFORM set_config('enable_bitmapscan', 'off', true);
    IF NOT pg_try_advisory_xact_lock(${RELEASE_LOCK_KEY}) THEN
      -- Another broker's pass runs. Once it has committed, the frontier it wrote may already cover
      -- what this pass was for (need: the newest transaction its callers wait for): then stop here.
      PERFORM pg_advisory_xact_lock(${RELEASE_LOCK_KEY});
      SELECT * INTO m FROM rmq_meta WHERE id = 1;
      IF need IS NOT NULL AND m.frontier > need THEN
        RETURN QUERY SELECT m.frontier, m.watermark, 0::bigint, 0::bigint;
        RETURN;
      END IF;
    END IF;
    h := pg_snapshot_xmin(pg_current_snapshot());
    SELECT * INTO m FROM rmq_meta WHERE id = 1;
    IF h <= m.frontier THEN
      h := m.frontier;
    END IF;
    SELECT MIN(d.low_mark), COUNT(*) INTO lm, n FROM rmq_nodes d
      WHERE NOT d.direct AND d.last_contact >= live_since AND d.low_mark >= hold_floor;
    IF n > 0 THEN
      cand := lm;
    ELSE
      SELECT GREATEST((SELECT MAX(k.ts) FROM rmq_order k WHERE k.position IS NULL),
                      (SELECT MAX(b.max_ts) FROM rmq_batches b WHERE b.tx >= m.frontier AND b.tx < h)) + 1
        INTO cand;
    END IF;
    w := m.watermark;
    IF cand IS NOT NULL AND (w IS NULL OR cand > w) THEN
      w := cand;
    END IF;
    -- One statement: the batch log's rows below h are taken (deleted); their messages get their
    -- arrivals; those of them below w, and the held ones below w, get event positions (a new
    -- message due at once is inserted with it, never updated; held ones are updated next). No
    -- message row is read or written.
    WITH batch AS (
      DELETE FROM rmq_batches b WHERE b.tx >= m.frontier AND b.tx < h
      RETURNING b.tx, b.node, b.epoch, b.seqs, b.ts, b.topics
    ), fresh AS (
      SELECT m.next_arrival + ROW_NUMBER() OVER (ORDER BY b.tx, e.ord) - 1 AS arrival,
        e.ts, b.node, e.seq, b.epoch, e.topic
      FROM batch b, unnest(b.seqs, b.ts, b.topics) WITH ORDINALITY AS e(seq, ts, topic, ord)
    ), due AS (
      SELECT f.arrival, f.ts, f.node, f.seq, f.epoch, false AS held FROM fresh f WHERE f.ts < w
      UNION ALL
      SELECT k.arrival, k.ts, k.node, k.seq, k.epoch, true FROM rmq_order k WHERE k.position IS NULL AND k.ts < w
    ), pos AS (
      SELECT d.arrival, d.held,
        m.next_position + ROW_NUMBER() OVER (ORDER BY d.ts, d.node, d.seq, d.epoch) - 1 AS p
      FROM due d
    ), ins AS (
      INSERT INTO rmq_order (arrival, ts, node, seq, epoch, topic, position, late)
      SELECT f.arrival, f.ts, f.node, f.seq, f.epoch, f.topic, q.p,
        q.p IS NOT NULL AND m.watermark IS NOT NULL AND f.ts < m.watermark
      FROM fresh f LEFT JOIN pos q ON q.arrival = f.arrival
      RETURNING 1
    ), released_held AS (
      SELECT array_agg(q.arrival ORDER BY q.arrival) AS a, array_agg(q.p ORDER BY q.arrival) AS p
      FROM pos q WHERE q.held
    )
    SELECT (SELECT COUNT(*) FROM ins), (SELECT COUNT(*) FROM pos), h2.a, h2.p INTO s, r, ha, hp
    FROM released_held h2;
    -- Held messages now due get their positions in a statement of their own, planned afresh for
    -- each pass (EXECUTE): a plan cached while rmq_order was small, or while nothing was held,
    -- can scan all of rmq_order, or all held rows once per released one.
    IF ha IS NOT NULL THEN
      EXECUTE 'UPDATE rmq_order o SET position = q.p, late = ($3::bigint IS NOT NULL AND o.ts < $3)
               FROM unnest($1::bigint[], $2::bigint[]) AS q(arrival, p) WHERE o.arrival = q.arrival'
        USING ha, hp, m.watermark;
      GET DIAGNOSTICS u = ROW_COUNT;
    END IF;
    -- No new message and nothing moved: write nothing (the empty range below h needs no record).
    IF s > 0 OR r > 0 OR w IS DISTINCT FROM m.watermark THEN
      UPDATE rmq_meta SET watermark = w, next_position = next_position + r, next_arrival = next_arrival + s,
        held = held + s - r, ingested = ingested + s, frontier = h WHERE id = 1;
    END IF;
    IF s > 0 OR r > 0 THEN
      PERFORM pg_notify('rmq_messages', ''); -- NOTIFY_CHANNEL
    END IF;
    RETURN QUERY SELECT h, w, s, r;
  END $$;
`

/**
 * Migration 10: the batch log. Each ingest that stores messages writes one
 * row of rmq_batches in its own transaction (tx): the node, the epoch, and
 * the accepted messages' seqs, timestamps and topics as arrays, in the
 * batch's order. The pass (RELEASE_PASS_10, now RELEASE_PASS_12) takes the rows below its horizon
 * from there, so the message rows need no transaction id, no id sequence and
 * no index of their own beyond (node, epoch, seq), which positions and pages
 * join on: the server no longer maintains that index and sequence per
 * message at ingest, nor fetches each new message row again in the pass.
 * Messages committed before this migration and not yet given an arrival
 * (tx >= frontier) are moved into the log, in their old (tx, id) order.
 * Tables are locked first: a broker of the previous version still writing
 * waits, then fails and retries against this schema (every broker must run
 * this version once it is in).
 */
const BATCH_LOG = `
  LOCK TABLE rmq_meta, rmq_messages, rmq_order IN ACCESS EXCLUSIVE MODE;
  CREATE TABLE rmq_batches (
    tx xid8 PRIMARY KEY DEFAULT pg_current_xact_id(),
    node text COLLATE "C" NOT NULL,
    epoch text COLLATE "C" NOT NULL,
    seqs bigint[] NOT NULL,
    ts bigint[] NOT NULL,
    topics text[] NOT NULL,
    max_ts bigint NOT NULL
  );
  -- Stored out of line uncompressed: compressing them cost the ingest more than the bytes saved.
  ALTER TABLE rmq_batches ALTER COLUMN seqs SET STORAGE EXTERNAL, ALTER COLUMN ts SET STORAGE EXTERNAL,
    ALTER COLUMN topics SET STORAGE EXTERNAL;
  INSERT INTO rmq_batches (tx, node, epoch, seqs, ts, topics, max_ts)
    SELECT x.tx, x.node, x.epoch, array_agg(x.seq ORDER BY x.id), array_agg(x.ts ORDER BY x.id),
      array_agg(x.topic ORDER BY x.id), MAX(x.ts)
    FROM rmq_messages x, rmq_meta k WHERE k.id = 1 AND x.tx >= k.frontier
    GROUP BY x.tx, x.node, x.epoch;
  DROP INDEX rmq_messages_tx;
  ALTER TABLE rmq_messages DROP COLUMN tx, DROP COLUMN id;
  ALTER TABLE rmq_order DROP COLUMN tx, DROP COLUMN id;
  -- A broker of schema 9 still running would go on inserting messages without a log row, and its
  -- passes (this rmq_pass) would never give them arrivals: under another name its writes fail
  -- (the node keeps its batch and retries) instead of being acknowledged and never delivered.
  ALTER TABLE rmq_messages RENAME TO rmq_message_rows;
  ${RELEASE_PASS_10}
`

/**
 * Migration 11's release pass, frozen (applied migrations are never edited).
 * Migration 12 replaces it with RELEASE_PASS_12 (postgres-pass.ts), whose
 * watermark stops below the batches committed above its horizon.
 *
 * One release pass (postgres-release.ts), called in its own transaction:
 * 1. Under the release lock, the horizon h = the oldest transaction still
 *    running. Every transaction below it has committed or rolled back, so
 *    the batch log's rows with frontier <= tx < h are all there will ever be
 *    in that range: their messages get the next arrival positions in (tx,
 *    order in the batch) order, the rows are deleted and h becomes the
 *    frontier. A message committed above the horizon waits for a
 *    later pass; none ever gets a position behind one already given.
 * 2. The watermark (monotonic) from the live edge nodes' low marks, or the
 *    newest held ts + 1 when no live node holds it back; held messages below
 *    it get the next event positions in (ts, node, seq, epoch) order, `late`
 *    when below the watermark as it stood before this pass.
 * Positions are written to rmq_order only; message rows are never rewritten.
 * A pass that had to wait for another broker's pass returns at once when the
 * frontier that one wrote is above `need` (NULL: always run, with this
 * caller's broker time).
 */
export const RELEASE_PASS_11 = `
  CREATE OR REPLACE FUNCTION rmq_pass(live_since bigint, hold_floor bigint, need xid8)
  RETURNS TABLE (p_frontier xid8, p_watermark bigint, p_sequenced bigint, p_released bigint)
  LANGUAGE plpgsql AS $$
  DECLARE
    m record;
    h xid8;
    w bigint;
    cand bigint;
    lm bigint;
    n bigint;
    s bigint := 0;
    r bigint := 0;
    u bigint := 0;
    ha bigint[];
    hp bigint[];
  BEGIN
    PERFORM set_config('synchronous_commit', 'on', true);
    -- Plain index scans only: they mark the entries of released rows dead as they pass them, so
    -- the held index stays cheap to scan between vacuums (a bitmap scan visits them every time).
    PERFORM set_config('enable_bitmapscan', 'off', true);
    IF NOT pg_try_advisory_xact_lock(${RELEASE_LOCK_KEY}) THEN
      -- Another broker's pass runs. Once it has committed, the frontier it wrote may already cover
      -- what this pass was for (need: the newest transaction its callers wait for): then stop here.
      PERFORM pg_advisory_xact_lock(${RELEASE_LOCK_KEY});
      SELECT * INTO m FROM rmq_meta WHERE id = 1;
      IF need IS NOT NULL AND m.frontier > need THEN
        RETURN QUERY SELECT m.frontier, m.watermark, 0::bigint, 0::bigint;
        RETURN;
      END IF;
    END IF;
    h := pg_snapshot_xmin(pg_current_snapshot());
    SELECT * INTO m FROM rmq_meta WHERE id = 1;
    IF h <= m.frontier THEN
      h := m.frontier;
    END IF;
    SELECT MIN(d.low_mark), COUNT(*) INTO lm, n FROM rmq_nodes d
      WHERE NOT d.direct AND d.last_contact >= live_since AND d.low_mark >= hold_floor;
    IF n > 0 THEN
      cand := lm;
    ELSE
      SELECT GREATEST((SELECT MAX(k.ts) FROM rmq_order k WHERE k.position IS NULL),
                      (SELECT MAX(b.max_ts) FROM rmq_batches b WHERE b.tx >= m.frontier AND b.tx < h)) + 1
        INTO cand;
    END IF;
    w := m.watermark;
    IF cand IS NOT NULL AND (w IS NULL OR cand > w) THEN
      w := cand;
    END IF;
    -- One statement: the batch log's rows below h are taken (deleted); their messages get their
    -- arrivals; those of them below w, and the held ones below w, get event positions (a new
    -- message due at once is inserted with it, never updated; held ones are updated next). No
    -- message row is read or written. A message's arrival is its batch's offset (the sizes of the
    -- batches before it, in tx order) plus its place in the batch: the only sort over messages is
    -- the one event order needs, and the rows inserted come straight from it, without a join back.
    WITH batch AS (
      DELETE FROM rmq_batches b WHERE b.tx >= m.frontier AND b.tx < h
      RETURNING b.tx, b.node, b.epoch, b.seqs, b.ts, b.topics
    ), offsets AS (
      SELECT b.*, m.next_arrival - 1 + SUM(cardinality(b.seqs)) OVER (ORDER BY b.tx) - cardinality(b.seqs) AS base
      FROM batch b
    ), fresh AS (
      SELECT b.base + e.ord AS arrival, e.ts, b.node, e.seq, b.epoch, e.topic
      FROM offsets b, unnest(b.seqs, b.ts, b.topics) WITH ORDINALITY AS e(seq, ts, topic, ord)
    ), due AS (
      SELECT f.arrival, f.ts, f.node, f.seq, f.epoch, f.topic, false AS held FROM fresh f WHERE f.ts < w
      UNION ALL
      SELECT k.arrival, k.ts, k.node, k.seq, k.epoch, k.topic, true FROM rmq_order k WHERE k.position IS NULL AND k.ts < w
    ), pos AS (
      SELECT d.*, m.next_position + ROW_NUMBER() OVER (ORDER BY d.ts, d.node, d.seq, d.epoch) - 1 AS p
      FROM due d
    ), ins AS (
      INSERT INTO rmq_order (arrival, ts, node, seq, epoch, topic, position, late)
      SELECT q.arrival, q.ts, q.node, q.seq, q.epoch, q.topic, q.p, m.watermark IS NOT NULL AND q.ts < m.watermark
      FROM pos q WHERE NOT q.held
      UNION ALL
      SELECT f.arrival, f.ts, f.node, f.seq, f.epoch, f.topic, NULL, false FROM fresh f WHERE (f.ts < w) IS NOT TRUE
      RETURNING 1
    ), released_held AS (
      SELECT array_agg(q.arrival ORDER BY q.arrival) AS a, array_agg(q.p ORDER BY q.arrival) AS p
      FROM pos q WHERE q.held
    )
    SELECT (SELECT COUNT(*) FROM ins), (SELECT COUNT(*) FROM pos), h2.a, h2.p INTO s, r, ha, hp
    FROM released_held h2;
    -- Held messages now due get their positions in a statement of their own, planned afresh for
    -- each pass (EXECUTE): a plan cached while rmq_order was small, or while nothing was held,
    -- can scan all of rmq_order, or all held rows once per released one.
    IF ha IS NOT NULL THEN
      EXECUTE 'UPDATE rmq_order o SET position = q.p, late = ($3::bigint IS NOT NULL AND o.ts < $3)
               FROM unnest($1::bigint[], $2::bigint[]) AS q(arrival, p) WHERE o.arrival = q.arrival'
        USING ha, hp, m.watermark;
      GET DIAGNOSTICS u = ROW_COUNT;
    END IF;
    -- No new message and nothing moved: write nothing (the empty range below h needs no record).
    IF s > 0 OR r > 0 OR w IS DISTINCT FROM m.watermark THEN
      UPDATE rmq_meta SET watermark = w, next_position = next_position + r, next_arrival = next_arrival + s,
        held = held + s - r, ingested = ingested + s, frontier = h WHERE id = 1;
    END IF;
    IF s > 0 OR r > 0 THEN
      PERFORM pg_notify('rmq_messages', ''); -- NOTIFY_CHANNEL
    END IF;
    RETURN QUERY SELECT h, w, s, r;
  END $$;
`

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
  // 8: ingest without a shared lock (postgres-release.ts). Messages are the log: they get an id and
  // their transaction's id (tx) when inserted, and no position. Arrival and event positions live
  // in the narrow rmq_order, written after commit by one release pass at a time (rmq_pass). The
  // rows already there keep their arrival (now their id) and position; their tx is 0, below the
  // frontier (every row whose tx is below it has its arrival), which starts at this migration's tx.
  // rmq_order repeats what ordering and filtering need (ts, node, seq, epoch, topic), so a page
  // is found there and joins only the rows it returns.
  `
  DROP INDEX rmq_messages_held;
  ALTER TABLE rmq_messages RENAME COLUMN arrival TO id;
  CREATE SEQUENCE rmq_messages_id_seq AS bigint OWNED BY rmq_messages.id;
  SELECT setval('rmq_messages_id_seq', COALESCE((SELECT MAX(id) FROM rmq_messages), 0) + 1, false);
  ALTER TABLE rmq_messages ALTER COLUMN id SET DEFAULT nextval('rmq_messages_id_seq'),
    ADD COLUMN tx xid8 NOT NULL DEFAULT '0';
  ALTER TABLE rmq_messages ALTER COLUMN tx SET DEFAULT pg_current_xact_id();
  CREATE TABLE rmq_order (
    arrival bigint PRIMARY KEY,
    tx xid8 NOT NULL,
    id bigint NOT NULL,
    ts bigint NOT NULL,
    node text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    epoch text COLLATE "C" NOT NULL,
    topic text COLLATE "C" NOT NULL,
    position bigint UNIQUE,
    late boolean NOT NULL DEFAULT false
  );
  INSERT INTO rmq_order (arrival, tx, id, ts, node, seq, epoch, topic, position, late)
    SELECT id, tx, id, ts, node, seq, epoch, topic, position, late FROM rmq_messages;
  CREATE INDEX rmq_order_held ON rmq_order (ts, node, seq, epoch) WHERE position IS NULL;
  ALTER TABLE rmq_messages DROP COLUMN position, DROP COLUMN late;
  -- A message is found by (tx, id), for the pass and for the pages: one index, no primary key.
  ALTER TABLE rmq_messages DROP CONSTRAINT rmq_messages_pkey;
  CREATE INDEX rmq_messages_tx ON rmq_messages (tx, id);
  ALTER TABLE rmq_meta ADD COLUMN frontier xid8;
  UPDATE rmq_meta SET frontier = pg_current_xact_id() WHERE id = 1;
  ALTER TABLE rmq_meta ALTER COLUMN frontier SET NOT NULL;
  `,
  // 9: the release pass, one transaction in one round trip (postgres-release.ts).
  RELEASE_PASS_9,
  // 10: the batch log (BATCH_LOG).
  BATCH_LOG,
  // 11: the release pass without a sort or a join over every new message.
  RELEASE_PASS_11,
  // 12: the watermark stops below batches committed above the pass's horizon (postgres-pass.ts);
  // each batch-log row records its oldest ts, so a pass reads it without the row's array (a
  // stalled horizon leaves many rows above it). Rows of a schema-11 broker still running have none.
  `ALTER TABLE rmq_batches ADD COLUMN min_ts bigint;
  ${RELEASE_PASS_12}`,
]

/** Key of the transaction-scoped advisory lock that serializes migrations ('rmq' + 1). */
export const MIGRATION_LOCK_KEY = 0x726d7101

/** LISTEN/NOTIFY channel: a commit added arrivals or released messages. */
export const NOTIFY_CHANNEL = 'rmq_messages'
