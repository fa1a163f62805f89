/**
 * The SQL of the PostgreSQL broker store's ingest and release (postgres.ts).
 */
import { EPOCH_BATCHES_UPDATE, EPOCH_SEQS_UPDATE, NODE_REPORT_UPDATE } from './node-rows.js'

export const MESSAGE_COLUMNS = `arrival, node, epoch, seq, topic, ts, payload, enc, content_type, priority, expires_at,
  headers, received_at, position, late::int AS late`

export const NODE_COLUMNS = `node, epoch, direct::int AS direct, first_seen, last_contact, last_sync, clock_skew,
  last_clock, backlog_pending, backlog_bytes, backlog_oldest_ts, low_mark, stats, received, duplicates, late,
  batches, epoch_batches, epoch_received, epoch_max_seq`

/** One round trip: open the transaction, make its commit durable, take the ingest/release lock. */
export const BEGIN_LOCKED = `BEGIN; SET LOCAL synchronous_commit = on;
  SELECT watermark, next_position, next_arrival, held FROM rmq_meta WHERE id = 1 FOR UPDATE`

export const INSERT_BATCH = `
  WITH input AS (
    SELECT * FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::bytea[], $7::text[], $8::text[],
                         $9::int[], $10::bigint[], $11::text[])
      WITH ORDINALITY AS t(seq, topic, ts, payload, enc, content_type, priority, expires_at, headers, ord)
  ), fresh AS (
    SELECT DISTINCT ON (i.seq) i.* FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM rmq_messages m WHERE m.node = $1 AND m.epoch = $2 AND m.seq = i.seq)
    ORDER BY i.seq, i.ord
  )
  INSERT INTO rmq_messages (arrival, node, epoch, seq, topic, ts, payload, enc, content_type, priority,
    expires_at, headers, received_at, position, late)
  SELECT $12::bigint + ROW_NUMBER() OVER (ORDER BY ord) - 1, $1, $2, seq, topic, ts, payload, enc, content_type,
    priority, expires_at, headers, $13, NULL, $14::bigint IS NOT NULL AND ts < $14::bigint
  FROM fresh
  ON CONFLICT (node, epoch, seq) DO NOTHING
  RETURNING late`

/** NODE_REPORT_UPDATE's parameters in UPSERT_NODE. */
export const NODE_REPORT_PARAMS: Record<string, string> = {
  batch: '$16::text',
  unacked: '$17::text',
  lowMark: '$18::bigint',
}

export const UPSERT_NODE = `
  INSERT INTO rmq_nodes AS n (node, epoch, direct, first_seen, last_contact, last_sync, clock_skew, last_clock,
    backlog_pending, backlog_bytes, backlog_oldest_ts, low_mark, stats, received, duplicates, late, batches,
    epoch_batches, last_batch, waiting_for, ahead_low_mark, epoch_received, epoch_max_seq)
  VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, 1, $16, $17, $18, $13, $19)
  ON CONFLICT (node) DO UPDATE SET
    ${EPOCH_BATCHES_UPDATE('n')},
    ${EPOCH_SEQS_UPDATE('n', (a, b) => `GREATEST(${a}, ${b})`)},
    epoch = excluded.epoch, direct = excluded.direct, last_contact = excluded.last_contact,
    last_sync = COALESCE(excluded.last_sync, n.last_sync),
    received = n.received + excluded.received, duplicates = n.duplicates + excluded.duplicates,
    late = n.late + excluded.late, batches = n.batches + 1,
    ${NODE_REPORT_UPDATE('n', (name) => NODE_REPORT_PARAMS[name])}`

/** Candidate watermark inputs: live edge nodes' low marks, and the newest held ts. */
export const WATERMARK_INPUTS = `
  SELECT (SELECT watermark FROM rmq_meta WHERE id = 1) AS watermark,
         MIN(low_mark) AS lm, COUNT(*)::int AS n,
         (SELECT MAX(ts) FROM rmq_messages WHERE position IS NULL) AS held_max
  FROM rmq_nodes WHERE NOT direct AND last_contact >= $1 AND low_mark >= $2`

export const RELEASE_UP_TO = `
  UPDATE rmq_messages m SET position = r.p
  FROM (SELECT arrival, $1::bigint + ROW_NUMBER() OVER (ORDER BY ts, node, seq, epoch) - 1 AS p
        FROM rmq_messages WHERE position IS NULL AND ts < $2) AS r
  WHERE m.arrival = r.arrival`

export const UPDATE_META = `
  UPDATE rmq_meta SET watermark = $1, next_position = $2, next_arrival = $3, held = $4,
    ingested = ingested + $5 WHERE id = 1`

/** PostgreSQL SQLSTATE classes and codes that mean "cannot commit now, retry" (503). */
