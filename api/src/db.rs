//! Database access of the API: reads through the read replica when one is configured and up, else the primary.
//!
//! The replica's health is known two ways: a probe (`SELECT 1` every `probe_interval`) and every read (a read that
//! finds the replica unreachable marks it down and is answered by the primary at once). While it is down, reads go
//! to the primary, `celeriac_api_db_replica_fallbacks_total` counts them, and one log line says so; the probe brings
//! reads back when the replica answers again.
//!
//! Every read runs in its own `BEGIN READ ONLY; SET LOCAL statement_timeout` transaction: no session state outlives
//! a request, so the API works behind PgBouncer in transaction mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::{PgPool, StoreError};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Pool sizes and timeouts.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub primary_url: String,
    pub replica_url: Option<String>,
    pub pool_size: u32,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    pub probe_interval: Duration,
}

/// Where a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Replica,
    Primary,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Replica => "replica",
            Target::Primary => "primary",
        }
    }
}

pub struct Db {
    primary: PgPool,
    replica: Option<PgPool>,
    replica_up: AtomicBool,
    statement_timeout: Duration,
    probe_interval: Duration,
    metrics: Arc<Metrics>,
}

/// A read: a function of a connection, run inside the read-only transaction.
pub use store::ReadFn;

impl Db {
    pub fn new(settings: &DbSettings, metrics: Arc<Metrics>) -> Db {
        let primary = store::build_pool(
            &settings.primary_url,
            settings.pool_size,
            settings.connect_timeout,
        );
        let replica = settings.replica_url.as_ref().map(|url| {
            // A down replica must not hold a request for the whole connect timeout: fall back fast.
            store::build_pool(
                url,
                settings.pool_size,
                settings.connect_timeout.min(Duration::from_secs(1)),
            )
        });
        metrics.replica_up.set(i64::from(replica.is_some()));
        Db {
            replica_up: AtomicBool::new(replica.is_some()),
            primary,
            replica,
            statement_timeout: settings.statement_timeout,
            probe_interval: settings.probe_interval,
            metrics,
        }
    }

    /// True when a replica is configured and reads currently go to it.
    pub fn replica_in_use(&self) -> bool {
        self.replica.is_some() && self.replica_up.load(Ordering::Relaxed)
    }

    fn mark_replica(&self, up: bool, why: &str) {
        if self.replica.is_none() {
            return;
        }
        let was = self.replica_up.swap(up, Ordering::Relaxed);
        self.metrics.replica_up.set(i64::from(up));
        if was != up {
            if up {
                tracing::info!("read replica answers again; reads go back to it");
            } else {
                tracing::warn!(
                    reason = why,
                    "read replica is down; reads fall back to the primary"
                );
            }
        }
    }

    /// Run a read on the replica when it is up, else (or when it fails to answer) on the primary.
    pub async fn read<T>(&self, f: &ReadFn<'_, T>) -> Result<(T, Target), ApiError> {
        if let Some(replica) = &self.replica {
            if self.replica_up.load(Ordering::Relaxed) {
                match self.run(replica, f).await {
                    Ok(v) => return Ok((v, Target::Replica)),
                    Err(e) if e.is_retryable() => self.mark_replica(false, &e.to_string()),
                    Err(e) => return Err(e.into()),
                }
            }
            self.metrics.replica_fallbacks.inc();
        }
        Ok((self.run(&self.primary, f).await?, Target::Primary))
    }

    /// Run a read on the primary (API keys: a key just created or revoked is seen at once).
    pub async fn read_primary<T>(&self, f: &ReadFn<'_, T>) -> Result<T, ApiError> {
        Ok(self.run(&self.primary, f).await?)
    }

    async fn run<T>(&self, pool: &PgPool, f: &ReadFn<'_, T>) -> Result<T, StoreError> {
        store::read_only(pool, self.statement_timeout, f).await
    }

    /// Check the replica once: `SELECT 1` within the connect timeout.
    pub async fn probe_replica(&self) {
        let Some(replica) = &self.replica else {
            return;
        };
        let ping = async {
            let mut conn = replica.get().await?;
            store::stats::ping(&mut conn).await
        };
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(())) => self.mark_replica(true, ""),
            Ok(Err(e)) => self.mark_replica(false, &e.to_string()),
            Err(_) => self.mark_replica(false, "probe timed out"),
        }
    }

    /// Check the primary once (for `/readyz`).
    pub async fn ping_primary(&self) -> Result<(), ApiError> {
        let ping = async {
            let mut conn = self.primary.get().await?;
            store::stats::ping(&mut conn).await
        };
        match tokio::time::timeout(Duration::from_secs(3), ping).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ApiError::DatabaseUnavailable("no answer within 3 s".into())),
        }
    }

    /// Probe the replica every `probe_interval` until shutdown.
    pub fn spawn_probe(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if self.replica.is_none() {
                return;
            }
            loop {
                self.probe_replica().await;
                tokio::select! {
                    _ = tokio::time::sleep(self.probe_interval) => {}
                    _ = shutdown.changed() => return,
                }
            }
        })
    }
}
