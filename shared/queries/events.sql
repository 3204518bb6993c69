-- The event table as a source (shared/sources/postgres.py). {where} is a conjunction of the
-- source's condition fragments (constant SQL, values as parameters), {order} one of its orders.

-- name: select_events
-- The one SELECT of events: the columns of the Event mapping ({columns}: scope.EVENT_COLUMNS,
-- to which a slice reader may add its coverage flag) of the events {where} picks, in {order}.
-- Slice batches, events by id, an aggregate's stream and live processing all compose it.
SELECT {columns} FROM event WHERE {where} {order};

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
SELECT count(*) AS n FROM event WHERE {where};

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
  FROM event WHERE {where};

-- name: count_by_time_bucket
-- Events per time slice: bucket 0 before the first bound, i in [bounds[i-1], bounds[i]).
SELECT width_bucket(occurred_at, %(bounds)s::timestamptz[]) AS bucket, count(*) AS n
  FROM event WHERE {where} GROUP BY 1 ORDER BY 1;

-- name: missing_event_types
SELECT t FROM unnest(%s::text[]) AS t
 WHERE NOT EXISTS (SELECT 1 FROM event WHERE event_type = t) ORDER BY t;

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
-- A catch-up's starts (0011_catch_up_starts): for every aggregate ({aggregates}: all of them by
-- a loose index scan, or the scope's one), the handler's watermark and the number of events of
-- the scope after it; only aggregates with some are kept. An aggregate the handler is up to date
-- on costs one index probe: its events are not read.
WITH RECURSIVE aggregates (aggregate_id) AS ({aggregates})
INSERT INTO replay_start (job_id, aggregate_id, after_sequence, events)
SELECT %(job_id)s, a.aggregate_id, coalesce(w.watermark, 0), fresh.n
  FROM aggregates a
  LEFT JOIN handler_progress w
         ON w.handler_name = %(handler)s AND w.aggregate_id = a.aggregate_id
 CROSS JOIN LATERAL (SELECT count(*) AS n FROM event
                      WHERE aggregate_id = a.aggregate_id
                        AND sequence_num > coalesce(w.watermark, 0) AND {where}) fresh
 WHERE a.aggregate_id IS NOT NULL AND fresh.n > 0;

-- name: every_aggregate
-- Distinct aggregate ids by a loose index scan: one probe of the (aggregate_id, sequence_num)
-- index per aggregate, however many events each has.
(SELECT aggregate_id FROM event ORDER BY aggregate_id LIMIT 1)
UNION ALL
SELECT (SELECT e.aggregate_id FROM event e WHERE e.aggregate_id > a.aggregate_id
         ORDER BY e.aggregate_id LIMIT 1)
  FROM aggregates a WHERE a.aggregate_id IS NOT NULL

-- name: one_aggregate
SELECT %(aggregate_id)s::varchar AS aggregate_id

-- name: count_starts
SELECT coalesce(sum(events), 0) AS n FROM replay_start WHERE job_id = %(starts)s;

-- name: count_per_aggregate
SELECT aggregate_id, count(*) AS n FROM event WHERE {where} GROUP BY aggregate_id

-- name: count_per_start
-- A catch-up's starts: only aggregates with events to read, counted at planning.
SELECT aggregate_id, events AS n FROM replay_start WHERE job_id = %(starts)s

-- name: select_after_starts
-- A batch of a catch-up planned from progress: for each aggregate of its starts in the slice
-- ({first} and {last}), in order, the events after its start that {where} picks. The walk
-- visits only the next starts whose events can fill the batch (replay_start.events, counted at
-- planning; one index probe each), so the sort is of about one batch whatever plan PostgreSQL
-- picks, and aggregates without a start are never read.
WITH RECURSIVE walk AS (
    -- the aggregate a batch resumes in (%(resume_at)s) may have nothing left: it counts for
    -- nothing, so the walk goes on to starts that fill the batch
    (SELECT s.aggregate_id, s.after_sequence,
            CASE WHEN s.aggregate_id = %(resume_at)s::text THEN 0 ELSE s.events END AS upto
       FROM replay_start s
      WHERE s.job_id = %(starts)s AND {first} AND {last}
      ORDER BY s.aggregate_id LIMIT 1)
    UNION ALL
    SELECT s.aggregate_id, s.after_sequence, w.upto + s.events
      FROM walk w
     CROSS JOIN LATERAL (SELECT s.aggregate_id, s.after_sequence, s.events FROM replay_start s
                          WHERE s.job_id = %(starts)s AND s.aggregate_id > w.aggregate_id
                            AND {last}
                          ORDER BY s.aggregate_id LIMIT 1) s
     WHERE w.upto < %(limit)s
)
SELECT e.* FROM walk s
 CROSS JOIN LATERAL (SELECT {columns} FROM event
                      WHERE aggregate_id = s.aggregate_id AND sequence_num > s.after_sequence
                        AND {where}
                      ORDER BY sequence_num LIMIT %(limit)s) AS e
 ORDER BY s.aggregate_id, e.sequence_num LIMIT %(limit)s;
