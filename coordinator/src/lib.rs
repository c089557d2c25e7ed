//! `celeriac-coordinator`: decides where each job runs from `worker-config.yaml` and what the workers' own Celery
//! events and `inspect` replies say, and delivers only through standard Celery means (shared queues and the
//! worker-direct `<node>.dq2` queues), so Python workers are routed to exactly like Rust ones.
//!
//! - [`run`] is the whole service (`main.rs` only parses flags): background loops plus the HTTP API on 8082.
//! - [`api::create_app`] serves both `run` and the tests.
//! - Job records, submission, views, the registry, the live config and the cluster watch are the shared `jobs`
//!   crate ([`::jobs::Jobs`], also used by `celeriac-api`); this crate adds the HTTP API, metrics, registration
//!   tokens, config reloads and re-routing of offline workers' `.dq2` queues ([`crate::jobs`]).
//! - Several coordinators can run on one broker: all serve the API, the leader alone re-routes; leadership is a
//!   fenced lease in Redis ([`crate::leader`]).
//! - Decisions come from the pure `routing` crate; Redis is reached only through `broker`.

pub mod api;
pub mod error;
pub mod jobs;
pub mod leader;
pub mod metrics;
pub mod register_client;

use ::jobs::Jobs;
use broker::Broker;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use ::jobs::{
    ConfigHandle, Connections, JobStore, Reload, WorkerRegistry, config_handle, registry, store,
};
pub use error::ApiError;
pub use metrics::Metrics;

/// Everything `run` needs besides the broker.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub config_path: PathBuf,
    /// Key for admin endpoints; `None` disables them.
    pub admin_key: Option<String>,
    /// Key for submitting and revoking jobs (the admin key is accepted too); with neither key set, job submission
    /// is refused (`jobs_disabled`).
    pub job_key: Option<String>,
    /// Result backend URL when it differs from the broker.
    pub result_backend: Option<String>,
    /// How often `inspect active_queues/stats/active` is broadcast.
    pub inspect_interval: Duration,
    /// Quiet time that ends an inspect collection.
    pub inspect_timeout: Duration,
    /// How often offline workers' `.dq2` queues are checked.
    pub reroute_interval: Duration,
    /// After start, how long before `.dq2` queues of never-seen nodes count as abandoned.
    pub stale_grace: Duration,
    /// How long job records are kept.
    pub job_ttl: Duration,
    /// How long the leader lease lasts without renewal: a dead leader is replaced within about this much.
    pub lease_ttl: Duration,
}

impl Settings {
    pub fn new(config_path: PathBuf) -> Settings {
        Settings {
            bind: "0.0.0.0:8082".parse().expect("address"),
            config_path,
            admin_key: None,
            job_key: None,
            result_backend: None,
            inspect_interval: Duration::from_secs(5),
            inspect_timeout: Duration::from_millis(1000),
            reroute_interval: Duration::from_secs(1),
            stale_grace: Duration::from_secs(30),
            job_ttl: Duration::from_secs(7 * 86_400),
            lease_ttl: Duration::from_secs(4),
        }
    }

    /// For workers without heartbeats, an inspect reply counts as a sign of life this long: three rounds plus the
    /// collection time plus two seconds, so one slow or missed reply does not make a busy worker look dead.
    pub fn inspect_window(&self) -> f64 {
        3.0 * self.inspect_interval.as_secs_f64() + self.inspect_timeout.as_secs_f64() + 2.0
    }
}

/// Errors that stop the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Config(#[from] routing::ConfigError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// With RabbitMQ as the broker, celeriac's state needs a Redis result backend.
    #[error(
        "with an AMQP broker the coordinator keeps its records in the Redis result backend: set --result-backend (or CELERY_RESULT_BACKEND) to redis://..."
    )]
    NeedsRedisBackend,
    #[error("cannot serve HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Server(#[source] std::io::Error),
}

/// The shared state of the API and the background loops.
pub struct AppState {
    pub settings: Settings,
    /// Broker, result backend, records, live config, registry and control client (shared with `celeriac-api`).
    pub jobs: Arc<Jobs>,
    pub metrics: Arc<Metrics>,
    /// This coordinator's part in the leader lease (only the leader re-routes).
    pub leader: Arc<leader::Leader>,
    pub started_at: f64,
    /// Offline nodes' `.dq2` queues found missing on RabbitMQ, looked at less and less often.
    pub absent_direct_queues: jobs::AbsentQueues,
}

