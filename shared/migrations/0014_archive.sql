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

-- A file a run is about to write (archive) or delete (unarchive), recorded first: a run that
-- crashes leaves its file here, and the next run deletes exactly these, never a file it does not
-- know (another database's archive may share the prefix, or a URL be spelt another way).
CREATE TABLE archive_pending (
    segment_id uuid        PRIMARY KEY,
    url        text        NOT NULL,
    path       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

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

-- The archived events of one aggregate that a planning staged (shared/archive/staging.py,
-- replay_archived_keys), if it staged any: a reset of the aggregate forgets their markers too.
CREATE FUNCTION replay_archived_event_ids(aggregate text) RETURNS SETOF uuid
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF to_regclass('pg_temp.replay_archived_keys') IS NOT NULL THEN
        RETURN QUERY EXECUTE
            'SELECT event_id FROM pg_temp.replay_archived_keys WHERE aggregate_id = $1'
            USING aggregate;
    END IF;
END $$;

-- "Has handler H processed event E?" (0010_handler_progress: replay_processed) for an event
-- given with its position, as an archived one must be (the event table no longer holds it, and
-- replay_processed finds positions there): its marker, its aggregate's watermark, or the coverage
-- of the handler's last completed full rebuild.
CREATE FUNCTION replay_processed_at(handler text, event uuid, aggregate text, seq bigint, tx xid8)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM processed_event p
                    WHERE p.handler_name = handler AND p.event_id = event)
        OR EXISTS (SELECT 1 FROM handler_progress w
                    WHERE w.handler_name = handler AND w.aggregate_id = aggregate
                      AND seq <= w.watermark)
        OR EXISTS (SELECT 1 FROM handler_state h
                    WHERE h.handler_name = handler AND h.rebuild_completed
                      AND pg_visible_in_snapshot(tx, h.rebuild_snapshot))
$$;
