-- Live processing: a gap-free position per handler, and a wake-up call on every append.

-- The live position of a handler is a snapshot: the events it has handled are exactly those
-- visible in it. Each step takes the current snapshot and handles the events visible in the new
-- one but not in the old: precisely the transactions that committed in between, whatever order
-- they started, wrote or got their ids in. A transaction still open at a step is invisible in
-- both and is picked up by the step after its commit. (Tailing by a sequence or a timestamp
-- skips a transaction that commits after a later one: the classic gap.)
CREATE TABLE live_checkpoint (
    handler_name varchar(100) PRIMARY KEY,
    snapshot     pg_snapshot  NOT NULL,
    events       bigint       NOT NULL DEFAULT 0,
    updated_at   timestamptz  NOT NULL DEFAULT now()
);

-- Events newer than a snapshot's xmin are found by this index, not by a scan.
CREATE INDEX event_txid_idx ON event (txid);

-- NOTIFY is delivered when the appending transaction commits: live consumers wake at once
-- instead of polling. Statement-level: one notification per INSERT or COPY, not per row.
CREATE FUNCTION event_appended_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('event_appended', '');
    RETURN NULL;
END $$;

CREATE TRIGGER event_appended AFTER INSERT ON event
    FOR EACH STATEMENT EXECUTE FUNCTION event_appended_notify();
