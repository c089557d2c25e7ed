-- The last longtail result of a window, so a re-run over the same window, sensor and parameters whose days have not
-- changed (the same day fingerprints) returns it without reading a day or clustering again.
-- `result` is the compact result the task returned (rare commands without their per-session lists).
CREATE TABLE longtail_window_cache (
    sensor_key      VARCHAR(128) NOT NULL,   -- sensor name, or '*' for all sensors
    window_start    TIMESTAMPTZ NOT NULL,
    window_end      TIMESTAMPTZ NOT NULL,
    params_key      VARCHAR(64) NOT NULL,    -- hash of the parameters and the result shape
    fingerprint     TEXT NOT NULL,           -- hash of every day's fingerprint in the window
    format_version  INTEGER NOT NULL,
    analysis_id     BIGINT NOT NULL,
    result          JSONB NOT NULL,
    computed_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_key, window_start, window_end, params_key)
);
