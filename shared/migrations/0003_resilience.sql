-- Resilience: slice ownership, dispatch times, poison-event policies and the dead-letter table,
-- and one active job per consumer.

ALTER TABLE replay_job
    ADD COLUMN on_error varchar(10) NOT NULL DEFAULT 'fail'
        CHECK (on_error IN ('fail', 'skip', 'park')),
    ADD COLUMN poison_count bigint NOT NULL DEFAULT 0;

-- Enforced by the database, not by a check in Python: two concurrent submits for one consumer
-- cannot both insert a pending job; the second fails on this index and names the first.
CREATE UNIQUE INDEX replay_job_one_active_per_consumer
    ON replay_job (consumer_name) WHERE status IN ('pending', 'running');

ALTER TABLE replay_slice
    -- The attempt that owns the slice: set by each start, checked by every batch. A copy of the
    -- task that lost ownership (a redelivery started a newer copy) stops at its next batch.
    ADD COLUMN owner uuid,
    ADD COLUMN dispatched_at timestamptz,
    ADD COLUMN poison_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN error_event_id uuid;

CREATE INDEX replay_slice_unfinished_idx ON replay_slice (status, heartbeat_at)
    WHERE status IN ('pending', 'running');

-- Dead letters of on_error='park': the event, the handler, why it failed.
CREATE TABLE parked_event (
    job_id       uuid         NOT NULL REFERENCES replay_job (job_id) ON DELETE CASCADE,
    event_id     uuid         NOT NULL,
    handler_name varchar(100) NOT NULL,
    slice_no     integer      NOT NULL,
    error        text         NOT NULL,
    traceback    text         NOT NULL,
    attempts     integer      NOT NULL DEFAULT 1,
    parked_at    timestamptz  NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    PRIMARY KEY (job_id, event_id)
);
CREATE INDEX parked_event_unresolved_idx ON parked_event (job_id) WHERE resolved_at IS NULL;

-- Heartbeats of running slices, apart from the slice rows: a batch holds its slice's row lock
-- for as long as it runs, and a pulse must get through a slow batch, or the slice looks dead.
CREATE TABLE slice_heartbeat (
    job_id   uuid        NOT NULL,
    slice_no integer     NOT NULL,
    owner    uuid        NOT NULL,
    beat_at  timestamptz NOT NULL,
    PRIMARY KEY (job_id, slice_no),
    FOREIGN KEY (job_id, slice_no) REFERENCES replay_slice (job_id, slice_no) ON DELETE CASCADE
);
