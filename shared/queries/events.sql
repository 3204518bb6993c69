-- The event table as a source (shared/sources/postgres.py). {where} is a conjunction of the
-- source's condition fragments (constant SQL, values as parameters), {order} one of its orders,
-- {events} what the events are read from: the event table, or the event table and the archived
-- events staged for the reader as one (shared/archive/staging.py).

-- name: select_events
-- The one SELECT of events: the columns of the Event mapping ({columns}: scope.EVENT_COLUMNS,
-- to which a slice reader may add its coverage flag) of the events {where} picks, in {order}.
-- Slice batches, events by id, an aggregate's stream and live processing all compose it.
SELECT {columns} FROM {events} AS event WHERE {where} {order};

-- name: fold_batch
-- A handler's set-based fold ({fold}, a data-modifying statement that PostgreSQL runs to
-- completion) over a batch ({batch}, a select_events), returning the batch's size and its last
-- event's position ({last}: the slice's order, reversed).
WITH batch AS ({batch}), folded AS ({fold})
SELECT aggregate_id, sequence_num, occurred_at, event_id, count(*) OVER () AS n
  FROM batch {last} LIMIT 1;

-- name: current_snapshot
-- The first statement that takes a snapshot fixes the transaction's: a job's frozen scope.
SELECT pg_current_snapshot()::text AS s;

-- name: count
SELECT count(*) AS n FROM {events} AS event WHERE {where};

-- name: plan_by_aggregate
-- Counts per aggregate ({per_aggregate}: count_per_aggregate or count_per_start), then cuts the
-- running total into %(slices)s equal parts. Aggregates are never split (their events must be
-- processed in order by one task), so a very large aggregate makes its slice larger and the
-- number of slices can come out lower than asked.
WITH per_aggregate AS ({per_aggregate}), running AS (
    SELECT aggregate_id, n,
           sum(n) OVER (ORDER BY aggregate_id) - n AS before,
           sum(n) OVER () AS total
      FROM per_aggregate
)
SELECT floor(before * %(slices)s / total)::int AS bucket,
       min(aggregate_id) AS first_aggregate,
       max(aggregate_id) AS last_aggregate,
       sum(n)::bigint AS events
  FROM running
 GROUP BY 1
 ORDER BY 1;

-- name: time_quantiles
-- The occurred_at values that cut the scope into parts of equal counts (%(fractions)s).
SELECT percentile_disc(%(fractions)s::float8[]) WITHIN GROUP (ORDER BY occurred_at) AS q
  FROM {events} AS event WHERE {where};

-- name: count_by_time_bucket
-- Events per time slice: bucket 0 before the first bound, i in [bounds[i-1], bounds[i]).
SELECT width_bucket(occurred_at, %(bounds)s::timestamptz[]) AS bucket, count(*) AS n
  FROM {events} AS event WHERE {where} GROUP BY 1 ORDER BY 1;

-- name: missing_event_types
-- The event types of %s that neither the event table nor an archived segment holds.
SELECT t FROM unnest(%s::text[]) AS t
 WHERE NOT EXISTS (SELECT 1 FROM event WHERE event_type = t)
   AND NOT EXISTS (SELECT 1 FROM archive_segment WHERE t = ANY(event_types))
 ORDER BY t;

-- name: known_event_types
-- Distinct event types by a loose index scan (fast on a large table).
WITH RECURSIVE t AS (
    (SELECT event_type FROM event ORDER BY event_type LIMIT 1)
    UNION ALL
    SELECT (SELECT e.event_type FROM event e WHERE e.event_type > t.event_type
             ORDER BY e.event_type LIMIT 1)
      FROM t WHERE t.event_type IS NOT NULL
)
SELECT event_type FROM t WHERE event_type IS NOT NULL LIMIT %s;

