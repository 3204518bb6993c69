-- Aggregate snapshots: the folded state of an aggregate as of one sequence_num, by one version of
-- its reducer. A snapshot of another reducer version, or one whose state cannot be read, is
-- ignored (and written again), never trusted.
CREATE TABLE snapshot (
    aggregate_id    varchar(100) NOT NULL,
    aggregate_type  varchar(50)  NOT NULL,
    sequence_num    bigint       NOT NULL,
    reducer_version integer      NOT NULL,
    state           jsonb        NOT NULL,
    created_at      timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_id, reducer_version, sequence_num)
);
