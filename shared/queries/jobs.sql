-- Replay jobs as rows (shared/jobs.py, shared/planning.py, shared/views.py, shared/reconcile.py).
-- Statuses travel as parameters (shared.jobs.Status members; a set of them as a list, matched
-- with = ANY): the enum is the one place that spells them.

-- name: planning_memory
-- Planning sorts and groups what it counts per aggregate (a catch-up's new events: 50,000 rows
-- spilled to disk with the default 4MB); for its transaction only. SET takes no snapshot (it
-- comes before lock_markers, which must precede the transaction's snapshot).
SET LOCAL work_mem = '64MB';

-- name: lock_markers
-- Taken by a rebuild's planning before it freezes its scope, held until it commits: no
-- processed marker can be committed between the freeze and the reset (shared/planning.py).
-- handler_progress first: a claim takes it before processed_event (no lock cycle with one).
LOCK TABLE handler_progress, processed_event IN SHARE ROW EXCLUSIVE MODE;

-- name: insert_job
-- The planned job, written once with its final values; %(ended)s for a job with nothing to
-- replay, which is completed at once.
INSERT INTO replay_job (job_id, consumer_name, replay_type, filter_params, slice_by, reset,
                        frozen_scope, cache_epoch, covered_snapshot, on_error,
                        max_events_per_second, source, total_events, planning_ms, status,
                        catches_up_to, started_at, completed_at)
VALUES (%(job_id)s, %(consumer_name)s, %(replay_type)s, %(filter_params)s, %(slice_by)s,
        %(reset)s, %(frozen)s, %(cache_epoch)s, %(covered)s::pg_snapshot, %(on_error)s,
        %(max_events_per_second)s, %(source)s, %(total_events)s, %(planning_ms)s, %(status)s,
        %(catches_up_to)s::pg_snapshot,
        CASE WHEN %(ended)s::boolean THEN now() END, CASE WHEN %(ended)s::boolean THEN now() END);

-- name: insert_slice
INSERT INTO replay_slice (job_id, slice_no, first_aggregate, last_aggregate, from_time, to_time,
                          total_events, task_id, dispatched_at)
VALUES (%(job_id)s, %(slice_no)s, %(first_aggregate)s, %(last_aggregate)s, %(from_time)s,
        %(to_time)s, %(total_events)s, %(task_id)s, now());

-- name: load_job
SELECT job_id, consumer_name, replay_type, filter_params, status, slice_by, reset, frozen_scope,
       cache_epoch, total_events, on_error, covered_snapshot::text AS covered_snapshot,
       max_events_per_second, source
  FROM replay_job
 WHERE job_id = %(job_id)s;

-- name: lock_job
-- NO KEY UPDATE, not UPDATE: it does not conflict with the KEY SHARE lock that inserting a
-- parked_event (a foreign key to the job) takes while a batch holds its slice's row.
SELECT status FROM replay_job WHERE job_id = %(job_id)s FOR NO KEY UPDATE;

-- name: hold_swaps_off
-- Planning holds its consumer's tables in place (a shadow's cutover or rollback takes this lock
-- exclusively, shared/queries/shadow.sql): at session level, taken before the planning
-- transaction's snapshot, released when its connection closes after the commit, so that a swap
-- either sees the job planned or is seen by its planning, never neither.
SELECT pg_advisory_lock_shared(hashtextextended('replay-plan:' || %(consumer)s, 0));

-- name: hold_swaps_off_here
-- The same, for one transaction (a resume reopening a job).
SELECT pg_advisory_xact_lock_shared(hashtextextended('replay-plan:' || consumer_name, 0))
  FROM replay_job WHERE job_id = %(job_id)s;

-- name: active_job
-- The consumer's active job (%(active)s: the unfinished statuses), if any.
SELECT job_id FROM replay_job
 WHERE consumer_name = %(consumer_name)s AND status = ANY(%(active)s);

-- name: other_active_job
-- Another active job of this job's consumer, if any.
SELECT a.job_id
  FROM replay_job j
  JOIN replay_job a ON a.consumer_name = j.consumer_name AND a.status = ANY(%(active)s)
 WHERE j.job_id = %(job_id)s AND a.job_id <> j.job_id;

-- name: unfinished_jobs
SELECT job_id FROM replay_job WHERE status = ANY(%(active)s) ORDER BY created_at;

-- name: set_rate
UPDATE replay_job SET max_events_per_second = %(rate)s WHERE job_id = %(job_id)s;

-- name: slice_totals
-- What the job's slice rows say: how many ended how, the summed counts, the first failed
-- slice's error and the last event processed.
SELECT count(*) AS slices,
       count(*) FILTER (WHERE status = %(completed)s) AS completed_slices,
       count(*) FILTER (WHERE status = %(failed)s) AS failed_slices,
       count(*) FILTER (WHERE status = ANY(%(active)s)) AS unfinished,
       coalesce(sum(total_events), 0)::bigint AS total,
       coalesce(sum(processed_count), 0)::bigint AS processed,
       coalesce(sum(applied_count), 0)::bigint AS applied,
       coalesce(sum(skipped_count), 0)::bigint AS skipped,
       coalesce(sum(poison_count), 0)::bigint AS poisoned,
       (array_agg(last_error ORDER BY slice_no) FILTER (WHERE status = %(failed)s))[1] AS error,
       (array_agg(last_event_id ORDER BY slice_no DESC)
           FILTER (WHERE last_event_id IS NOT NULL))[1] AS last_event_id
  FROM replay_slice
 WHERE job_id = %(job_id)s;

