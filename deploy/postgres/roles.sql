-- celeriac's least-privilege roles (generated from store::roles; docs/security.md).
-- Run as the owner of the schema (the role that runs the migrations), in the celeriac database:
--   psql "$OWNER_DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/postgres/roles.sql
-- Then give each role a password: \password celeriac_api (and celeriac_loader, celeriac_worker).
-- Idempotent: run it again after migrations that add tables.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'celeriac_api') THEN
    BEGIN
      CREATE ROLE celeriac_api LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; -- created meanwhile by another run
    END;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'celeriac_loader') THEN
    BEGIN
      CREATE ROLE celeriac_loader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; -- created meanwhile by another run
    END;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'celeriac_worker') THEN
    BEGIN
      CREATE ROLE celeriac_worker LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; -- created meanwhile by another run
    END;
  END IF;
  EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO celeriac_api, celeriac_loader, celeriac_worker', current_database());
  BEGIN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
  EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'not the owner of schema public: cannot revoke CREATE from PUBLIC (PostgreSQL 15 and later do not grant it)';
  END;
END $$;

GRANT USAGE ON SCHEMA public TO celeriac_api, celeriac_loader, celeriac_worker;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM celeriac_api, celeriac_loader, celeriac_worker;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM celeriac_api, celeriac_loader, celeriac_worker;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO celeriac_api, celeriac_loader, celeriac_worker;
GRANT INSERT, UPDATE, DELETE ON raw_events, session_summaries, files, ingest_cursors, dead_letter_events, loader_runs, stats_event_hours, stats_login_hours, stats_command_hours, original_imports, original_import_rows TO celeriac_loader;
GRANT INSERT, UPDATE, DELETE ON longtail_analysis, longtail_detections, snowshoe_detections, botnet_detections, longtail_day_cache, longtail_window_cache TO celeriac_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO celeriac_loader, celeriac_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO celeriac_api, celeriac_loader, celeriac_worker;
