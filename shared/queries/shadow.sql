-- Shadow rebuilds (shared/shadow.py, 0013_shadow).

-- name: table_schema
-- The schema a handler's table resolves to for its unqualified name (the search path).
SELECT n.nspname AS schema
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass(%(table)s) AND c.relkind IN ('r', 'p');

-- name: insert_shadow
INSERT INTO replay_shadow (job_id, consumer, shadow_schema, old_schema, live_schema, tables)
VALUES (%(job_id)s, %(consumer)s, %(shadow_schema)s, %(old_schema)s, %(live_schema)s,
        %(tables)s);

-- name: open_shadow
-- The consumer's shadow that is not discarded yet, if any.
SELECT job_id, phase FROM replay_shadow
 WHERE consumer = %(consumer)s AND phase NOT IN ('discarded', 'failed');

-- name: shadow
SELECT s.*, j.status AS job_status, j.frozen_scope
  FROM replay_shadow s JOIN replay_job j USING (job_id)
 WHERE s.job_id = %(job_id)s;

-- name: lock_shadow
SELECT s.*, j.status AS job_status, j.frozen_scope
  FROM replay_shadow s JOIN replay_job j USING (job_id)
 WHERE s.job_id = %(job_id)s
   FOR UPDATE OF s;

-- name: unsettled
SELECT s.job_id FROM replay_shadow s JOIN replay_job j USING (job_id)
 WHERE s.phase IN ('rebuilding', 'catching_up') AND j.status = %(done)s;

-- name: set_phase
UPDATE replay_shadow SET phase = %(phase)s::varchar, updated_at = now(),
       cut_over_at = CASE WHEN %(phase)s::varchar = 'cut_over' THEN now() ELSE cut_over_at END
 WHERE job_id = %(job_id)s;

-- name: enter
-- The batch's transaction resolves unqualified names to the shadow schema first: the handler's
-- SQL, unchanged, writes the shadow tables (everything else is found where it was).
SELECT set_config('search_path', quote_ident(%(schema)s) || ', ' || current_setting('search_path'),
                  true);

-- name: start_position
-- The shadow's live position: the job's snapshot, so that its catch-up applies exactly the events
-- committed after it.
INSERT INTO live_checkpoint (handler_name, snapshot) VALUES (%(ledger)s, %(snapshot)s::pg_snapshot)
    ON CONFLICT (handler_name) DO UPDATE SET snapshot = EXCLUDED.snapshot, updated_at = now();

-- name: hold_planning_off
-- A swap waits for the consumer's plannings and resumes in progress, and holds new ones off
-- until it commits (they take this lock shared, shared/queries/jobs.sql): a job is either
-- committed before the swap checks for running jobs, or planned after it, with the bookkeeping
-- the swap leaves.
SELECT pg_advisory_xact_lock(hashtextextended('replay-plan:' || %(consumer)s, 0));

-- name: pause_live
-- A cutover or rollback holds the consumer's live processing off (live batches take this lock
-- shared, shared/applying.py) until it commits: no batch writes the tables as they are swapped.
SELECT pg_advisory_xact_lock(hashtextextended('replay-live:' || %(consumer)s, 0));

-- name: live_position
-- Where a ledger's catch-up starts after a swap: the live position the consumer had, or now.
INSERT INTO live_checkpoint (handler_name, snapshot)
SELECT %(ledger)s, coalesce((SELECT snapshot FROM live_checkpoint WHERE handler_name = %(consumer)s),
                            pg_current_snapshot())
    ON CONFLICT (handler_name) DO UPDATE SET snapshot = EXCLUDED.snapshot, updated_at = now();

-- name: rename_ledger
-- Everything kept under handler name %(from)s moves to %(to)s (progress, markers, state).
WITH progress AS (
    UPDATE handler_progress SET handler_name = %(to)s WHERE handler_name = %(from)s
), markers AS (
    UPDATE processed_event SET handler_name = %(to)s WHERE handler_name = %(from)s
)
UPDATE handler_state SET handler_name = %(to)s, updated_at = now() WHERE handler_name = %(from)s;

-- name: forget_ledger
-- A ledger's bookkeeping, gone with its tables.
WITH progress AS (
    DELETE FROM handler_progress WHERE handler_name = %(ledger)s
), markers AS (
    DELETE FROM processed_event WHERE handler_name = %(ledger)s
), position AS (
    DELETE FROM live_checkpoint WHERE handler_name = %(ledger)s
)
DELETE FROM handler_state WHERE handler_name = %(ledger)s;

-- name: drop_position
DELETE FROM live_checkpoint WHERE handler_name = %(ledger)s;

-- name: primary_key
-- A table's primary key columns, in key order (replay diff matches rows on them).
SELECT a.attname AS name
  FROM pg_index i
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
 WHERE i.indrelid = format('%%I.%%I', %(schema)s::text, %(table)s::text)::regclass
   AND i.indisprimary
 ORDER BY array_position(i.indkey::int2[], a.attnum);

-- name: columns
-- A table's columns, and whether `=` compares their values: json, xml and the geometric types
-- (and domains or arrays of them) have no equality, or one that is not (box compares areas); a
-- diff compares those as text.
SELECT a.attname AS name, NOT (e.typcategory = 'G' OR e.oid IN ('json'::regtype, 'xml'::regtype))
       AS comparable
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_type e ON e.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype
                                 WHEN t.typcategory = 'A' THEN t.typelem ELSE t.oid END
 WHERE a.attrelid = format('%%I.%%I', %(schema)s::text, %(table)s::text)::regclass
   AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;

-- name: lock_consumer
-- The live handler's state row, locked for the length of the swap (a reset's planning, which
-- bumps its epoch, waits for it or is waited for).
SELECT handler_name FROM handler_state WHERE handler_name = %(consumer)s FOR UPDATE;

-- name: owned_sequences
-- The sequences a table's serial columns own (their default, copied by LIKE, names the same
-- sequence in the shadow's copy): a swap unowns them, so they stay in the live schema, and gives
-- them to the table that goes live, so that dropping the other one never takes the sequence,
-- and the live table's default, with it.
SELECT d.objid::regclass::text AS sequence, a.attname AS column_name
  FROM pg_depend d
  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
 WHERE d.refobjid = format('%%I.%%I', %(schema)s::text, %(table)s::text)::regclass
   AND d.classid = 'pg_class'::regclass AND d.deptype = 'a';

-- name: lock_timeout
-- A swap waits for the readers of its tables at most this long (then fails, changing nothing),
-- so that a long reader never holds every other reader and live processing behind it.
SELECT set_config('lock_timeout', '10s', true);
