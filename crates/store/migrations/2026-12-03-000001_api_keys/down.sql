DROP INDEX IF EXISTS ix_session_summaries_sensor_updated;
DROP INDEX IF EXISTS ix_session_summaries_username;
DROP INDEX IF EXISTS ix_session_summaries_first_id;
DROP TABLE IF EXISTS api_keys;
