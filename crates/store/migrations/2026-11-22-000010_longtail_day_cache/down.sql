DROP TABLE IF EXISTS longtail_day_cache;
