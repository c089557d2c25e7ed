-- API keys of celeriac-api. The secret is never stored: only its SHA-256 (the secret is 256 random bits,
-- so a fast hash is enough; a slow password hash would protect nothing more and cost every request).
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    -- the first characters of the secret, shown in listings so a person can tell keys apart
    prefix TEXT NOT NULL,
    scopes TEXT[] NOT NULL,
    -- per-key limit like "100/minute"; NULL = the route class defaults
    rate_limit TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);

-- Session listing and per-IP / per-username filters of the API.
CREATE INDEX ix_session_summaries_first_id ON session_summaries (first_event_at DESC, session_id DESC);
CREATE INDEX ix_session_summaries_username ON session_summaries (username);
-- Per-sensor "last data arrived" for the API's sensor status (updated_at moves on every ingest upsert).
CREATE INDEX ix_session_summaries_sensor_updated ON session_summaries (sensor, updated_at);
