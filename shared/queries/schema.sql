-- Numbered migrations, applied once each (shared/schema.py); the migrations themselves are the
-- files of shared/migrations.

-- name: lock_migrations
-- Serializes migrate processes (and handlers' setup) until the transaction ends.
SELECT pg_advisory_xact_lock(%(key)s);

-- name: create_migration_table
CREATE TABLE IF NOT EXISTS schema_migration (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT version FROM schema_migration;

-- name: record_migration
INSERT INTO schema_migration (version, name) VALUES (%(version)s, %(name)s);
