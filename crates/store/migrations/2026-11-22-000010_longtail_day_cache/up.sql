-- Per-day longtail aggregates, so a 30- or 90-day window re-reads only the days whose sessions changed.
-- `fingerprint` summarises the day's session_summaries rows (count, event total, latest update); a cached
-- aggregate is reused only while the fingerprint, the parameters and the format version are unchanged.
CREATE TABLE longtail_day_cache (
    sensor_key      VARCHAR(128) NOT NULL,   -- sensor name, or '*' for all sensors
    day             DATE NOT NULL,
    params_key      VARCHAR(64) NOT NULL,    -- hash of the parameters that shape the aggregate
    fingerprint     TEXT NOT NULL,
    format_version  INTEGER NOT NULL,
    session_count   INTEGER NOT NULL,
    aggregate       JSONB NOT NULL,
    computed_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_key, day, params_key)
);
