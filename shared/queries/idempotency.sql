-- Processed markers, the handler's cache epoch and its latest full rebuild (shared/idempotency.py).

-- name: claim
-- Marks a batch of events processed by a handler, in the batch's transaction; returns those
-- that were not marked before (only they reach the handler).
INSERT INTO processed_event (handler_name, event_id)
SELECT %(handler)s, unnest(%(event_ids)b::uuid[])
ON CONFLICT (handler_name, event_id) DO NOTHING
RETURNING event_id;

-- name: clear_markers
DELETE FROM processed_event WHERE handler_name = %(handler)s;

-- name: clear_aggregate_markers
-- Those of its archived events too, which its planning staged (0014_archive).
DELETE FROM processed_event p
 WHERE p.handler_name = %(handler)s
   AND p.event_id IN (SELECT event_id FROM event WHERE aggregate_id = %(aggregate_id)s
                      UNION ALL
                      SELECT replay_archived_event_ids(%(aggregate_id)s));

-- name: bump_epoch
-- A new cache epoch (the handler's state row is created on first use), after a reset: what the
-- handler was caught up to is no longer processed (0012_caught_up).
INSERT INTO handler_state (handler_name) VALUES (%(handler)s)
    ON CONFLICT (handler_name) DO UPDATE
    SET cache_epoch = gen_random_uuid()::text, caught_up = NULL, updated_at = now()
RETURNING cache_epoch;

-- name: current_epoch
SELECT cache_epoch FROM handler_state WHERE handler_name = %(handler)s;

-- name: create_state
-- The handler's state row, created on first use (a no-op update so that RETURNING answers when
-- a concurrent caller created it first).
INSERT INTO handler_state (handler_name) VALUES (%(handler)s)
    ON CONFLICT (handler_name) DO UPDATE SET handler_name = EXCLUDED.handler_name
RETURNING cache_epoch;

-- name: start_rebuild
UPDATE handler_state
   SET rebuild_job_id = %(job_id)s, rebuild_snapshot = %(snapshot)s::pg_snapshot,
       rebuild_completed = false, updated_at = now()
 WHERE handler_name = %(handler)s;

-- name: latest_rebuild
SELECT rebuild_job_id::text AS job_id, rebuild_snapshot::text AS snapshot, rebuild_completed
  FROM handler_state
 WHERE handler_name = %(handler)s AND rebuild_snapshot IS NOT NULL;

-- name: covered
-- The events of %(event_ids)s visible in the snapshot of the handler's latest full rebuild.
SELECT e.event_id
  FROM event e JOIN handler_state h ON h.handler_name = %(handler)s
 WHERE e.event_id = ANY(%(event_ids)s::uuid[]) AND h.rebuild_snapshot IS NOT NULL
   AND pg_visible_in_snapshot(e.txid, h.rebuild_snapshot);

-- name: lock_progress
-- The progress rows of a batch's aggregates, created at 0 where missing and locked (in
-- aggregate order, so that two batches never wait on each other in a cycle) until the batch
-- commits: what is processed is decided under the lock.
INSERT INTO handler_progress (handler_name, aggregate_id)
SELECT %(handler)s, a FROM unnest(%(aggregates)s::text[]) AS a ORDER BY a
    ON CONFLICT (handler_name, aggregate_id) DO UPDATE SET watermark = handler_progress.watermark
RETURNING aggregate_id, watermark, marked_max;

-- name: marked
-- Which of %(event_ids)s have a processed marker of the handler.
SELECT event_id FROM processed_event
 WHERE handler_name = %(handler)s AND event_id = ANY(%(event_ids)b::uuid[]);

-- name: mark
INSERT INTO processed_event (handler_name, event_id)
SELECT %(handler)s, unnest(%(event_ids)b::uuid[])
ON CONFLICT (handler_name, event_id) DO NOTHING;

-- name: unmark
-- Markers a watermark now says (it moved over them).
DELETE FROM processed_event
 WHERE handler_name = %(handler)s AND event_id = ANY(%(event_ids)b::uuid[]);

-- name: advance_progress
UPDATE handler_progress w
   SET watermark = v.watermark, marked_max = greatest(w.marked_max, v.marked_max)
  FROM unnest(%(aggregates)s::text[], %(watermarks)s::bigint[], %(marked)s::bigint[])
       AS v (aggregate_id, watermark, marked_max)
 WHERE w.handler_name = %(handler)s AND w.aggregate_id = v.aggregate_id;

-- name: clear_progress
DELETE FROM handler_progress WHERE handler_name = %(handler)s;

-- name: clear_aggregate_progress
DELETE FROM handler_progress WHERE handler_name = %(handler)s AND aggregate_id = %(aggregate_id)s;

-- name: fold_in_order
-- A catch-up's batch folded in SQL (idempotency.fold_in_order), in one statement: {batch} is a
-- slice batch's SELECT in aggregate order ({covered}: its _covered flag, or false), {fold} the
-- handler's rebuild_sql. First what the batch holds of each aggregate; then each aggregate's
-- progress row created or locked, in aggregate order, and its watermark moved to the batch's
-- last event of it only where the batch starts right after the watermark (EXCLUDED.marked_max
-- carries first - 1) and no marker lies beyond it (a row created here must start at 1); the
-- verdict: every aggregate so. The fold reads the batch through the verdict, so it runs only
-- after every progress row is locked (the order a claim takes them in: no lock cycle with live
-- processing), and applies nothing if one aggregate is not right: the caller then rolls back.
-- Returns the verdict, the batch's size and its last event (no row: an empty batch).
WITH raw AS ({batch}),
extents AS (
    SELECT aggregate_id, min(sequence_num) AS first, max(sequence_num) AS last, count(*) AS n,
           bool_or({covered}) AS covered
      FROM raw GROUP BY aggregate_id
), moved AS (
    INSERT INTO handler_progress AS w (handler_name, aggregate_id, watermark, marked_max)
    SELECT %(handler)s, aggregate_id, last, first - 1 FROM extents ORDER BY aggregate_id
        ON CONFLICT (handler_name, aggregate_id) DO UPDATE SET watermark = EXCLUDED.watermark
     WHERE w.watermark = EXCLUDED.marked_max AND w.marked_max <= w.watermark
    RETURNING aggregate_id, xmax = 0 AS created
), verdict AS (
    SELECT coalesce(bool_and(x.last - x.first + 1 = x.n AND NOT x.covered
                             AND m.aggregate_id IS NOT NULL AND (x.first = 1 OR NOT m.created)),
                    true) AS ok
      FROM extents x LEFT JOIN moved m USING (aggregate_id)
), batch AS (
    SELECT * FROM raw WHERE (SELECT ok FROM verdict)
), folded AS ({fold})
SELECT (SELECT ok FROM verdict) AS ok, aggregate_id, sequence_num, event_id,
       count(*) OVER () AS n
  FROM raw ORDER BY aggregate_id DESC, sequence_num DESC LIMIT 1;
