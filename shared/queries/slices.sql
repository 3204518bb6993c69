-- The slices of replay jobs as rows (shared/slices.py): what a slice attempt runs on its own
-- row, the parked events beside it, and the reconciler's view of slices nobody works on.
-- Statuses travel as parameters (shared.jobs.Status members; a set of them as a list).

-- name: take_slice
-- A new attempt owns the slice (a new owner id) if the slice and its job are unfinished
-- (%(active)s) and, when %(task_id)s is given, it is the slice's latest dispatch (or a redelivery
-- of it): a copy from before a resume or a re-dispatch belongs to a chord that no longer counts.
UPDATE replay_slice s
   SET status = %(running)s, owner = gen_random_uuid(), attempts = attempts + 1,
       heartbeat_at = now(), started_at = coalesce(s.started_at, now())
  FROM replay_job j
 WHERE s.job_id = %(job_id)s AND s.slice_no = %(slice_no)s AND j.job_id = s.job_id
   AND s.status = ANY(%(active)s) AND j.status = ANY(%(active)s)
   AND (%(task_id)s::text IS NULL OR s.task_id = %(task_id)s::text)
RETURNING s.*;

-- name: slice_row
SELECT * FROM replay_slice WHERE job_id = %(job_id)s AND slice_no = %(slice_no)s;

-- name: start_job
-- The first slice taken starts its pending job.
UPDATE replay_job SET status = %(running)s, started_at = coalesce(started_at, now())
 WHERE job_id = %(job_id)s AND status = %(pending)s;

-- name: lock_slice_version
-- The compare-and-set that opens a batch's transaction: the slice moves to its next version
-- only if this attempt (%(owner)s) still runs it at %(version)s.
UPDATE replay_slice SET version = version + 1, heartbeat_at = now()
 WHERE job_id = %(job_id)s AND slice_no = %(slice_no)s AND owner = %(owner)s
   AND version = %(version)s AND status = %(running)s
RETURNING version;

-- name: slice_status
SELECT status FROM replay_slice WHERE job_id = %(job_id)s AND slice_no = %(slice_no)s;

-- name: slice_standing
-- A running attempt's view between two batches: the slice's status, whether the next
-- compare-and-set would pass (ours), and the job's speed limit now.
SELECT s.status,
       coalesce(s.status = %(running)s AND s.owner = %(owner)s AND s.version = %(version)s,
                false) AS ours,
       j.max_events_per_second
  FROM replay_slice s
  JOIN replay_job j ON j.job_id = s.job_id
 WHERE s.job_id = %(job_id)s AND s.slice_no = %(slice_no)s;

-- name: record_batch
UPDATE replay_slice
   SET checkpoint = %(checkpoint)s, last_event_id = %(last_event_id)s,
       processed_count = processed_count + %(processed)s,
       applied_count = applied_count + %(applied)s,
       skipped_count = skipped_count + %(skipped)s,
       poison_count = poison_count + %(poisoned)s
 WHERE job_id = %(job_id)s AND slice_no = %(slice_no)s;

-- name: complete_slice
UPDATE replay_slice SET status = %(completed)s, completed_at = now(), heartbeat_at = now()
 WHERE job_id = %(job_id)s AND slice_no = %(slice_no)s;

-- name: fail_slice
-- Only an unfinished slice (%(active)s), and only if %(owner)s (when given) still owns it.
UPDATE replay_slice
   SET status = %(failed)s, last_error = %(error)s, error_event_id = %(event_id)s,
       heartbeat_at = now()
 WHERE job_id = %(job_id)s AND slice_no = %(slice_no)s AND status = ANY(%(active)s)
   AND (%(owner)s::uuid IS NULL OR owner = %(owner)s::uuid);

-- name: park_event
-- An event parked again (a retry failed) keeps its row: the new error, one more attempt.
INSERT INTO parked_event (job_id, event_id, handler_name, slice_no, error, traceback,
                          aggregate_id, sequence_num, event_type, metadata)
