//! `store`: the only crate that knows diesel.
//!
//! It owns the PostgreSQL schema (`migrations/`, [`schema`]), the connection pool
//! (diesel-async over bb8), the ingest writes used by `cowrie-loader`
//! ([`ingest`]), and the reads and writes used by the analysis tasks ([`analysis`]).
//!
//! Modules: [`schema`] (tables), [`ingest`] (the loader's exactly-once batch commit and
//! cursors), [`inspect`] (read-only views for status and tests), [`analysis`] (reads and
//! writes of the analysis tasks), [`day_cache`] (the per-day longtail cache), and
//! [`test_support`] (a throwaway database per test), [`stats`] (the public API's read-only statistics) and
//! [`api_keys`] (the API's hashed keys), [`loader_runs`] (one row per sensor and loader run, and the per-sensor health
//! the API exports to Prometheus).
//!
//! Architecture invariant: no other crate in the workspace depends on diesel;
//! they call the plain-Rust functions and types exported here.
//!
//! # For the analysis tasks
//!
//! - [`analysis::sessions_in_window`] returns every session of one sensor (or all
//!   sensors) whose first event falls in `[start, end)`, with its source IP, start and
//!   end time, commands (in log order), login attempts (username, password, success),
//!   file downloads, client version and HASSH.
//! - [`analysis::insert_longtail_analysis`], [`analysis::insert_snowshoe_detection`]
//!   and [`analysis::insert_botnet_detection`] store the result records of spec
//!   section 3 (whole result objects go into JSONB columns).

pub mod analysis;
pub mod api_keys;
pub mod connect;
pub mod day_cache;
pub mod dead_letters;
pub mod ingest;
pub mod inspect;
pub mod loader_runs;
pub mod original;
pub mod roles;
pub mod rollups;
pub mod schema;
pub mod stats;
#[cfg(feature = "test-support")]
pub mod test_support;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use std::time::Duration;

/// The default database URL when neither a flag nor `DATABASE_URL` is given.
pub const DEFAULT_DATABASE_URL: &str = "postgres://127.0.0.1/celeriac";

/// The migrations compiled into every binary that links `store`.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// How many migrations this build carries (a database with all of them pending is empty).
pub fn migrations_count() -> usize {
    diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map(|m| m.len())
        .unwrap_or(0)
}

/// A bb8 pool of async PostgreSQL connections.
pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// A connection checked out of [`PgPool`].
pub type PooledConn<'a> =
    bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// An owned connection checked out of [`PgPool`].
pub type PooledConnOwned =
    bb8::PooledConnection<'static, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// Errors of the store, split so callers can tell "try again later" from "this data is bad".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached or the connection broke; retrying may help.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a race (deadlock or serialization failure) and was rolled back; retry it.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// A query failed for a reason that retrying will not fix.
    #[error("query failed: {0}")]
    Query(#[source] diesel::result::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    /// True when the error means "PostgreSQL is not there right now" and a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Conflict(_))
    }
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &e {
            Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
                StoreError::Conflict(e.to_string())
            }
            Error::DatabaseError(DatabaseErrorKind::Unknown, info)
                if info.message().contains("deadlock detected") =>
            {
                StoreError::Conflict(e.to_string())
            }
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                StoreError::Unavailable(e.to_string())
            }
            Error::DatabaseError(DatabaseErrorKind::Unknown, info)
                if is_connection_message(info.message()) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            Error::BrokenTransactionManager => StoreError::Unavailable(e.to_string()),
            _ => {
                if is_connection_message(&e.to_string()) {
                    StoreError::Unavailable(e.to_string())
                } else {
                    StoreError::Query(e)
                }
            }
        }
    }
}