impl AppState {
    /// Build the state: load the config file and connect the result backend.
    pub async fn new(
        settings: Settings,
        broker: impl Into<Connections>,
    ) -> Result<AppState, CoordinatorError> {
        let config = ConfigHandle::load(&settings.config_path)?;
        AppState::with_config(settings, broker, config).await
    }

    /// Build the state around an already loaded config.
    pub async fn with_config(
        settings: Settings,
        broker: impl Into<Connections>,
        config: ConfigHandle,
    ) -> Result<AppState, CoordinatorError> {
        let broker = broker.into();
        let backend = match (&settings.result_backend, &broker.broker_redis) {
            (Some(url), _) if !broker_amqp::is_amqp_url(url) && !url.starts_with("rpc") => {
                Broker::connect(url).await?
            }
            (None, Some(redis)) => redis.clone(),
            _ => return Err(CoordinatorError::NeedsRedisBackend),
        };
        // The lease lives where the moves happen (the broker's Redis), or with RabbitMQ in the state store.
        let lease_redis = broker
            .broker_redis
            .clone()
            .unwrap_or_else(|| backend.clone());
        let jobs = Jobs::new(
            broker,
            backend,
            Arc::new(config),
            settings.job_ttl,
            settings.inspect_window(),
        );
        let metrics = Arc::new(Metrics::new());
        let leader = Arc::new(leader::Leader::new(
            lease_redis,
            settings.lease_ttl,
            metrics.clone(),
        ));
        Ok(AppState {
            jobs: Arc::new(jobs),
            metrics,
            leader,
            started_at: broker::now_f64(),
            absent_direct_queues: jobs::AbsentQueues::default(),
            settings,
        })
    }

    /// Reload the config now (SIGHUP, file change, admin API) and count the result.
    pub fn reload_config(&self) -> Reload {
        let r = self.jobs.config.reload();
        let label = match &r {
            Reload::Applied => "applied",
            Reload::Unchanged => "unchanged",
            Reload::Kept { .. } => "refused",
        };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        r
    }

    /// One round of `inspect active_queues`, `stats` and `active`, plus the registrations from Redis; sets the
    /// worker gauges.
    pub async fn refresh(&self) {
        let (online, known) = self.jobs.refresh(self.settings.inspect_timeout).await;
        self.metrics.set_workers(online, known);
    }

