/**
 * The PostgreSQL store's release pass (postgres-release.ts runs it), as the
 * text of the migration that installs it (postgres-schema.ts, migration 12).
 * Migrations are never edited, and RELEASE_LOCK_KEY is in the frozen text of
 * migrations 9 to 12: a change to the pass is a new migration with a text of
 * its own (test/broker/migration-texts.test.ts pins the applied ones).
 */
/** Key of the transaction-scoped advisory lock one release pass at a time holds ('rmq' + 2). */
export const RELEASE_LOCK_KEY = 0x726d7102

/**
 * One release pass (postgres-release.ts), called in its own transaction:
 * 1. Under the release lock, the horizon h = the oldest transaction still
 *    running. Every transaction below it has committed or rolled back, so
 *    the batch log's rows with frontier <= tx < h are all there will ever be
 *    in that range: their messages get the next arrival positions in (tx,
 *    order in the batch) order, the rows are deleted and h becomes the
 *    frontier. A message committed above the horizon waits for a
 *    later pass; none ever gets a position behind one already given.
 * 2. The watermark (monotonic) from the live edge nodes' low marks, or the
 *    newest held ts + 1 when no live node holds it back. The node rows are
 *    read after h was taken, so they may come from an ingest at or above h,
 *    whose messages this pass leaves for the next: the watermark then stops
 *    below the oldest message of the batches above h (with no holder: of
 *    the edge nodes' batches), read in the same statement (migration 12;
 *    before it, such messages were released late, after newer ones). Held
 *    messages below it get the next event positions in (ts, node, seq,
 *    epoch) order, `late` when below the watermark as it stood before this
 *    pass.
 * Positions are written to rmq_order only; message rows are never rewritten.
 * A pass that had to wait for another broker's pass returns at once when the
 * frontier that one wrote is above `need` (NULL: always run, with this
 * caller's broker time).
 */
export const RELEASE_PASS_12 = `
  CREATE OR REPLACE FUNCTION rmq_pass(live_since bigint, hold_floor bigint, need xid8)
  RETURNS TABLE (p_frontier xid8, p_watermark bigint, p_sequenced bigint, p_released bigint)
  LANGUAGE plpgsql AS $$
  DECLARE
    m record;
    h xid8;
    w bigint;
    cand bigint;
    lm bigint;
    ahead bigint;
    ahead_edge bigint;
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
    -- The holders' low marks, and in the same statement (one snapshot: an ingest's node row and its
    -- batch row become visible together) the oldest ts of the batches committed at or above h. Such
    -- an ingest may have moved its node's low mark, or taken the node out of the holders (direct, or
    -- a low mark below the floor), past messages this pass leaves for the next one: the watermark
    -- stops below them, or the next pass would release them late, after newer ones. Without a
    -- holder, the watermark is the newest ts + 1 and direct producers' batches do not stop it.
    SELECT MIN(d.low_mark), COUNT(*),
      (SELECT MIN(COALESCE(b.min_ts, (SELECT MIN(x) FROM unnest(b.ts) AS x))) FROM rmq_batches b
        WHERE b.tx >= h),
      (SELECT MIN(COALESCE(b.min_ts, (SELECT MIN(x) FROM unnest(b.ts) AS x))) FROM rmq_batches b
        JOIN rmq_nodes k ON k.node = b.node WHERE b.tx >= h AND NOT k.direct)
      INTO lm, n, ahead, ahead_edge FROM rmq_nodes d
      WHERE NOT d.direct AND d.last_contact >= live_since AND d.low_mark >= hold_floor;
    IF n > 0 THEN
      cand := lm;
    ELSE
      SELECT GREATEST((SELECT MAX(k.ts) FROM rmq_order k WHERE k.position IS NULL),
                      (SELECT MAX(b.max_ts) FROM rmq_batches b WHERE b.tx >= m.frontier AND b.tx < h)) + 1
        INTO cand;
      ahead := ahead_edge;
    END IF;
    -- Below the watermark already: the watermark stays where it is (it never goes back).
    IF cand IS NOT NULL AND ahead IS NOT NULL AND ahead < cand THEN
      cand := ahead;
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
