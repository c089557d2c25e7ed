DROP TABLE IF EXISTS loader_runs;
