-- Catch-ups planned from progress (issue 15): a catch-up of the event table reads, for each
-- aggregate, only the events after the handler's watermark as it stood when the job was planned,
-- and only aggregates with something there. Those starts are part of the job's frozen scope
-- (its exact counts, and a resumed slice reads what it would have): one row per aggregate with
-- events to read, deleted when the job completes. The job's frozen scope names it (see
-- shared/sources/postgres.py).
CREATE TABLE replay_start (
    job_id         uuid         NOT NULL
                   REFERENCES replay_job (job_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    aggregate_id   varchar(100) NOT NULL,
    after_sequence bigint       NOT NULL,
    events         bigint       NOT NULL,
    PRIMARY KEY (job_id, aggregate_id)
);