    /// One re-route pass: move waiting jobs out of every offline worker's `.dq2`. Only the leader moves: on a
    /// follower (the lease is someone else's) this does nothing and returns 0.
    pub async fn reroute_pass(&self, include_stale: bool) -> usize {
        if self.leader.fence().is_none() && self.leader.tick().await.is_none() {
            return 0;
        }
        // A move that failed half way (Redis error between the two steps) is finished first.
        if self.jobs.broker_redis.is_some()
            && let Err(e) = jobs::recover_held(self).await
        {
            tracing::warn!(error = %e, "cannot finish held moves; will retry");
        }
        let now = broker::now_f64();
        let mut nodes = self
            .jobs
            .registry
            .lock()
            .expect("registry")
            .offline_nodes(now);
        // Direct queues of nodes never seen since start: found by a key scan on Redis (RabbitMQ lists queues only
        // through its management API, so there only the nodes the registry knows are re-routed).
        if include_stale && let Some(redis) = &self.jobs.broker_redis {
            match redis.kv_scan("*.dq2*").await {
                Ok(keys) => {
                    let reg = self.jobs.registry.lock().expect("registry");
                    for node in direct_queue_nodes(&keys) {
                        if !reg.alive(&node, now) && !nodes.contains(&node) {
                            nodes.push(node);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot scan for worker-direct queues"),
            }
        }
        self.absent_direct_queues.keep_only(
            &nodes
                .iter()
                .map(|n| celery_proto::keys::worker_direct_queue(n))
                .collect::<Vec<_>>(),
        );
        let mut moved = 0;
        for node in nodes {
            match jobs::reroute_node(self, &node).await {
                Ok(n) => moved += n,
                Err(e) => tracing::warn!(node, error = %e, "re-routing failed; will retry"),
            }
        }
        moved
    }
}

/// The nodes whose worker-direct queue (`<node>.dq2`, any priority bucket) is among `keys` (a `*.dq2*` scan).
/// kombu's binding sets (`_kombu.binding.<node>.dq2`) match that pattern too and are skipped.
fn direct_queue_nodes(keys: &[String]) -> Vec<String> {
    let mut nodes: Vec<String> = keys
        .iter()
        .filter(|k| !celery_proto::kombu_redis::is_kombu_internal(k))
        .filter_map(|k| {
            celery_proto::kombu_redis::queue_of_key(k)
                .strip_suffix(".dq2")
                .map(str::to_string)
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// Start the background loops: events and inspect rounds (`jobs::spawn_cluster_watch`), re-routing, config file
/// watch.
pub fn spawn_background(
    state: Arc<AppState>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let metrics = state.metrics.clone();
    let mut handles = ::jobs::spawn_cluster_watch(
        state.jobs.clone(),
        state.settings.inspect_interval,
        state.settings.inspect_timeout,
        shutdown.clone(),
        move |online, known| metrics.set_workers(online, known),
    );
    // The leader lease: renewed by the leader, tried by the others.
    {
        let state = state.clone();
        let mut stop = shutdown.clone();
        handles.push(tokio::spawn(async move {
            loop {
                state.leader.tick().await;
                tokio::select! {
                    _ = tokio::time::sleep(state.leader.renew_interval()) => {}
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    // Re-routing (the leader only).
    {
        let state = state.clone();
        let mut stop = shutdown.clone();
        handles.push(tokio::spawn(async move {
            match jobs::recover_held(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(n, "finished moves interrupted by a previous stop"),
                Err(e) => tracing::error!(error = %e, "cannot recover held messages"),
            }
            let mut tick: u64 = 0;
            loop {
                tick += 1;
                let grace_over = broker::now_f64() - state.started_at
                    >= state.settings.stale_grace.as_secs_f64();
                state
                    .reroute_pass(grace_over && tick.is_multiple_of(10))
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(state.settings.reroute_interval) => {}
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    // Config file watch.
    {
        let state = state.clone();
        let mut stop = shutdown;
        handles.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                if state.jobs.config.changed_on_disk() {
                    state.reload_config();
                }
            }
        }));
    }
    handles
}

/// Run the coordinator until `shutdown` turns true: background loops, SIGHUP reloads, and the API on
/// `settings.bind`.
pub async fn run(
    settings: Settings,
    broker: impl Into<Connections>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), CoordinatorError> {
    let state = Arc::new(AppState::new(settings, broker).await?);
    let listener = std::net::TcpListener::bind(state.settings.bind).map_err(|source| {
        CoordinatorError::Bind {
            addr: state.settings.bind,
            source,
        }
    })?;
    serve(state, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound (tests bind `127.0.0.1:0`).
pub async fn serve(
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), CoordinatorError> {
    let addr = listener.local_addr().map_err(CoordinatorError::Server)?;
    let background = spawn_background(state.clone(), shutdown.clone());
    let hup = {
        let state = state.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading worker-config");
                state.reload_config();
            }
        })
    };
    let data = actix_web::web::Data::from(state.clone());
    let server = actix_web::HttpServer::new(move || api::create_app(data.clone()))
        .workers(2)
        .disable_signals()
        .listen(listener)
        .map_err(|source| CoordinatorError::Bind { addr, source })?
        .run();
    let handle = server.handle();
    tracing::info!(%addr, "celeriac-coordinator listening");
    let stopper = tokio::spawn(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        handle.stop(true).await;
    });
    let result = server.await.map_err(CoordinatorError::Server);
    stopper.abort();
    hup.abort();
    for h in background {
        h.abort();
    }
    // Hand the lease over now rather than after it expires.
    state.leader.release().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stale_scan_takes_direct_queues_and_skips_kombu_binding_sets() {
        let keys: Vec<String> = [
            "a@h.dq2",
            "a@h.dq2\x06\x163",
            "b@h.dq2\x06\x169",
            "_kombu.binding.c@h.dq2",
            "_kombu.binding_permanent.c@h.dq2",
            "_kombu.binding.C.dq2",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(direct_queue_nodes(&keys), ["a@h", "b@h"]);
    }
}