fn is_connection_message(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "connection closed",
        "connection reset",
        "broken pipe",
        "terminating connection",
        "unexpected eof",
        "error communicating",
        "connection refused",
        "the database system is",
        "timed out",
        "error connecting",
        "closed",
    ]
    .iter()
    .any(|p| m.contains(p))
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for StoreError {
    fn from(e: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Builds a pool that does not connect until first use, so a missing server is
/// reported by the first query (and can be retried) rather than at start-up.
pub fn build_pool(database_url: &str, max_size: u32, connect_timeout: Duration) -> PgPool {
    // Every connection through `connect`, so `sslmode` in the URL is honoured (TLS, see `connect`).
    let mut config = diesel_async::pooled_connection::ManagerConfig::default();
    config.custom_setup = Box::new(|url| Box::pin(connect::connect(url)));
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    bb8::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(0))
        .connection_timeout(connect_timeout)
        .test_on_check_out(true)
        .build_unchecked(manager)
}

/// The session-level advisory lock held while migrations run, so processes that start together (two API replicas, a
/// loader and an API) apply them one after the other: the second finds nothing pending. Any other user of advisory
/// locks on the same database must avoid this key (it spells "celeriac" in ASCII).
pub const MIGRATION_LOCK_KEY: i64 = 0x63656c6572696163;

/// Applies every pending migration and returns the versions it applied.
///
/// Holds [`MIGRATION_LOCK_KEY`] meanwhile (released with the connection, also on a crash). Runs on a blocking thread
/// because diesel's migration harness is synchronous and diesel-async's wrapper blocks on the runtime.
pub async fn run_migrations(database_url: &str) -> Result<Vec<String>, StoreError> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::RunQueryDsl;
        let mut conn = blocking_connect(&url)?;
        // Up to date: done without diesel's harness, which needs CREATE rights (see `roles::nothing_pending`).
        if roles::nothing_pending(&mut conn) {
            return Ok(Vec::new());
        }
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn)
            .map_err(|e| StoreError::Migration(format!("taking the migration lock: {e}")))?;
        let applied: Result<Vec<String>, StoreError> = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(|v| v.to_string()).collect())
            .map_err(|e| StoreError::Migration(e.to_string()));
        // The lock goes with the connection in any case; unlock early so a long-lived caller does not keep it.
        let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .execute(&mut conn);
        applied
    })
    .await
    .map_err(|e| StoreError::Migration(format!("migration task panicked: {e}")))?
}

/// A synchronous connection for diesel's migration harness, opened by `connect` on this blocking thread.
fn blocking_connect(
    url: &str,
) -> Result<
    diesel_async::async_connection_wrapper::AsyncConnectionWrapper<AsyncPgConnection>,
    StoreError,
> {
    let conn = tokio::runtime::Handle::current()
        .block_on(connect::connect(url))
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(conn.into())
}

/// Lists migrations that are compiled in but not yet applied.
pub async fn pending_migrations(database_url: &str) -> Result<Vec<String>, StoreError> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = blocking_connect(&url)?;
        // Up to date: answered without diesel's harness, which needs CREATE rights (see `roles::nothing_pending`).
        if roles::nothing_pending(&mut conn) {
            return Ok(Vec::new());
        }
        let pending = conn
            .pending_migrations(MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(pending.iter().map(|m| m.name().to_string()).collect())
    })
    .await
    .map_err(|e| StoreError::Migration(format!("migration task panicked: {e}")))?
}

/// A PostgreSQL connection, for callers that pass query functions of this crate around without knowing diesel.
pub type Conn = AsyncPgConnection;

/// A read: a function of a connection returning a boxed future (see [`read_only`]).
pub type ReadFn<'a, T> = dyn for<'c> Fn(
        &'c mut Conn,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'c>,
    > + Send
    + Sync
    + 'a;

/// Run `f` inside `BEGIN READ ONLY; SET LOCAL statement_timeout = ...` on a connection of `pool`, then commit (or
/// roll back on error). No session state outlives the call, so it is safe behind PgBouncer in transaction mode.
pub async fn read_only<T>(
    pool: &PgPool,
    statement_timeout: Duration,
    f: &ReadFn<'_, T>,
) -> Result<T, StoreError> {
    use diesel_async::SimpleAsyncConnection;
    let mut conn = pool.get().await?;
    conn.batch_execute(&format!(
        "BEGIN READ ONLY; SET LOCAL statement_timeout = {}",
        statement_timeout.as_millis().max(1)
    ))
    .await?;
    let r = f(&mut conn).await;
    let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
    // A failed COMMIT/ROLLBACK leaves the connection broken; bb8's check-out test then drops it.
    let _ = conn.batch_execute(end).await;
    r
}
