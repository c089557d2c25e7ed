-- Hourly rollups for the public API's statistics, maintained by the loader in the same transaction as the
-- raw_events rows they count (from exactly the rows that were inserted), so they stay exactly-once like the events.
-- A window's figures are the sum of its whole hours here plus its partial edge hours counted in raw_events.
-- Long texts (commands, credentials) are keyed by an md5 of their JSON form, so any length fits the index and
-- NULL stays apart from "".

CREATE TABLE stats_event_hours (
    sensor TEXT NOT NULL,
    hour TIMESTAMPTZ NOT NULL,
    events BIGINT NOT NULL,
    PRIMARY KEY (sensor, hour)
);

CREATE TABLE stats_login_hours (
    sensor TEXT NOT NULL,
    hour TIMESTAMPTZ NOT NULL,
    cred_key TEXT NOT NULL,
    username TEXT,
    password TEXT,
    attempts BIGINT NOT NULL,
    successes BIGINT NOT NULL,
    PRIMARY KEY (sensor, hour, cred_key)
);
CREATE INDEX ix_stats_login_hours_hour ON stats_login_hours (hour);

CREATE TABLE stats_command_hours (
    sensor TEXT NOT NULL,
    hour TIMESTAMPTZ NOT NULL,
    command_key TEXT NOT NULL,
    command TEXT NOT NULL,
    count BIGINT NOT NULL,
    max_risk INTEGER,
    PRIMARY KEY (sensor, hour, command_key)
);
CREATE INDEX ix_stats_command_hours_hour ON stats_command_hours (hour);

-- Rollups of what is already loaded.
INSERT INTO stats_event_hours (sensor, hour, events)
SELECT sensor, date_bin('1 hour', event_timestamp, timestamptz '2000-01-01 00:00:00+00'), count(*)
FROM raw_events GROUP BY 1, 2;

INSERT INTO stats_login_hours (sensor, hour, cred_key, username, password, attempts, successes)
SELECT sensor, date_bin('1 hour', event_timestamp, timestamptz '2000-01-01 00:00:00+00'),
       md5(jsonb_build_array(payload->>'username', payload->>'password')::text),
       payload->>'username', payload->>'password',
       count(*), count(*) FILTER (WHERE event_type = 'cowrie.login.success')
FROM raw_events
WHERE event_type IN ('cowrie.login.success', 'cowrie.login.failed')
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO stats_command_hours (sensor, hour, command_key, command, count, max_risk)
SELECT sensor, date_bin('1 hour', event_timestamp, timestamptz '2000-01-01 00:00:00+00'),
       md5(payload->>'input'), payload->>'input', count(*), max(risk_score)
FROM raw_events
WHERE event_type = 'cowrie.command.input' AND payload ? 'input'
GROUP BY 1, 2, 3, 4;