VALUES (%(job_id)s, %(event_id)s, %(handler_name)s, %(slice_no)s, %(error)s, %(traceback)s,
        %(aggregate_id)s, %(sequence_num)s, %(event_type)s, %(metadata)s)
ON CONFLICT (job_id, event_id) DO UPDATE
   SET error = EXCLUDED.error, traceback = EXCLUDED.traceback,
       aggregate_id = coalesce(parked_event.aggregate_id, EXCLUDED.aggregate_id),
       sequence_num = coalesce(parked_event.sequence_num, EXCLUDED.sequence_num),
       event_type = coalesce(parked_event.event_type, EXCLUDED.event_type),
       metadata = coalesce(parked_event.metadata, EXCLUDED.metadata),
       attempts = parked_event.attempts + 1, resolved_at = NULL;

-- name: parked_events
-- An event of the event table is described by its row there; one of another source (a Kafka
-- message) by what was kept when it was parked.
SELECT p.event_id, p.handler_name, p.slice_no, p.error, p.traceback, p.attempts, p.parked_at,
       p.resolved_at, coalesce(e.aggregate_id, p.aggregate_id) AS aggregate_id,
       coalesce(e.sequence_num, p.sequence_num) AS sequence_num,
       coalesce(e.event_type, p.event_type) AS event_type,
       coalesce(e.metadata, p.metadata) AS metadata
  FROM parked_event p
  LEFT JOIN event e ON e.event_id = p.event_id
 WHERE p.job_id = %(job_id)s AND (NOT %(unresolved_only)s OR p.resolved_at IS NULL)
 ORDER BY 9, 10, p.slice_no;

-- name: resolve_parked
UPDATE parked_event SET resolved_at = now()
 WHERE job_id = %(job_id)s AND event_id = %(event_id)s;

-- name: stale_slices
-- Slices of unfinished jobs (%(active)s) that nobody seems to work on: running while neither
-- their batches nor their pulse were seen for %(stale)s seconds, or pending since a dispatch
-- that long ago.
SELECT s.job_id, s.slice_no, s.status, s.task_id, s.attempts
  FROM replay_slice s
  JOIN replay_job j ON j.job_id = s.job_id AND j.status = ANY(%(active)s)
  LEFT JOIN slice_heartbeat h ON (h.job_id, h.slice_no) = (s.job_id, s.slice_no)
 WHERE (s.status = %(running)s
        AND greatest(s.heartbeat_at, h.beat_at) < now() - make_interval(secs => %(stale)s))
    OR (s.status = %(pending)s
        AND coalesce(s.dispatched_at, s.started_at, now())
            < now() - make_interval(secs => %(stale)s))
 ORDER BY s.job_id, s.slice_no;

-- name: lock_slice_unless_busy
-- SKIP LOCKED: a row a batch holds is a live slice's; never wait for it.
SELECT 1 FROM replay_slice WHERE job_id = %(job_id)s AND slice_no = %(slice_no)s
   FOR NO KEY UPDATE SKIP LOCKED;

-- name: redispatch
-- The slice, if it is still stale ({stale}: the query stale_slices), gets a new task id and
-- goes back to pending without an owner.
UPDATE replay_slice s
   SET task_id = %(task_id)s, dispatched_at = now(), owner = NULL, status = %(pending)s
  FROM ({stale}) stale
 WHERE (stale.job_id, stale.slice_no) = (%(job_id)s, %(slice_no)s)
   AND (s.job_id, s.slice_no) = (stale.job_id, stale.slice_no)
RETURNING 1;

-- name: slice_labels
-- What a slice task is labelled with in Flower: its bounds, its size and how many slices its
-- job has.
SELECT s.slice_no, s.first_aggregate, s.last_aggregate, s.from_time, s.to_time, s.total_events,
       count(*) OVER () AS slices, j.source
  FROM replay_slice s
  JOIN replay_job j ON j.job_id = s.job_id
 WHERE s.job_id = %(job_id)s
 ORDER BY s.slice_no;

-- name: slice_error
SELECT last_error FROM replay_slice WHERE job_id = %(job_id)s AND slice_no = %(slice_no)s;