-- name: freeze_starts
-- A catch-up's starts (0011_catch_up_starts): {counted} names aggregates, each with the event it
-- starts after, the number of events of the scope after it (n) and whether all of them are read
-- or only the new ones (read_all); those with some are kept, numbered in batch order (before:
-- the job's events in the starts before it).
WITH RECURSIVE {counted}
INSERT INTO replay_start (job_id, aggregate_id, after_sequence, events, before, read_all)
SELECT %(job_id)s, aggregate_id, after_sequence, n, sum(n) OVER (ORDER BY aggregate_id) - n,
       read_all
  FROM counted
 WHERE n > 0;

-- name: starts_of_every_aggregate
-- Every aggregate, after the handler's watermark. The aggregates come from a loose index scan:
-- one probe of the (aggregate_id, sequence_num) index per aggregate, however many events each
-- has, and an aggregate the handler is up to date on costs one more probe (its count).
aggregates (aggregate_id) AS (
    (SELECT aggregate_id FROM {events} AS event ORDER BY aggregate_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.aggregate_id FROM {events} e WHERE e.aggregate_id > a.aggregate_id
             ORDER BY e.aggregate_id LIMIT 1)
      FROM aggregates a WHERE a.aggregate_id IS NOT NULL
), starts AS (
    SELECT a.aggregate_id, coalesce(w.watermark, 0) AS after_sequence
      FROM aggregates a
      LEFT JOIN handler_progress w
             ON w.handler_name = %(handler)s AND w.aggregate_id = a.aggregate_id
     WHERE a.aggregate_id IS NOT NULL
),

-- name: starts_of_one_aggregate
starts AS (
    SELECT %(aggregate_id)s::varchar AS aggregate_id,
           coalesce((SELECT watermark FROM handler_progress
                      WHERE handler_name = %(handler)s AND aggregate_id = %(aggregate_id)s),
                    0) AS after_sequence
),

-- name: count_after_starts
-- The events of the scope ({where}) after each start: an index range each.
counted AS (
    SELECT s.aggregate_id, s.after_sequence, fresh.n, true AS read_all
      FROM starts s
     CROSS JOIN LATERAL (SELECT count(*) AS n FROM {events} AS event
                          WHERE aggregate_id = s.aggregate_id
                            AND sequence_num > s.after_sequence AND {where}) fresh
)

-- name: counted_since_caught_up
-- When every event visible in snapshot %(since)s is processed (0012_caught_up), the catch-up
-- reads only the events of the scope ({where}) committed since: found by the txid index, in
-- proportion to what is new, and counted as they are found. Each aggregate starts before its
-- first new event, or after its watermark if that is further (live processing took some); what
-- lies before a start is processed. Where markers lie beyond the start (an event committed after
-- one numbered after it), every event after the start is read (read_all), so that the claim
-- absorbs them into the watermark. Only in those two cases are events counted again, by the
-- aggregate's index. The planner sees one new event (the txid range is past its statistics): the
-- events are grouped before they are joined to anything.
fresh AS MATERIALIZED (
    SELECT aggregate_id, min(sequence_num) AS first, count(*) AS n
      FROM event
     WHERE txid >= pg_snapshot_xmin(%(since)s::pg_snapshot)
       AND NOT pg_visible_in_snapshot(txid, %(since)s::pg_snapshot) AND {where}
     GROUP BY aggregate_id
), counted AS (
    SELECT f.aggregate_id, s.after_sequence, s.read_all,
           CASE WHEN s.read_all OR w.watermark >= f.first
                THEN (SELECT count(*) FROM event
                       WHERE aggregate_id = f.aggregate_id AND sequence_num > s.after_sequence
                         AND (s.read_all
                              OR NOT pg_visible_in_snapshot(txid, %(since)s::pg_snapshot))
                         AND {where})
                ELSE f.n
           END AS n
      FROM fresh f
      LEFT JOIN handler_progress w
             ON w.handler_name = %(handler)s AND w.aggregate_id = f.aggregate_id
     CROSS JOIN LATERAL (
           SELECT greatest(w.watermark, f.first - 1) AS after_sequence,
                  coalesce(w.marked_max > greatest(w.watermark, f.first - 1), false) AS read_all
     ) s
)

-- name: caught_up
-- The snapshot the handler is caught up to (0012_caught_up), if any.
SELECT caught_up::text AS caught_up FROM handler_state WHERE handler_name = %(handler)s;

-- name: count_starts
SELECT coalesce(sum(events), 0) AS n FROM replay_start WHERE job_id = %(starts)s;

-- name: count_per_aggregate
SELECT aggregate_id, count(*) AS n FROM {events} AS event WHERE {where} GROUP BY aggregate_id

-- name: count_with_archived
-- count, with the archived events a planning counted (replay_archived_counts: those of its scope,
-- every one visible in its snapshot, since their segment is).
SELECT (SELECT count(*) FROM event WHERE {where})
     + (SELECT coalesce(sum(n), 0) FROM pg_temp.replay_archived_counts) AS n;

-- name: count_per_aggregate_with_archived
SELECT aggregate_id, sum(n) AS n FROM (
    SELECT aggregate_id, count(*) AS n FROM event WHERE {where} GROUP BY aggregate_id
     UNION ALL
    SELECT aggregate_id, n FROM pg_temp.replay_archived_counts
) c GROUP BY aggregate_id

-- name: count_per_start
-- A catch-up's starts: only aggregates with events to read, counted at planning.
SELECT aggregate_id, events AS n FROM replay_start WHERE job_id = %(starts)s

-- name: select_after_starts
-- A batch of a catch-up planned from progress: for each aggregate of its starts in the slice
-- ({first} and {last}), in order, the events after its start that {where} picks. The first start
-- (where the batch resumes, possibly with nothing left), then the starts whose events fill a
-- batch after it, found by one range of replay_start_batch_idx (before: the events before each
-- start, counted at planning); so the sort is of at most two batches whatever plan PostgreSQL
-- picks, and aggregates without a start are never read. {guard}: the archive's generation check
-- (shared/archive/staging.py), or TRUE.
WITH resumed AS (
    SELECT s.aggregate_id, s.after_sequence, s.read_all, s.before + s.events AS next
      FROM replay_start s
     WHERE s.job_id = %(starts)s AND {first} AND {last}
     ORDER BY s.aggregate_id LIMIT 1
), starts AS (
    SELECT aggregate_id, after_sequence, read_all FROM resumed
     UNION ALL
    SELECT s.aggregate_id, s.after_sequence, s.read_all
      FROM resumed r
      JOIN replay_start s
        ON s.job_id = %(starts)s AND s.before >= r.next AND s.before < r.next + %(limit)s
     WHERE {last}
)
SELECT e.* FROM starts s
 CROSS JOIN LATERAL (SELECT {columns} FROM {events} AS event
                      WHERE aggregate_id = s.aggregate_id AND sequence_num > s.after_sequence
                        AND {where}
                      ORDER BY sequence_num LIMIT %(limit)s) AS e
 WHERE {guard}
 ORDER BY s.aggregate_id, e.sequence_num LIMIT %(limit)s;
