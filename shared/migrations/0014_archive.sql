-- The archive tier (issue 17): events older than a cut-off moved out of the event table into
-- immutable Parquet segment files (shared/archive), listed here. An event is in exactly one tier:
-- a segment's row and the deletion of its events from the event table commit together, after
-- the file was written and read back. Segments keep every column of the event table, txid
-- included, so a job's frozen scope (a snapshot) selects the same events in either tier.
CREATE TABLE archive_segment (
    segment_id      uuid         PRIMARY KEY,
    -- the store (a filesystem URL: file:///dir, s3://bucket/prefix) and the file under it
    url             text         NOT NULL,
    path            text         NOT NULL,
    -- what it holds, for pruning: an aggregate range, a time range (occurred_at), and counts
    first_aggregate varchar(100) NOT NULL,
    last_aggregate  varchar(100) NOT NULL,
    first_time      timestamptz  NOT NULL,
    last_time       timestamptz  NOT NULL,
    events          bigint       NOT NULL CHECK (events > 0),
    event_types     text[]       NOT NULL,
    bytes           bigint       NOT NULL,
    sha256          text         NOT NULL,
    -- the newest transaction among its events: a handler caught up to a snapshot that does not
    -- see it is caught up no longer once the events leave the event table
    max_txid        xid8         NOT NULL,
    archived_before timestamptz  NOT NULL,
    created_at      timestamptz  NOT NULL DEFAULT now(),
    UNIQUE (url, path)
);
CREATE INDEX archive_segment_range_idx ON archive_segment (first_aggregate, last_aggregate);

-- Bumped by every commit that moves events between the tiers. A slice that staged archived
-- events at one generation reads its batches through replay_archive_unchanged(generation):
-- within the batch's own statement, so the check and the read of the event table share a
-- snapshot. After a move the statement fails as a serialization failure, and the slice is
-- retried from its checkpoint, staging again.
CREATE TABLE archive_state (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    generation bigint  NOT NULL DEFAULT 0
);
INSERT INTO archive_state DEFAULT VALUES;

CREATE FUNCTION replay_archive_unchanged(staged bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF (SELECT generation FROM archive_state) IS DISTINCT FROM staged THEN
        RAISE EXCEPTION 'events moved between the event table and the archive since this slice'
                        ' read the archive (generation %); retrying from its checkpoint', staged
              USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN true;
END $$;
