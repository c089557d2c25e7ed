//! `celeriac-api`: the public front door on port 8081. Statistics over the Cowrie data, stored findings, analyses
//! submitted as Celery jobs through the coordinator's routing (the shared `jobs` crate) with live progress, API keys,
//! rate limits shared through Redis, OpenAPI at `/openapi.json`, docs at `/docs`, MCP at `/mcp`, and Prometheus
//! metrics.
//!
//! - [`run`] is the whole service (`main.rs` only parses flags); [`serve`] takes a bound listener so tests start the
//!   real thing on `127.0.0.1:0`; [`app::create_app`] serves both.
//! - [`service`] holds every operation once; the REST handlers (`routes/`) and the MCP tools ([`mcp`]) call it.
//! - PostgreSQL is reached only through `store` ([`db`] adds the replica fallback); Redis only through `broker`.

pub mod app;
pub mod auth;
pub mod cache;
pub mod db;
pub mod docs;
pub mod error;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod middleware;
pub mod model;
pub mod openapi;
pub mod params;
pub mod redis_handle;
pub mod routes;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use error::ApiError;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    /// A second address serving the same application (the dashboard's UI service, 8080 in the K3s manifests).
    pub ui_bind: Option<SocketAddr>,
    pub db: db::DbSettings,
    pub broker_url: String,
    /// Result backend URL when it differs from the broker.
    pub result_backend: Option<String>,
    /// `worker-config.yaml`, for routing submissions like the coordinator does.
    pub config_path: PathBuf,
    pub statistics_limit: limits::RatePolicy,
    pub analyses_limit: limits::RatePolicy,
    /// How long a rate-limit check may wait for Redis before failing open (reads) or closed (submissions).
    pub limiter_timeout: Duration,
    /// How long a key look-up is cached in the process.
    pub key_cache_ttl: Duration,
    /// How long a read's answer is reused (0: never).
    pub answer_cache_ttl: Duration,
    /// No ingest for this long makes a sensor `stale`.
    pub stale_after: Duration,
    /// Dead letters newer than this make a sensor `failing`.
    pub failing_window: Duration,
    /// Apply pending migrations at start (on the primary).
    pub migrate: bool,
    /// HTTP worker threads (actix); 0 = one per core.
    pub http_workers: usize,
    /// How often the cluster is inspected for routing (workers' own events keep it current in between).
    pub inspect_interval: Duration,
    pub job_ttl: Duration,
}

impl Settings {
    pub fn new(database_url: &str, broker_url: &str, config_path: PathBuf) -> Settings {
        Settings {
            bind: "0.0.0.0:8081".parse().expect("address"),
            ui_bind: None,
            db: db::DbSettings {
                primary_url: database_url.to_string(),
                replica_url: None,
                pool_size: 16,
                statement_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(5),
                probe_interval: Duration::from_secs(2),
            },
            broker_url: broker_url.to_string(),
            result_backend: None,
            config_path,
            statistics_limit: limits::RatePolicy::parse("100/minute").expect("default"),
            analyses_limit: limits::RatePolicy::parse("5/minute").expect("default"),
            limiter_timeout: Duration::from_millis(250),
            key_cache_ttl: Duration::from_secs(2),
            answer_cache_ttl: Duration::from_secs(5),
            stale_after: Duration::from_secs(2 * 3600),
            failing_window: Duration::from_secs(3600),
            migrate: true,
            http_workers: 0,
            inspect_interval: Duration::from_secs(10),
            job_ttl: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Errors that stop the API.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] routing::ConfigError),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[source] store::StoreError),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Server(#[source] std::io::Error),
    /// With RabbitMQ as the broker, the API's Redis (rate limits, job records) is the result backend's.
    #[error(
        "with an AMQP broker the API keeps its records and rate limits in the Redis result backend: set --result-backend (or CELERY_RESULT_BACKEND) to redis://..."
    )]
    NeedsRedisBackend,
}

