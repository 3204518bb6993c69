-- Replay jobs, their slices, and the per-handler processed markers.
CREATE TABLE replay_job (
    job_id          uuid PRIMARY KEY,
    consumer_name   varchar(100) NOT NULL,
    replay_type     varchar(20)  NOT NULL
        CHECK (replay_type IN ('full', 'aggregate', 'time_range', 'event_type')),
    filter_params   jsonb        NOT NULL DEFAULT '{}',
    status          varchar(20)  NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    total_events    bigint       NOT NULL DEFAULT 0,
    processed_count bigint       NOT NULL DEFAULT 0,
    last_event_id   uuid,
    started_at      timestamptz,
    completed_at    timestamptz,
    created_at      timestamptz  NOT NULL DEFAULT now(),
    -- columns beyond the seed design's
    slice_by        varchar(20)  NOT NULL DEFAULT 'aggregate'
        CHECK (slice_by IN ('aggregate', 'time')),
    reset           boolean      NOT NULL DEFAULT false,
    snapshot        pg_snapshot  NOT NULL,       -- the frozen scope: see event.txid
    cache_epoch     text         NOT NULL,       -- generation of the Redis idempotency cache
    applied_count   bigint       NOT NULL DEFAULT 0,
    skipped_count   bigint       NOT NULL DEFAULT 0,
    planning_ms     integer,
    error           text
);
CREATE INDEX replay_job_created_at_idx ON replay_job (created_at DESC);
CREATE INDEX replay_job_consumer_idx ON replay_job (consumer_name, status);

CREATE TABLE replay_slice (
    job_id          uuid         NOT NULL REFERENCES replay_job (job_id) ON DELETE CASCADE,
    slice_no        integer      NOT NULL,
    -- bounds: aggregate slices hold aggregate ids first_aggregate..last_aggregate (inclusive);
    -- time slices hold occurred_at in [from_time, to_time)
    first_aggregate varchar(100),
    last_aggregate  varchar(100),
    from_time       timestamptz,
    to_time         timestamptz,
    status          varchar(20)  NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    total_events    bigint       NOT NULL DEFAULT 0,
    processed_count bigint       NOT NULL DEFAULT 0,
    applied_count   bigint       NOT NULL DEFAULT 0,
    skipped_count   bigint       NOT NULL DEFAULT 0,
    -- the last position processed: {"aggregate_id", "sequence_num"} or {"occurred_at", "event_id"}
    checkpoint      jsonb,
    last_event_id   uuid,
    -- bumped by every batch; a batch commits only if it still holds the version it read
    -- (compare-and-set), so two copies of one slice task can never apply one batch twice
    version         bigint       NOT NULL DEFAULT 0,
    attempts        integer      NOT NULL DEFAULT 0,
    task_id         text,
    last_error      text,
    heartbeat_at    timestamptz,
    started_at      timestamptz,
    completed_at    timestamptz,
    PRIMARY KEY (job_id, slice_no)
);

CREATE TABLE processed_event (
    handler_name varchar(100) NOT NULL,
    event_id     uuid         NOT NULL,
    processed_at timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (handler_name, event_id)
);

-- One row per handler: the generation of its Redis cache entries, a random token. A rebuild
-- replaces it, so cached "already processed" answers from before the rebuild can never be read
-- again, even if Redis could not be reached to delete them. Random rather than a counter: a
-- database dropped and created again (tests, the demo) must not meet its predecessor's entries.
CREATE TABLE handler_state (
    handler_name varchar(100) PRIMARY KEY,
    cache_epoch  text         NOT NULL DEFAULT gen_random_uuid()::text,
    updated_at   timestamptz  NOT NULL DEFAULT now()
);
