-- One row per sensor and loader run (`cowrie-loader bulk`, `delta`, `delta --all`), written when the run ends.
-- It is the truth for the loader alerts: a K3s CronJob cannot be scraped, so celeriac-api reads the newest run and
-- the newest successful run of each sensor from here at scrape time (docs/monitoring.md).
-- Both look-ups are index probes per sensor: the newest run through ix_loader_runs_sensor_started, the newest
-- success through the partial ix_loader_runs_sensor_ok.

CREATE TABLE loader_runs (
    id BIGSERIAL PRIMARY KEY,
    sensor TEXT NOT NULL,
    mode TEXT NOT NULL,
    ingest_id TEXT,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'failed')),
    exit_code INTEGER NOT NULL,
    events_loaded BIGINT NOT NULL DEFAULT 0,
    dead_letters BIGINT NOT NULL DEFAULT 0,
    error TEXT
);

CREATE INDEX ix_loader_runs_sensor_started ON loader_runs (sensor, started_at DESC);
CREATE INDEX ix_loader_runs_sensor_ok ON loader_runs (sensor, finished_at DESC) WHERE outcome = 'ok';
