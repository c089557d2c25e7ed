-- The per-day longtail aggregate is kept as the JSON bytes the worker wrote, not as JSONB: PostgreSQL no longer
-- parses it on write nor prints it on read (at 1,000,000 sessions a window's 30 aggregates are about 150 MB, and
-- the JSONB round trip was most of the chord merge's cache read). The bytes are stored out of line without TOAST
-- compression: they are read whole and compressing them costs more than it saves. Existing rows keep their
-- content (JSONB's text is the same JSON).
ALTER TABLE longtail_day_cache
    ALTER COLUMN aggregate TYPE BYTEA USING convert_to(aggregate::text, 'UTF8');
ALTER TABLE longtail_day_cache ALTER COLUMN aggregate SET STORAGE EXTERNAL;
