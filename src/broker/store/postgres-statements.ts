/**
 * The SQL of the PostgreSQL broker store's ingest (postgres.ts); the release
 * pass is the function rmq_pass (postgres-pass.ts, postgres-release.ts).
 */
import { EPOCH_BATCHES_UPDATE, EPOCH_SEQS_UPDATE, NODE_REPORT_UPDATE } from './node-rows.js'

/** A message with its positions: `m` the message (rmq_message_rows), `o` its positions (rmq_order). */
export const MESSAGE_COLUMNS = `o.arrival, m.node, m.epoch, m.seq, m.topic, m.ts, m.payload, m.enc, m.content_type,
  m.priority, m.expires_at, m.headers, m.received_at, o.position, o.late::int AS late`

export const NODE_COLUMNS = `node, epoch, direct::int AS direct, first_seen, last_contact, last_sync, clock_skew,
  last_clock, backlog_pending, backlog_bytes, backlog_oldest_ts, low_mark, stats, received, duplicates, late,
  batches, epoch_batches, epoch_received, epoch_max_seq`

/** NODE_REPORT_UPDATE's parameters in INGEST_BATCH. */
const NODE_REPORT_PARAMS: Record<string, string> = {
  batch: '$23::text',
  unacked: '$24::text',
  lowMark: '$25::bigint',
}

/**
 * One batch (or heartbeat) in one statement, one round trip, its own
 * transaction (autocommit) made durable (synchronous_commit on for it): the
 * messages inserted set-wise, duplicates on (node, epoch, seq) skipped, one
 * row of the batch log (rmq_batches: what the release pass needs of the
 * accepted messages), the node's row upserted (the only row lock an ingest
 * takes: batches of other nodes never wait for it). No position is given
 * here: rmq_pass gives them after commit. Returns the counts and the
 * transaction's id, which the caller waits to see below a pass's frontier
 * before it answers. `late` counts the accepted messages below the
 * watermark as read here.
 *
 * Four prepared statements, by two choices:
 * - `uniform`: every message has the same enc, content type, priority,
 *   expiry and headers (a sync batch of telemetry): those five are scalars,
 *   not arrays the server parses element by element;
 * - `onConflict`: messages already stored are skipped by ON CONFLICT DO
 *   NOTHING. Without it, seqs above the node's recorded high mark
 *   (epoch_max_seq, the usual case: a node sends its seqs in order) are
 *   inserted without a look, the others skipped with one index probe each;
 *   both cost the server much less than a speculative insert per row, but fail
 *   with unique_violation when a concurrent transaction (the same batch
 *   retried through another broker) or the batch itself inserts the same
 *   (node, epoch, seq): the caller then runs the statement with it.
 *
 * $1 node, $2 epoch, $3..$11 the message columns ($6: every payload, end to end, in one bytea
 * sent in binary; $27 their byte lengths), $12 broker time, $13 direct,
 * $14 last_sync, $15 clock skew, $16 node clock, $17..$19 backlog, $20 low mark,
 * $21 stats, $22 message count, $23 batch, $24 unacked batch, $25 its low mark, $26 max seq.
 */
const INGEST_SQL = new Map<string, string>()

export function ingestBatchSql(shape: { uniform: boolean; onConflict: boolean }): string {
  const key = `${shape.uniform}/${shape.onConflict}`
  let sql = INGEST_SQL.get(key)
  if (sql === undefined) INGEST_SQL.set(key, (sql = buildIngestSql(shape.uniform, shape.onConflict)))
  return sql
}

