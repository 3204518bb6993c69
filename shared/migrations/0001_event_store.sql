-- The event store: one row per event, sequence_num monotonic per aggregate.
CREATE TABLE event (
    event_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregate_id   varchar(100) NOT NULL,
    aggregate_type varchar(50)  NOT NULL,
    event_type     varchar(100) NOT NULL,
    payload        jsonb        NOT NULL DEFAULT '{}',
    metadata       jsonb        NOT NULL DEFAULT '{}',
    sequence_num   bigint       NOT NULL,
    occurred_at    timestamptz  NOT NULL DEFAULT now(),
    created_at     timestamptz  NOT NULL DEFAULT now(),
    -- The transaction that appended the event. A replay job freezes its scope as the events whose
    -- transaction is visible in the snapshot taken when it was planned
    -- (pg_visible_in_snapshot(txid, job.snapshot)): unlike a timestamp or a sequence, this cannot
    -- miss an event whose transaction began before planning but committed after it.
    txid           xid8         NOT NULL DEFAULT pg_current_xact_id(),
    -- Optimistic concurrency: two writers cannot both append sequence_num N to one aggregate.
    -- The unique index also serves ordered reads of one aggregate and keyset pagination.
    CONSTRAINT event_aggregate_sequence_key UNIQUE (aggregate_id, sequence_num),
    CONSTRAINT event_sequence_positive CHECK (sequence_num >= 1)
);

CREATE INDEX event_type_occurred_at_idx ON event (event_type, occurred_at);
CREATE INDEX event_occurred_at_idx ON event (occurred_at);
