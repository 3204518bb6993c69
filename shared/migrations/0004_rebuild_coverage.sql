-- Positional rebuilds: a full rebuild (reset=True, no filters) writes no per-event markers. What
-- it applied is described by its snapshot instead: every event visible in the handler's
-- rebuild_snapshot belongs to that rebuild. Catch-up replays and live processing treat those
-- events as processed (when the rebuild completed) or leave them to the rebuild (while it runs).
ALTER TABLE handler_state
    ADD COLUMN rebuild_job_id    uuid,
    ADD COLUMN rebuild_snapshot  pg_snapshot,
    ADD COLUMN rebuild_completed boolean NOT NULL DEFAULT false;

-- The coverage a catch-up job was planned with (the handler's completed rebuild, if any).
ALTER TABLE replay_job ADD COLUMN covered_snapshot pg_snapshot;
