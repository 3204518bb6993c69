-- Event sources (shared/sources): a job records the source it reads, by its registered name, and
-- its frozen scope in that source's own notation (the PostgreSQL event table's is a pg_snapshot,
-- kept as its text; a list or a topic may use a position). Existing jobs read the event table.
ALTER TABLE replay_job ADD COLUMN source text NOT NULL DEFAULT 'postgres';
ALTER TABLE replay_job ALTER COLUMN snapshot TYPE text USING snapshot::text;
ALTER TABLE replay_job RENAME COLUMN snapshot TO frozen_scope;
