-- An optional speed limit per job, for all of its workers together; changed while it runs by
-- `replay throttle` (slices re-read it every few seconds). NULL: as fast as the workers go.
ALTER TABLE replay_job
    ADD COLUMN max_events_per_second numeric CHECK (max_events_per_second > 0);
