-- Shadow rebuilds (issue 16): a handler's state rebuilt into copies of its tables in a schema of
-- their own while the live tables keep serving reads and live processing keeps writing them;
-- then compared (replay diff), swapped in (cutover), swapped back (rollback) or dropped
-- (discard). See shared/shadow.py.
--
-- The shadow's bookkeeping (progress, markers, coverage, live position) is kept under a handler
-- name of its own, its ledger (shadow:<job id>), so that nothing the live handler processed is
-- touched; a cutover swaps the two ledgers with the tables, and keeps the old ones under
-- old:<job id> for a rollback.
CREATE TABLE replay_shadow (
    -- written in the job's planning transaction, before the job's row
    job_id       uuid         PRIMARY KEY
                 REFERENCES replay_job (job_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    consumer     varchar(100) NOT NULL,
    -- the schema of the shadow tables (replay_shadow_<job>), and the one the live tables move to
    -- at cutover (replay_old_<job>)
    shadow_schema text        NOT NULL,
    old_schema    text        NOT NULL,
    -- the schema of the live tables (where the handler's unqualified names resolve)
    live_schema   text        NOT NULL,
    tables       text[]       NOT NULL,
    phase        varchar(20)  NOT NULL DEFAULT 'rebuilding'
                 CHECK (phase IN ('rebuilding', 'catching_up', 'ready', 'cut_over', 'rolled_back',
                                  'discarded', 'failed')),
    created_at   timestamptz  NOT NULL DEFAULT now(),
    updated_at   timestamptz  NOT NULL DEFAULT now(),
    cut_over_at  timestamptz
);

-- One shadow per consumer until it is discarded (or failed): a second one could not know which
-- tables are live.
CREATE UNIQUE INDEX replay_shadow_one_per_consumer ON replay_shadow (consumer)
 WHERE phase IN ('rebuilding', 'catching_up', 'ready', 'cut_over', 'rolled_back');
