-- Loading one aggregate in one round trip (shared/aggregates.py, load_aggregate; issue 13: its
-- three statements, each a round trip, were most of the time of a load from a snapshot).
-- {columns}: the Event mapping's (scope.EVENT_COLUMNS).

-- name: load
-- The head row first, then the events to fold, in order. The head row's event columns are null;
-- it carries the aggregate's type (_kind), its last sequence_num (_last) and, if
-- %(use_snapshots)s, the newest snapshot at or below the target (%(at_sequence)s, else the last
-- event) written by the version of the type's reducer (%(kinds)s, %(versions)s: the registered
-- reducers): _snapshot_at, _state. The events are those after that snapshot (or from the first)
-- up to the target. No rows: the aggregate has no events. A type without a reducer reads none.
-- One statement, so the head, the snapshot and the events are read in one database snapshot.
WITH head AS (
    SELECT aggregate_type AS kind, sequence_num AS last FROM event
     WHERE aggregate_id = %(aggregate_id)s
     ORDER BY sequence_num DESC LIMIT 1
), target AS (
    SELECT kind, last, coalesce(%(at_sequence)s::bigint, last) AS upto,
           (SELECT r.version
              FROM unnest(%(kinds)s::text[], %(versions)s::int[]) AS r (kind, version)
             WHERE r.kind = head.kind) AS version
      FROM head
), snap AS (
    SELECT s.sequence_num AS snapshot_at, s.state FROM target t, LATERAL (
        SELECT sequence_num, state FROM snapshot
         WHERE aggregate_id = %(aggregate_id)s AND reducer_version = t.version
           AND sequence_num <= t.upto AND %(use_snapshots)s
         ORDER BY sequence_num DESC LIMIT 1
    ) AS s
)
SELECT t.kind AS _kind, t.last AS _last, s.snapshot_at AS _snapshot_at, s.state AS _state,
       {columns}
  FROM target t LEFT JOIN snap s ON TRUE LEFT JOIN event ON FALSE
UNION ALL
SELECT NULL, NULL, NULL, NULL, {columns}
  FROM event, target t
 WHERE aggregate_id = %(aggregate_id)s AND t.version IS NOT NULL
   AND sequence_num > coalesce((SELECT snapshot_at FROM snap), 0) AND sequence_num <= t.upto
 ORDER BY sequence_num NULLS FIRST;
