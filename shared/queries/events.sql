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
-- Counts per aggregate, then cuts the running total into %(slices)s equal parts. Aggregates are
-- never split (their events must be processed in order by one task), so a very large aggregate
-- makes its slice larger and the number of slices can come out lower than asked.
WITH per_aggregate AS (
    SELECT aggregate_id, count(*) AS n FROM event WHERE {where} GROUP BY aggregate_id
), running AS (
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
