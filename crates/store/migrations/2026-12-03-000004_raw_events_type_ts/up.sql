-- The API counts the partial edge hours of a window in raw_events by event type and time (credentials, commands;
-- whole hours come from the stats_*_hours rollups). With one index on each column PostgreSQL ANDs the time range
-- with the bitmap of every login (or command) event ever stored, which grows with the table; a composite index
-- finds exactly the edge rows (docs/benchmarks.md: 17 of the 25 ms of the credentials query over 7 days of 1M
-- events). It also serves every look-up of the single-column index (same leading column), which it replaces.
CREATE INDEX ix_raw_events_type_ts ON raw_events (event_type, event_timestamp);
DROP INDEX IF EXISTS ix_raw_events_event_type;
