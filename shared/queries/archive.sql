-- The archive tier (shared/archive, 0014_archive).

-- name: lock_archive
-- One archive or unarchive run at a time (session level: held until released or the connection
-- closes), so that a run's orphan sweep never takes another run's file for an orphan.
SELECT pg_try_advisory_lock(hashtextextended('replay-archive', 0)) AS locked;

-- name: unlock_archive
SELECT pg_advisory_unlock(hashtextextended('replay-archive', 0));

-- name: now
SELECT now() AS now;

-- name: oldest
-- The oldest event before the cut-off, if any: where the months of a run begin.
SELECT min(occurred_at) AS oldest FROM event WHERE occurred_at < %(before)s;

-- name: export_chunk
-- The next run of archivable events of a month ([{since}, {before}) after the cut-off is applied)
-- after ({after_aggregate}, {after_sequence}) in aggregate order, as CSV for COPY ... TO
-- ({columns}: segments.EXPORT_COLUMNS): seen by every live consumer (visible in each live
-- position: an event live processing has yet to read stays in the event table), and not the
-- newest of its aggregate: that one stays, so that the event table's unique key still guards
-- the next append (store.sql numbers it after the newest there).
COPY (
    SELECT {columns}
      FROM event e
     WHERE occurred_at >= {since} AND occurred_at < {before}
       AND (aggregate_id, sequence_num) > ({after_aggregate}, {after_sequence})
       AND NOT EXISTS (SELECT 1 FROM live_checkpoint c
                        WHERE NOT pg_visible_in_snapshot(e.txid, c.snapshot))
       AND EXISTS (SELECT 1 FROM event n
                    WHERE n.aggregate_id = e.aggregate_id AND n.sequence_num > e.sequence_num)
     ORDER BY aggregate_id, sequence_num
     LIMIT {limit}
) TO STDOUT (FORMAT csv);

-- name: delete_archived
-- The events a segment now holds leave the event table (in the transaction that lists it).
DELETE FROM event WHERE event_id = ANY(%(event_ids)s::uuid[]) AND occurred_at < %(before)s;

-- name: insert_segment
INSERT INTO archive_segment (segment_id, url, path, first_aggregate, last_aggregate, first_time,
                             last_time, events, event_types, bytes, sha256, max_txid,
                             archived_before)
VALUES (%(segment_id)s, %(url)s, %(path)s, %(first_aggregate)s, %(last_aggregate)s,
        %(first_time)s, %(last_time)s, %(events)s, %(event_types)s, %(bytes)s, %(sha256)s,
        %(max_txid)s::text::xid8, %(before)s);

-- name: analyze_events
-- After a run: the planner's statistics of the event table, which lost or gained many rows (with
-- a million rows' statistics left for forty thousand, a slice's batch sorted its whole range
-- instead of walking the index).
ANALYZE event;

-- name: generation
SELECT generation FROM archive_state;

-- name: bump_generation
UPDATE archive_state SET generation = generation + 1 RETURNING generation;

-- name: forget_caught_up
-- A handler caught up to a snapshot that may not see every archived event is caught up no
-- longer: its next catch-up must look at the archive as well (0012_caught_up reads only the
-- event table's txid index). Conservative: any snapshot whose xmin is not past the newest.
UPDATE handler_state SET caught_up = NULL, updated_at = now()
 WHERE caught_up IS NOT NULL AND pg_snapshot_xmin(caught_up) <= %(max_txid)s::text::xid8;

-- name: forget_catches_up_to
-- Likewise a catch-up job planned before the move, whose completion would make its handler caught
-- up to its snapshot (jobs.sql, complete_catch_up).
UPDATE replay_job SET catches_up_to = NULL
 WHERE catches_up_to IS NOT NULL AND pg_snapshot_xmin(catches_up_to) <= %(max_txid)s::text::xid8;

-- name: note_file
INSERT INTO archive_pending (segment_id, url, path) VALUES (%(segment_id)s, %(url)s, %(path)s);

-- name: noted_files
SELECT segment_id, url, path FROM archive_pending ORDER BY created_at;

-- name: forget_file
DELETE FROM archive_pending WHERE segment_id = %(segment_id)s;

-- name: segments
-- The segments that may hold events of an aggregate range and a time range (NULL: open), and
-- the archive's generation, read in one statement (one snapshot).
SELECT s.segment_id, s.url, s.path, s.events, s.sha256, s.first_aggregate, s.last_aggregate,
       g.generation
  FROM archive_state g
  LEFT JOIN archive_segment s
         ON (%(first_aggregate)s::text IS NULL OR s.last_aggregate >= %(first_aggregate)s)
        AND (%(last_aggregate)s::text IS NULL OR s.first_aggregate <= %(last_aggregate)s)
        AND (%(from_time)s::timestamptz IS NULL OR s.last_time >= %(from_time)s)
        AND (%(to_time)s::timestamptz IS NULL OR s.first_time < %(to_time)s)
        AND (%(event_types)s::text[] IS NULL OR s.event_types && %(event_types)s)
 ORDER BY s.first_aggregate, s.segment_id;

-- name: ids_sort_as_bytes
-- Whether the event table's aggregate ids sort as their bytes do (the C collation, or glibc's
-- C.UTF-8: code points): only then may a reader of a segment skip row groups and rows of other
-- aggregate ranges by comparing ids in Arrow, which compares bytes. Slices are cut, and read, in
-- the column's collation.
SELECT CASE WHEN c.collname = 'default'
            THEN d.datlocprovider = 'c' AND d.datcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8')
            ELSE c.collname IN ('C', 'POSIX', 'ucs_basic')
       END AS bytes
  FROM pg_attribute a
  JOIN pg_collation c ON c.oid = a.attcollation
  JOIN pg_database d ON d.datname = current_database()
 WHERE a.attrelid = 'event'::regclass AND a.attname = 'aggregate_id';

