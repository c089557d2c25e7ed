DROP TABLE dead_letter_events;
DROP TABLE ingest_cursors;
DROP TABLE files;
DROP TABLE session_summaries;
DROP TABLE raw_events;
DROP TABLE schema_state;
