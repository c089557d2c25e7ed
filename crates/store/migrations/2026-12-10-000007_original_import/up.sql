-- Ledger of `cowrie-loader import-original`: what was copied from which original cowrieprocessor database.
-- One `original_imports` row per run (written when it starts, completed when it ends) with the counts per table;
-- a run that changed nothing has `changed = 0`, which is how a second import of the same database shows it was a no-op.
CREATE TABLE original_imports (
    id BIGSERIAL PRIMARY KEY,
    -- the source URL with any password replaced by ********
    source TEXT NOT NULL,
    source_kind TEXT NOT NULL CHECK (source_kind IN ('sqlite', 'postgres')),
    schema_version TEXT NOT NULL,
    sensor TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    outcome TEXT NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'ok', 'failed')),
    counts JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- rows inserted or updated in celeriac's tables by this run
    changed BIGINT NOT NULL DEFAULT 0,
    error TEXT
);

-- Rows of the original's tables that have no natural key in celeriac (analyses, detections), by a hash of their
-- content (every column but the original's own id), so a row is copied once however often and from whichever copy
-- of the original database it is imported. Raw events need no entry here: they are keyed in raw_events itself.
CREATE TABLE original_import_rows (
    original_table TEXT NOT NULL,
    content_key TEXT NOT NULL,
    celeriac_table TEXT NOT NULL,
    celeriac_id BIGINT NOT NULL,
    import_id BIGINT NOT NULL REFERENCES original_imports (id),
    PRIMARY KEY (original_table, content_key)
);