-- name: list_segments
SELECT segment_id, url, path, first_aggregate, last_aggregate, first_time, last_time, events,
       bytes, sha256, archived_before, created_at
  FROM archive_segment
 ORDER BY first_time, first_aggregate;

-- name: segments_in_time
-- The segments holding events in [%(from_time)s, %(to_time)s) (NULL: open).
SELECT segment_id, url, path, events, sha256
  FROM archive_segment
 WHERE (%(from_time)s::timestamptz IS NULL OR last_time >= %(from_time)s)
   AND (%(to_time)s::timestamptz IS NULL OR first_time < %(to_time)s)
 ORDER BY first_time, first_aggregate;

-- name: import_events
-- A segment's events back into the event table, with their own txid and times.
COPY event (event_id, aggregate_id, aggregate_type, event_type, payload, metadata, sequence_num,
            occurred_at, created_at, txid)
FROM STDIN (FORMAT binary);

-- name: drop_segment
-- A segment unarchived: its file is deleted after the commit, pending until then.
WITH gone AS (DELETE FROM archive_segment WHERE segment_id = %(segment_id)s
              RETURNING segment_id, url, path)
INSERT INTO archive_pending (segment_id, url, path) SELECT segment_id, url, path FROM gone;

-- name: archived_event_types
-- The event types the archive holds of %(event_types)s.
SELECT DISTINCT t FROM archive_segment, unnest(event_types) AS t WHERE t = ANY(%(event_types)s);

-- name: create_staged
-- A slice's (or a planning's) archived events, staged in a temporary table of this session:
-- the event table's columns, no constraints.
-- {table}: replay_archived for a slice, replay_archived_one for one aggregate's read (a snapshot
-- pass loads aggregates on a slice's connection: it must not drop the slice's table).
CREATE TEMPORARY TABLE {table} (LIKE event INCLUDING DEFAULTS);

-- name: create_staged_keys
-- What a planning stages of archived events: what it counts and filters them by.
CREATE TEMPORARY TABLE replay_archived_keys (
    event_id uuid, aggregate_id varchar(100), sequence_num bigint, occurred_at timestamptz,
    event_type varchar(100), txid xid8
) ON COMMIT DROP;

-- name: index_staged
CREATE INDEX ON pg_temp.{table} (aggregate_id, sequence_num);

-- name: create_staged_counts
-- What a planning counts of the archived events of its scope, per aggregate (computed from the
-- segments' aggregate column): what cutting a scope into slices of exact counts needs.
CREATE TEMPORARY TABLE replay_archived_counts (aggregate_id varchar(100), n bigint) ON COMMIT DROP;

-- name: counted
SELECT to_regclass('pg_temp.replay_archived_counts') IS NOT NULL AS counted;

-- name: index_staged_keys
CREATE INDEX replay_archived_keys_order ON replay_archived_keys (aggregate_id, sequence_num);

-- name: analyze_staged_keys
ANALYZE replay_archived_keys;

-- name: staged
SELECT to_regclass('pg_temp.replay_archived_keys') IS NOT NULL AS staged;

-- name: drop_staged
DROP TABLE IF EXISTS pg_temp.{table};