-- name: close_job
UPDATE replay_job
   SET status = %(status)s, processed_count = %(processed)s, applied_count = %(applied)s,
       skipped_count = %(skipped)s, poison_count = %(poisoned)s,
       last_event_id = %(last_event_id)s, error = %(error)s, completed_at = now()
 WHERE job_id = %(job_id)s;

-- name: complete_rebuild
-- A completed full rebuild: what its frozen scope covers is now processed.
UPDATE handler_state SET rebuild_completed = true, updated_at = now()
 WHERE rebuild_job_id = %(job_id)s;

-- name: complete_catch_up
-- A catch-up of the whole event table that completed with nothing skipped or parked: every event
-- visible in its snapshot is now processed (0012_caught_up).
UPDATE handler_state h SET caught_up = j.catches_up_to, updated_at = now()
  FROM replay_job j
 WHERE j.job_id = %(job_id)s AND j.catches_up_to IS NOT NULL AND h.handler_name = j.consumer_name;

-- name: end_unfinished_slices
-- A failed or cancelled job's unfinished slices (%(active)s) end with it (%(status)s); a
-- running copy stops at its next batch (its compare-and-set requires a running slice).
UPDATE replay_slice SET status = %(status)s, owner = NULL,
                        last_error = coalesce(%(error)s, last_error)
 WHERE job_id = %(job_id)s AND status = ANY(%(active)s);

-- name: reopen_job
-- A resumed job runs again, with its handler's cache epoch now: a rebuild since may have
-- replaced it, and entries of the old epoch must not be trusted.
UPDATE replay_job j
   SET status = %(running)s, error = NULL, completed_at = NULL,
       cache_epoch = coalesce((SELECT h.cache_epoch FROM handler_state h
                                WHERE h.handler_name = j.consumer_name), j.cache_epoch)
 WHERE job_id = %(job_id)s;

-- name: reopen_slices
-- Every slice not completed goes back to pending, keeping its checkpoint, with a new task id.
UPDATE replay_slice
   SET status = %(pending)s, owner = NULL, last_error = NULL, error_event_id = NULL,
       task_id = gen_random_uuid()::text, dispatched_at = now()
 WHERE job_id = %(job_id)s AND status <> %(completed)s
RETURNING slice_no, task_id;

-- name: job_views
-- Jobs as get_job and `replay jobs` show them: one job (%(job_id)s) or the latest %(limit)s
-- (job_id NULL). An unfinished job's counts are summed from its slices as they run; a finished
-- job's (%(final)s) are its own, stored when it ended.
SELECT j.job_id::text AS job_id, j.consumer_name AS consumer, j.replay_type, j.filter_params,
       j.status, j.source, j.slice_by, j.reset, j.total_events,
       CASE WHEN j.status = ANY(%(final)s) THEN j.processed_count
            ELSE coalesce(s.processed, 0) END AS processed_count,
       CASE WHEN j.status = ANY(%(final)s) THEN j.applied_count
            ELSE coalesce(s.applied, 0) END AS applied_count,
       CASE WHEN j.status = ANY(%(final)s) THEN j.skipped_count
            ELSE coalesce(s.skipped, 0) END AS skipped_count,
       j.on_error, j.poison_count, j.max_events_per_second::float8 AS max_events_per_second,
       j.last_event_id::text AS last_event_id, j.error, j.planning_ms,
       j.created_at, j.started_at, j.completed_at, coalesce(s.n, 0) AS slice_count,
       sh.phase AS shadow_phase, now() AS read_at
  FROM replay_job j
  LEFT JOIN replay_shadow sh ON sh.job_id = j.job_id
  LEFT JOIN LATERAL (
        SELECT count(*) AS n, sum(processed_count)::bigint AS processed,
               sum(applied_count)::bigint AS applied, sum(skipped_count)::bigint AS skipped
          FROM replay_slice WHERE job_id = j.job_id
  ) s ON TRUE
 WHERE %(job_id)s::uuid IS NULL OR j.job_id = %(job_id)s::uuid
 ORDER BY j.created_at DESC
 LIMIT %(limit)s;

-- name: slice_views
SELECT s.slice_no, s.status, s.first_aggregate, s.last_aggregate, s.from_time, s.to_time,
       s.total_events, s.processed_count, s.applied_count, s.skipped_count, s.poison_count,
       s.checkpoint, s.attempts, s.task_id, s.owner::text AS owner, s.last_error,
       s.error_event_id::text AS error_event_id,
       greatest(s.heartbeat_at, h.beat_at) AS heartbeat_at, s.dispatched_at, s.started_at,
       s.completed_at
  FROM replay_slice s
  LEFT JOIN slice_heartbeat h ON (h.job_id, h.slice_no) = (s.job_id, s.slice_no)
 WHERE s.job_id = %(job_id)s
 ORDER BY s.slice_no;

-- name: reconciler_lock_timeout
-- A backstop: no statement of a reconciler pass may wait long for a lock held by a batch.
SET lock_timeout = '5s';

-- name: try_reconciler_lock
-- Reconciler passes never overlap (%(key)s: the reconciler's advisory lock).
SELECT pg_try_advisory_lock(%(key)s) AS ok;

-- name: release_reconciler_lock
SELECT pg_advisory_unlock(%(key)s);

-- name: job_error
SELECT error FROM replay_job WHERE job_id = %(job_id)s;

-- name: drop_starts
-- A completed catch-up's starts (0011_catch_up_starts): nothing will read them again.
DELETE FROM replay_start WHERE job_id = %(job_id)s;
