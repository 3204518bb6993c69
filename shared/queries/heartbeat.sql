-- A running slice's pulse (shared/heartbeat.py).

-- name: beat
-- A row of its own (slice_heartbeat), not the slice's: a batch holds the slice row's lock while
-- it runs, and the pulse must neither wait for it nor be skipped, or a slow batch looks dead.
INSERT INTO slice_heartbeat (job_id, slice_no, owner, beat_at)
VALUES (%(job_id)s, %(slice_no)s, %(owner)s, clock_timestamp())
    ON CONFLICT (job_id, slice_no) DO UPDATE SET owner = EXCLUDED.owner, beat_at = EXCLUDED.beat_at;
