//! Helpers for tests that need a real PostgreSQL: a throwaway database per test.
//!
//! When PostgreSQL is missing, tests fail loudly under `CI=true` and are skipped
//! (with a notice) otherwise.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// Admin URL used to create and drop test databases (`CELERIAC_TEST_PG_ADMIN_URL` overrides).
pub fn admin_url() -> String {
    std::env::var("CELERIAC_TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Reacts to a missing service: panics under `CI=true`, otherwise prints a notice.
/// Returns `false` so callers can `return` early.
pub fn service_missing(what: &str, err: &dyn std::fmt::Display) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required under CI=true but is not reachable: {err}");
    }
    eprintln!("NOTICE: skipping test, {what} not reachable: {err}");
    false
}

/// A database created for one test and dropped on [`TestDb::drop_db`] (or leaked on panic).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates `celeriac_test_<random>` and runs the migrations in it.
    /// Returns `None` (after [`service_missing`]) when PostgreSQL is not reachable.
    pub async fn create() -> Option<TestDb> {
        let admin = admin_url();
        let mut conn = match AsyncPgConnection::establish(&admin).await {
            Ok(c) => c,
            Err(e) => {
                service_missing("PostgreSQL", &e);
                return None;
            }
        };
        let name = format!("celeriac_test_{}", uuid::Uuid::new_v4().simple());
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{name}");
        crate::run_migrations(&url).await.expect("migrations");
        Some(TestDb { name, url })
    }

    /// Drops the database (terminating leftover connections first).
    pub async fn drop_db(self) {
        let mut conn = AsyncPgConnection::establish(&admin_url())
            .await
            .expect("admin connection");
        diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .expect("DROP DATABASE");
    }

    /// A fresh connection to this database.
    pub async fn connect(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to test database")
    }
}