function buildIngestSql(uniform: boolean, conflict: boolean): string {
  const each = uniform ? '' : ', $7::text[], $8::text[], $9::int[], $10::bigint[], $11::text[]'
  const eachNames = uniform ? '' : ', enc, content_type, priority, expires_at, headers'
  const perRow = uniform
    ? '$7::text, $8::text, $9::int, $10::bigint, $11::text'
    : 'enc, content_type, priority, expires_at, headers'
  // Under ON CONFLICT a seq twice in the batch is inserted once, from its first place (ORDER BY ord).
  const accepted = conflict
    ? '(SELECT DISTINCT ON (i.seq) i.* FROM ins JOIN input i ON i.seq = ins.seq ORDER BY i.seq, i.ord) i'
    : 'ins JOIN input i ON i.seq = ins.seq'
  const skip = conflict
    ? 'ON CONFLICT (node, epoch, seq) DO NOTHING'
    : // A seq above the highest one the node's row records for this epoch is new: no probe. Below it,
      // a scalar subquery, one index probe per message: NOT EXISTS would let the planner pick an anti
      // join that reads every stored message of the node once per batch. The unique key stays the
      // guard: a stale high mark (a concurrent batch, an older epoch sent again) ends in
      // unique_violation, and the caller reruns with ON CONFLICT.
      `WHERE input.seq > COALESCE((SELECT k.epoch_max_seq FROM rmq_nodes k WHERE k.node = $1 AND k.epoch = $2), -1)
         OR (SELECT 1 FROM rmq_message_rows e WHERE e.node = $1 AND e.epoch = $2 AND e.seq = input.seq) IS NULL`
  return `
  WITH input AS (
    SELECT *, SUM(len) OVER (ORDER BY ord) - len AS start FROM unnest($3::bigint[], $4::text[], $5::bigint[],
      $27::int[]${each}) WITH ORDINALITY AS t(seq, topic, ts, len${eachNames}, ord)
  ), ins AS (
    INSERT INTO rmq_message_rows (node, epoch, seq, topic, ts, payload, enc, content_type, priority,
      expires_at, headers, received_at)
    SELECT $1, $2, seq, topic, ts, substring($6::bytea FROM (start + 1)::int FOR len), ${perRow}, $12
    FROM input ${conflict ? '' : skip} ORDER BY ord ${conflict ? skip : ''}
    RETURNING seq, ts
  ), log AS (
    INSERT INTO rmq_batches (node, epoch, seqs, ts, topics, min_ts, max_ts)
    SELECT $1, $2, array_agg(i.seq ORDER BY i.ord), array_agg(i.ts ORDER BY i.ord),
      array_agg(i.topic ORDER BY i.ord), MIN(i.ts), MAX(i.ts)
    FROM ${accepted}
    HAVING COUNT(*) > 0
    RETURNING 1
  ), w AS (
    SELECT (SELECT watermark FROM rmq_meta WHERE id = 1) AS watermark
  ), counts AS (
    SELECT COUNT(ins.ts)::bigint AS accepted,
      (COUNT(*) FILTER (WHERE w.watermark IS NOT NULL AND ins.ts < w.watermark))::bigint AS late
    FROM w LEFT JOIN ins ON true
  ), node AS (
    INSERT INTO rmq_nodes AS n (node, epoch, direct, first_seen, last_contact, last_sync, clock_skew, last_clock,
      backlog_pending, backlog_bytes, backlog_oldest_ts, low_mark, stats, received, duplicates, late, batches,
      epoch_batches, last_batch, waiting_for, ahead_low_mark, epoch_received, epoch_max_seq)
    SELECT $1, $2, $13::boolean, $12::bigint, $12::bigint, $14::bigint, $15::bigint, $16::bigint, $17::bigint,
      $18::bigint, $19::bigint, $20::bigint, $21::text, c.accepted, $22::bigint - c.accepted, c.late, 1, 1,
      $23::text, $24::text, $25::bigint, c.accepted, $26::bigint
    FROM counts c
    ON CONFLICT (node) DO UPDATE SET
      ${EPOCH_BATCHES_UPDATE('n')},
      ${EPOCH_SEQS_UPDATE('n', (a, b) => `GREATEST(${a}, ${b})`)},
      epoch = excluded.epoch, direct = excluded.direct, last_contact = excluded.last_contact,
      last_sync = COALESCE(excluded.last_sync, n.last_sync),
      received = n.received + excluded.received, duplicates = n.duplicates + excluded.duplicates,
      late = n.late + excluded.late, batches = n.batches + 1,
      ${NODE_REPORT_UPDATE('n', (name) => NODE_REPORT_PARAMS[name])}
    RETURNING 1
  )
  SELECT c.accepted, c.late, pg_current_xact_id()::text AS tx,
    set_config('synchronous_commit', 'on', true) AS durable
  FROM counts c, (SELECT COUNT(*) FROM node) AS upserted, (SELECT COUNT(*) FROM log) AS logged`
}