/// The shared state of every handler and background task.
pub struct AppState {
    pub settings: Settings,
    pub db: Arc<db::Db>,
    pub redis: Arc<redis_handle::RedisHandle>,
    pub config: Arc<jobs::ConfigHandle>,
    /// Job operations, once Redis is connected.
    pub jobs: RwLock<Option<Arc<jobs::Jobs>>>,
    pub keys: auth::KeyCache,
    pub answers: cache::AnswerCache,
    pub limiter: limits::Limiter,
    pub metrics: Arc<metrics::Metrics>,
    /// Known sensor names and when they were read (refreshed on a miss, at most once a second).
    pub sensors: Mutex<(Vec<String>, Option<Instant>)>,
    pub started: Instant,
}

impl Settings {
    /// True when the broker is RabbitMQ (`amqp://`, `amqps://`).
    pub fn broker_is_amqp(&self) -> bool {
        broker_amqp::is_amqp_url(&self.broker_url)
    }

    /// The Redis the API keeps its own state in (rate limits, job records): the broker's, or with RabbitMQ the
    /// result backend's.
    pub fn redis_url(&self) -> &str {
        match &self.result_backend {
            Some(url) if self.broker_is_amqp() => url,
            _ => &self.broker_url,
        }
    }
}

impl AppState {
    /// Build the state: load the routing config; nothing is connected yet.
    pub fn new(settings: Settings) -> Result<AppState, StartError> {
        if settings.broker_is_amqp()
            && !settings
                .result_backend
                .as_deref()
                .is_some_and(|u| u.starts_with("redis") || u.starts_with("unix"))
        {
            return Err(StartError::NeedsRedisBackend);
        }
        let config = Arc::new(jobs::ConfigHandle::load(&settings.config_path)?);
        Ok(AppState::with_config(settings, config))
    }

    /// Build the state around a loaded config.
    pub fn with_config(settings: Settings, config: Arc<jobs::ConfigHandle>) -> AppState {
        let metrics = Arc::new(metrics::Metrics::new());
        let redis = Arc::new(redis_handle::RedisHandle::new(settings.redis_url()));
        AppState {
            db: Arc::new(db::Db::new(&settings.db, metrics.clone())),
            limiter: limits::Limiter::new(
                redis.clone(),
                settings.statistics_limit,
                settings.analyses_limit,
                settings.limiter_timeout,
                metrics.clone(),
            ),
            keys: auth::KeyCache::new(settings.key_cache_ttl),
            answers: cache::AnswerCache::new(settings.answer_cache_ttl),
            jobs: RwLock::new(None),
            sensors: Mutex::new((Vec::new(), None)),
            started: Instant::now(),
            redis,
            config,
            metrics,
            settings,
        }
    }

    /// Job operations, or 503 while Redis has not been reached yet.
    pub fn jobs(&self) -> Result<Arc<jobs::Jobs>, ApiError> {
        self.jobs
            .read()
            .expect("jobs")
            .clone()
            .ok_or_else(|| ApiError::BrokerUnavailable("Redis has not been reached yet".into()))
    }
}

/// Connect Redis in the background; once connected, build the job operations and start the cluster watch
/// (workers' events and inspect rounds feed the routing registry, as in the coordinator).
pub fn spawn_background(
    state: Arc<AppState>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = vec![state.db.clone().spawn_probe(shutdown.clone())];
    let st = state.clone();
    handles.push(tokio::spawn(async move {
        let Some(redis) = st.redis.connect(shutdown.clone()).await else {
            return;
        };
        let (broker, backend): (jobs::Connections, _) = if st.settings.broker_is_amqp() {
            // RabbitMQ: the broker through the transport seam; records and rate limits in the result backend's
            // Redis (`redis` above).
            let Some(t) = connect_amqp(&st.settings.broker_url, shutdown.clone()).await else {
                return;
            };
            (t, redis)
        } else {
            let backend = match &st.settings.result_backend {
                None => redis.clone(),
                Some(url) => {
                    let h = redis_handle::RedisHandle::new(url);
                    match h.connect(shutdown.clone()).await {
                        Some(b) => b,
                        None => return,
                    }
                }
            };
            (redis.into(), backend)
        };
        let jobs = Arc::new(jobs::Jobs::new(
            broker,
            backend,
            st.config.clone(),
            st.settings.job_ttl,
            3.0 * st.settings.inspect_interval.as_secs_f64() + 3.0,
        ));
        *st.jobs.write().expect("jobs") = Some(jobs.clone());
        let watchers = jobs::spawn_cluster_watch(
            jobs,
            st.settings.inspect_interval,
            Duration::from_secs(1),
            shutdown,
            |_, _| {},
        );
        for w in watchers {
            let _ = w.await;
        }
    }));
    handles
}

