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

/// A database created for one test, dropped by [`TestDb::drop_db`] or, if the test
/// panicked first, when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    dropped: bool,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Runs on its own thread and runtime: Drop cannot await, and may run inside one.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(drop_database(&name));
            }
        })
        .join();
    }
}

async fn drop_database(name: &str) {
    if let Ok(mut conn) = AsyncPgConnection::establish(&admin_url()).await {
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
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
        Some(TestDb {
            name,
            url,
            dropped: false,
        })
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
