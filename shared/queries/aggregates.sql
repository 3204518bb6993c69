-- Loading one aggregate and keeping its snapshots (shared/aggregates.py). Its events are read
-- by the one event SELECT (events.sql, select_events: shared.sources.postgres.stream).

-- name: last_event
-- The aggregate's last event, by a backward scan of the (aggregate_id, sequence_num) index: no
-- count, no read of the whole stream when a snapshot makes it unnecessary.
SELECT aggregate_type, sequence_num FROM event
 WHERE aggregate_id = %(aggregate_id)s
 ORDER BY sequence_num DESC LIMIT 1;

-- name: latest_snapshots
-- The latest few snapshots at or below the target, newest first (an unreadable one is skipped).
SELECT sequence_num, state FROM snapshot
 WHERE aggregate_id = %(aggregate_id)s AND reducer_version = %(version)s
   AND sequence_num <= %(upto)s
 ORDER BY sequence_num DESC LIMIT 3;

-- name: upsert_snapshot
INSERT INTO snapshot (aggregate_id, aggregate_type, sequence_num, reducer_version, state)
VALUES (%(aggregate_id)s, %(aggregate_type)s, %(sequence_num)s, %(version)s, %(state)s)
    ON CONFLICT (aggregate_id, reducer_version, sequence_num)
    DO UPDATE SET state = EXCLUDED.state, created_at = now();

-- name: missing_sequence_nums
-- The first sequence numbers in after < n <= upto that the aggregate has no event for.
SELECT n FROM generate_series(%(after)s::bigint + 1, %(upto)s::bigint) AS n
 WHERE NOT EXISTS (SELECT 1 FROM event WHERE aggregate_id = %(aggregate_id)s AND sequence_num = n)
 ORDER BY n LIMIT 20;
