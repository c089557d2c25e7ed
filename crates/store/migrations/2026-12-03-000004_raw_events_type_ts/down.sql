CREATE INDEX IF NOT EXISTS ix_raw_events_event_type ON raw_events (event_type);
DROP INDEX IF EXISTS ix_raw_events_type_ts;
