//! Least-privilege PostgreSQL roles for celeriac's components (`docs/security.md`).
//!
//! The schema's owner (the role that runs the migrations: `cowrie-loader migrate`, `celeriac-api --migrate`) keeps
//! every DDL right; the components log in as roles that own nothing, so none of them can drop, alter or truncate a
//! table:
//!
//! | role | may read | may write (INSERT, UPDATE, DELETE) |
//! |---|---|---|
//! | [`API_ROLE`] (`celeriac-api serve`) | every table | nothing |
//! | [`LOADER_ROLE`] (`cowrie-loader`) | every table | [`LOADER_TABLES`] |
//! | [`WORKER_ROLE`] (`celeriac-worker`'s analysis tasks) | every table | [`WORKER_TABLES`] |
//!
//! [`OWNER_ONLY_TABLES`] are written by the owner alone (API keys are made with `celeriac-api key ...` on the owner's
//! URL). Every table the migrations create must be in exactly one of the three lists; a test checks that on a
//! migrated database, so a new table cannot silently be left unwritable or wide open.
//!
//! [`sql`] is the whole script (idempotent: it creates missing roles, then resets their table rights); it is also
//! shipped as `deploy/postgres/roles.sql` for `psql -f`, and [`apply`] runs it on a connection. Passwords are not part
//! of it: set them with `\password celeriac_api` in psql (or `ALTER ROLE ... PASSWORD`).

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use crate::StoreError;

/// The public API's role: reads only.
pub const API_ROLE: &str = "celeriac_api";
/// The loader's role: writes the ingest tables.
pub const LOADER_ROLE: &str = "celeriac_loader";
/// The workers' role: writes the analysis tables.
pub const WORKER_ROLE: &str = "celeriac_worker";

/// Tables the loader writes: events, sessions, files, cursors, its dead letters and runs, the hourly rollups it
/// maintains, and the bookkeeping of `import-original`.
pub const LOADER_TABLES: &[&str] = &[
    "raw_events",
    "session_summaries",
    "files",
    "ingest_cursors",
    "dead_letter_events",
    "loader_runs",
    "stats_event_hours",
    "stats_login_hours",
    "stats_command_hours",
    "original_imports",
    "original_import_rows",
];

/// Tables the analysis tasks write: their results and the longtail caches.
pub const WORKER_TABLES: &[&str] = &[
    "longtail_analysis",
    "longtail_detections",
    "snowshoe_detections",
    "botnet_detections",
    "longtail_day_cache",
    "longtail_window_cache",
];

/// Tables only the owner writes (diesel's migration list included).
pub const OWNER_ONLY_TABLES: &[&str] = &["api_keys", "schema_state", "__diesel_schema_migrations"];

/// The roles script. Run it as the schema's owner, in the celeriac database, after the migrations; creating the roles
/// the first time also needs `CREATEROLE`.
pub fn sql() -> String {
    let all = [API_ROLE, LOADER_ROLE, WORKER_ROLE].join(", ");
    let mut s = String::from(
        "-- celeriac's least-privilege roles (generated from store::roles; docs/security.md).\n\
         -- Run as the owner of the schema (the role that runs the migrations), in the celeriac database:\n\
         --   psql \"$OWNER_DATABASE_URL\" -v ON_ERROR_STOP=1 -f deploy/postgres/roles.sql\n\
         -- Then give each role a password: \\password celeriac_api (and celeriac_loader, celeriac_worker).\n\
         -- Idempotent: run it again after migrations that add tables.\n\n",
    );
    s.push_str("DO $$\nBEGIN\n");
    for role in [API_ROLE, LOADER_ROLE, WORKER_ROLE] {
        s.push_str(&format!(
            "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN\n    \
             BEGIN\n      CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;\n    \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; -- created meanwhile by another run\n    \
             END;\n  END IF;\n"
        ));
    }
    s.push_str(&format!(
        "  EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO {all}', current_database());\n"
    ));
    // Before PostgreSQL 15 every role may create tables in `public`; only the schema's owner can take that back.
    s.push_str(
        "  BEGIN\n    REVOKE CREATE ON SCHEMA public FROM PUBLIC;\n  \
         EXCEPTION WHEN insufficient_privilege THEN\n    \
         RAISE WARNING 'not the owner of schema public: cannot revoke CREATE from PUBLIC (PostgreSQL 15 and later do not grant it)';\n  \
         END;\nEND $$;\n\n",
    );
    s.push_str(&format!("GRANT USAGE ON SCHEMA public TO {all};\n"));
    s.push_str(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {all};\n\
         REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {all};\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {all};\n"
    ));
    s.push_str(&format!(
        "GRANT INSERT, UPDATE, DELETE ON {} TO {LOADER_ROLE};\n",
        LOADER_TABLES.join(", ")
    ));
    s.push_str(&format!(
        "GRANT INSERT, UPDATE, DELETE ON {} TO {WORKER_ROLE};\n",
        WORKER_TABLES.join(", ")
    ));
    s.push_str(&format!(
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {LOADER_ROLE}, {WORKER_ROLE};\n"
    ));
    // Tables the owner creates later are readable at once; writing them needs this script again.
    s.push_str(&format!(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {all};\n"
    ));
    s
}

/// True when every migration this build carries is already recorded in `__diesel_schema_migrations`, read with a
/// plain `SELECT`. [`crate::run_migrations`] asks this first, because diesel's harness always begins with
/// `CREATE TABLE IF NOT EXISTS __diesel_schema_migrations`, which PostgreSQL refuses to a role without `CREATE` on
/// the schema even when the table exists; so the least-privilege roles can start components that "migrate" on start
/// (the workers' schema preparer, `cowrie-loader`) once the owner has migrated. Any error reads as "not known".
pub(crate) fn nothing_pending<C>(conn: &mut C) -> bool
where
    C: diesel::Connection<Backend = diesel::pg::Pg> + diesel::connection::LoadConnection,
{
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    let Ok(applied) =
        diesel::sql_query("SELECT version::text AS version FROM __diesel_schema_migrations")
            .load::<Row>(conn)
    else {
        return false;
    };
    let applied: std::collections::BTreeSet<String> =
        applied.into_iter().map(|r| r.version).collect();
    match diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&crate::MIGRATIONS) {
        Ok(ms) => ms
            .iter()
            .all(|m| applied.contains(&m.name().version().to_string())),
        Err(_) => false,
    }
}

/// Run [`sql`] on `conn` (connected as the schema's owner).
pub async fn apply(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    conn.batch_execute(&sql()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_table_is_in_two_lists() {
        let mut all: Vec<&str> = [LOADER_TABLES, WORKER_TABLES, OWNER_ONLY_TABLES].concat();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a table is listed twice");
    }

    #[test]
    fn the_api_role_gets_no_write_grant() {
        let sql = sql();
        for line in sql.lines().filter(|l| l.starts_with("GRANT")) {
            if line.contains("INSERT") || line.contains("UPDATE") || line.contains("DELETE") {
                assert!(!line.contains(API_ROLE), "{line}");
            }
        }
    }
}
