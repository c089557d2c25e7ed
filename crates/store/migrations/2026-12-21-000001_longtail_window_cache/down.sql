DROP TABLE IF EXISTS longtail_window_cache;
