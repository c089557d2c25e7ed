-- Ingest tables: raw events, sessions, files, cursors, dead letters.
-- Names follow the original cowrieprocessor schema so its users' SQL still reads.

CREATE TABLE schema_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO schema_state (key, value) VALUES ('schema_version', 'celeriac-1');

CREATE TABLE raw_events (
    id BIGSERIAL PRIMARY KEY,
    ingest_id TEXT,
    ingest_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- path of the file at the time it was read (informational; identity is stream_id)
    source TEXT NOT NULL,
    -- content identity of the log stream: "<sensor>:<xxh3-128 of the first line>"
    stream_id TEXT NOT NULL,
    source_generation INTEGER NOT NULL DEFAULT 0,
    -- byte offset of the line in the (decompressed) stream, and its 0-based line number
    source_offset BIGINT NOT NULL,
    source_line BIGINT NOT NULL,
    source_inode TEXT,
    payload JSONB NOT NULL,
    payload_hash TEXT NOT NULL,
    risk_score INTEGER,
    quarantined BOOLEAN NOT NULL DEFAULT FALSE,
    session_id TEXT,
    event_type TEXT NOT NULL,
    event_timestamp TIMESTAMPTZ NOT NULL,
    src_ip TEXT,
    sensor TEXT NOT NULL,
    CONSTRAINT uq_raw_events_source_offset UNIQUE (stream_id, source_generation, source_offset)
);
CREATE INDEX ix_raw_events_session_id ON raw_events (session_id);
CREATE INDEX ix_raw_events_event_type ON raw_events (event_type);
CREATE INDEX ix_raw_events_event_timestamp ON raw_events (event_timestamp);
CREATE INDEX ix_raw_events_sensor_ts ON raw_events (sensor, event_timestamp);

CREATE TABLE session_summaries (
    session_id TEXT PRIMARY KEY,
    first_event_at TIMESTAMPTZ NOT NULL,
    last_event_at TIMESTAMPTZ NOT NULL,
    event_count INTEGER NOT NULL DEFAULT 0,
    command_count INTEGER NOT NULL DEFAULT 0,
    file_downloads INTEGER NOT NULL DEFAULT 0,
    login_attempts INTEGER NOT NULL DEFAULT 0,
    ssh_key_injections INTEGER NOT NULL DEFAULT 0,
    unique_ssh_keys INTEGER NOT NULL DEFAULT 0,
    vt_flagged BOOLEAN NOT NULL DEFAULT FALSE,
    dshield_flagged BOOLEAN NOT NULL DEFAULT FALSE,
    risk_score INTEGER,
    -- the original's name for the sensor; kept equal to `sensor`
    matcher TEXT,
    sensor TEXT NOT NULL,
    src_ip TEXT,
    protocol TEXT,
    username TEXT,
    password TEXT,
    login_success BOOLEAN NOT NULL DEFAULT FALSE,
    client_version TEXT,
    hassh TEXT,
    duration_seconds DOUBLE PRECISION,
    source_files JSONB NOT NULL DEFAULT '[]'::jsonb,
    enrichment JSONB,
    enrichment_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ix_session_summaries_first_event_at ON session_summaries (first_event_at);
CREATE INDEX ix_session_summaries_last_event_at ON session_summaries (last_event_at);
CREATE INDEX ix_session_summaries_sensor_first ON session_summaries (sensor, first_event_at);
CREATE INDEX ix_session_summaries_src_ip ON session_summaries (src_ip);

CREATE TABLE files (
    id BIGSERIAL PRIMARY KEY,
    session_id TEXT NOT NULL,
    shasum TEXT NOT NULL,
    direction TEXT NOT NULL,
    filename TEXT,
    outfile TEXT,
    file_size BIGINT,
    download_url TEXT,
    src_ip TEXT,
    sensor TEXT NOT NULL,
    vt_classification TEXT,
    vt_description TEXT,
    vt_malicious BOOLEAN NOT NULL DEFAULT FALSE,
    vt_positives INTEGER,
    vt_total INTEGER,
    first_seen TIMESTAMPTZ NOT NULL,
    last_updated TIMESTAMPTZ NOT NULL DEFAULT now(),
    enrichment_status TEXT NOT NULL DEFAULT 'pending',
    CONSTRAINT uq_files_session_shasum UNIQUE (session_id, shasum)
);
CREATE INDEX ix_files_shasum ON files (shasum);
CREATE INDEX ix_files_first_seen ON files (first_seen);

CREATE TABLE ingest_cursors (
    stream_id TEXT PRIMARY KEY,
    sensor TEXT NOT NULL,
    -- last path this stream was read under
    source TEXT NOT NULL,
    inode TEXT,
    first_line_hash TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    -- next unread byte and line of the (decompressed) stream
    last_offset BIGINT NOT NULL DEFAULT 0,
    last_line BIGINT NOT NULL DEFAULT 0,
    -- a compressed file that was read to its end (it cannot grow)
    finished BOOLEAN NOT NULL DEFAULT FALSE,
    last_ingest_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_ingest_id TEXT,
    metadata_json JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE dead_letter_events (
    id BIGSERIAL PRIMARY KEY,
    ingest_id TEXT,
    source TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    source_generation INTEGER NOT NULL DEFAULT 0,
    source_offset BIGINT NOT NULL,
    source_line BIGINT NOT NULL,
    sensor TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT,
    -- the line as text (invalid UTF-8 replaced by U+FFFD, NUL by U+2400)
    raw_line TEXT NOT NULL,
    -- the line's exact bytes
    raw_bytes BYTEA NOT NULL,
    payload JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved BOOLEAN NOT NULL DEFAULT FALSE,
    resolved_at TIMESTAMPTZ,
    CONSTRAINT uq_dead_letter_source_offset UNIQUE (stream_id, source_generation, source_offset)
);
CREATE INDEX ix_dead_letter_events_created_at ON dead_letter_events (created_at);
CREATE INDEX ix_dead_letter_events_reason ON dead_letter_events (reason);
