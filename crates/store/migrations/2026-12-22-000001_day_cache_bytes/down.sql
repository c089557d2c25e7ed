ALTER TABLE longtail_day_cache ALTER COLUMN aggregate SET STORAGE EXTENDED;
ALTER TABLE longtail_day_cache
    ALTER COLUMN aggregate TYPE JSONB USING convert_from(aggregate, 'UTF8')::jsonb;
