-- The live consumer's position per handler (shared/live.py, migrations/0005_live.sql).

-- name: lock_checkpoint
-- The handler's live position, locked: two consumers of one handler take turns.
SELECT snapshot::text AS s FROM live_checkpoint WHERE handler_name = %(handler)s FOR UPDATE;

-- name: current_snapshot
SELECT pg_current_snapshot()::text AS s;

-- name: insert_checkpoint
INSERT INTO live_checkpoint (handler_name, snapshot) VALUES (%(handler)s, %(snapshot)s::pg_snapshot)
    ON CONFLICT (handler_name) DO NOTHING;

-- name: move_checkpoint
UPDATE live_checkpoint
   SET snapshot = %(snapshot)s::pg_snapshot, events = events + %(events)s, updated_at = now()
 WHERE handler_name = %(handler)s;