/// Connect to RabbitMQ, retrying with backoff (0.5 s doubling to 10 s) until it works or `shutdown`.
async fn connect_amqp(url: &str, mut shutdown: watch::Receiver<bool>) -> Option<jobs::Connections> {
    let mut backoff = transport::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match jobs::Connections::connect(url).await {
            Ok(c) => {
                tracing::info!(url = %transport::redact_url(url), "connected to RabbitMQ");
                return Some(c);
            }
            Err(e) => {
                tracing::warn!(url = %transport::redact_url(url), error = %e, retry_in = ?backoff.peek(), "cannot reach RabbitMQ; retrying");
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

/// Run until `shutdown` turns true: apply migrations (unless disabled), start the background tasks, serve HTTP.
pub async fn run(settings: Settings, shutdown: watch::Receiver<bool>) -> Result<(), StartError> {
    let listener =
        std::net::TcpListener::bind(settings.bind).map_err(|source| StartError::Bind {
            addr: settings.bind,
            source,
        })?;
    let state = Arc::new(AppState::new(settings)?);
    serve(state, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound.
pub async fn serve(
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    if state.settings.migrate {
        let applied = store::run_migrations(&state.settings.db.primary_url)
            .await
            .map_err(StartError::Migrate)?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied migrations");
        }
    }
    let addr = listener.local_addr().map_err(StartError::Server)?;
    let background = spawn_background(state.clone(), shutdown.clone());
    let data = actix_web::web::Data::from(state.clone());
    let mut server = actix_web::HttpServer::new(move || app::create_app(data.clone()))
        .disable_signals()
        .shutdown_timeout(5);
    if state.settings.http_workers > 0 {
        server = server.workers(state.settings.http_workers);
    }
    let mut server = server
        .listen(listener)
        .map_err(|source| StartError::Bind { addr, source })?;
    if let Some(ui) = state.settings.ui_bind {
        server = server
            .bind(ui)
            .map_err(|source| StartError::Bind { addr: ui, source })?;
        tracing::info!(addr = %ui, "celeriac-api also listening (dashboard)");
    }
    let server = server.run();
    let handle = server.handle();
    tracing::info!(%addr, "celeriac-api listening");
    let stopper = tokio::spawn(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        handle.stop(true).await;
    });
    let result = server.await.map_err(StartError::Server);
    stopper.abort();
    for h in background {
        h.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_rabbitmq_the_api_needs_a_redis_result_backend() {
        let path = PathBuf::from("/nonexistent/worker-config.yaml");
        let mut s = Settings::new("postgres://127.0.0.1/x", "amqp://guest:guest@h//", path);
        assert!(matches!(
            AppState::new(s.clone()),
            Err(StartError::NeedsRedisBackend)
        ));
        s.result_backend = Some("rpc://".into());
        assert!(matches!(
            AppState::new(s.clone()),
            Err(StartError::NeedsRedisBackend)
        ));
        // With a Redis backend it gets past that check (to the config file, which is missing here), and that Redis
        // is where its own state goes.
        s.result_backend = Some("redis://127.0.0.1:6379/3".into());
        assert!(matches!(
            AppState::new(s.clone()),
            Err(StartError::Config(_))
        ));
        assert_eq!(s.redis_url(), "redis://127.0.0.1:6379/3");
    }
}
