//! `jobs`: the one implementation of job records and routing decisions, shared by `celeriac-coordinator` and
//! `celeriac-api`, so a job submitted through either goes through the same routing, record and publish path.
//!
//! - [`Jobs`] holds the broker, the result backend, the records ([`JobStore`]), the live config ([`ConfigHandle`]),
//!   the worker [`Registry`] and the remote-control client; its methods decide, submit, view, revoke and watch
//!   jobs, and run one inspect round ([`Jobs::refresh`]); [`Jobs::queue_depths`] reads the known queues' depths.
//! - [`spawn_cluster_watch`] keeps the registry current: the Celery event subscription and periodic inspect rounds.
//! - Decisions come from the pure `routing` crate. The broker is reached through the `transport` seam (publishing,
//!   remote control, events), so jobs run on Redis or RabbitMQ ([`Connections`]); celeriac's own state (records,
//!   tokens, registrations) is kept in Redis through `broker`: the broker's Redis, or with RabbitMQ the result
//!   backend's. There is no HTTP here: each service maps [`JobError`] to its own error table.

pub mod cluster;
pub mod config_handle;
pub mod dead_letters;
pub mod queues;
pub mod registry;
pub mod store;
pub mod submit;
pub mod view;

use broker::{Broker, BrokerError};
use celeriac_control::ControlClient;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use transport::{SharedTransport, TransportError};

pub use cluster::spawn_cluster_watch;
pub use config_handle::{ConfigHandle, Reload};
pub use dead_letters::{DeadLetter, DeadLetters};
pub use queues::QueueDepth;
pub use registry::{InspectInfo, WorkerRegistry, WorkerRow};
pub use store::{
    HOLDING_KEY, IssuedToken, JobRecord, JobStore, JobStoreError, Registration, Reroute,
    TokenCheck, TokenRecord, hash_token,
};
pub use submit::{JobRequest, Validated, parse_requirements, validate};
pub use view::{JobUpdate, JobView};

/// Errors of job operations; each API maps them to its own error table.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A bad submission (400 `invalid_job` in the coordinator).
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// Requirements the routing crate refuses (400 `invalid_requirements`).
    #[error("invalid requirements: {0}")]
    InvalidRequirements(String),
    /// The job id is unknown: neither a record nor a result (404 `job_not_found`).
    #[error("no job {0}")]
    NotFound(String),
    /// Routing found no place for the job; it was recorded anyway. `details` is
    /// `{"job_id": .., "decision": ..}` (422 `routing_rejected`).
    #[error("routing rejected the job: {reason}")]
    RoutingRejected {
        reason: String,
        details: serde_json::Value,
    },
    /// `allowed_tasks` in `worker-config.yaml` does not allow this task on the job's queue; nothing was recorded or
    /// published (403 `task_not_allowed`). `reason` names the list and what it allows.
    #[error("task {task:?} is not allowed on queue {queue:?}: {reason}")]
    TaskNotAllowed {
        task: String,
        queue: String,
        reason: String,
    },
    /// Redis (broker or result backend) cannot be reached (503).
    #[error("the broker is unavailable: {0}")]
    BrokerUnavailable(String),
    /// A stored record or result is not readable (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<BrokerError> for JobError {
    fn from(e: BrokerError) -> Self {
        JobError::BrokerUnavailable(e.to_string())
    }
}

impl From<TransportError> for JobError {
    fn from(e: TransportError) -> Self {
        JobError::BrokerUnavailable(e.to_string())
    }
}

impl From<JobStoreError> for JobError {
    fn from(e: JobStoreError) -> Self {
        match e {
            JobStoreError::Broker(b) => JobError::BrokerUnavailable(b.to_string()),
            other => JobError::Internal(other.to_string()),
        }
    }
}

/// The broker a coordinator or API works with.
#[derive(Clone)]
pub struct Connections {
    /// The broker behind the transport seam: publishing, remote control, events, queue lengths.
    pub transport: SharedTransport,
    /// The broker's own Redis when the broker is Redis: kombu's lists are then read directly (depths per priority
    /// bucket, `unacked`, the dead-letter list, re-routing moves) and celeriac's state is kept there.
    pub broker_redis: Option<Broker>,
}

impl From<Broker> for Connections {
    fn from(broker: Broker) -> Connections {
        Connections {
            transport: Arc::new(broker.clone()),
            broker_redis: Some(broker),
        }
    }
}

impl Connections {
    /// Connect to the broker at `url`: Redis (`redis://`, `rediss://`, `redis+sentinel://`) or RabbitMQ
    /// (`amqp://`, `amqps://`, with Celery's default queue declarations).
    pub async fn connect(url: &str) -> Result<Connections, TransportError> {
        use celeriac_client::connect::{self, BrokerConnection};
        Ok(
            match connect::broker(url, celeriac_client::AmqpOptions::default()).await? {
                BrokerConnection::Redis(b) => b.into(),
                c @ BrokerConnection::Amqp(_) => Connections {
                    transport: c.transport(),
                    broker_redis: None,
                },
            },
        )
    }
}

/// Everything a job operation needs: the broker, the result backend, the records, the live config and registry,
/// and the control client.
pub struct Jobs {
    /// The broker behind the transport seam.
    pub transport: SharedTransport,
    /// The broker's Redis when the broker is Redis (see [`Connections::broker_redis`]).
    pub broker_redis: Option<Broker>,
    /// The Celery result backend (the broker itself unless configured apart).
    pub backend: Broker,
    /// Job records, tokens and registrations, in the broker's Redis or else the result backend's.
    pub store: JobStore,
    pub config: Arc<ConfigHandle>,
    pub registry: Arc<Mutex<WorkerRegistry>>,
    pub control: Arc<ControlClient>,
}

impl Jobs {
    /// Job records are kept `job_ttl`; an inspect reply counts as a sign of life for `inspect_window` seconds
    /// (for workers without heartbeats).
    pub fn new(
        broker: impl Into<Connections>,
        backend: Broker,
        config: Arc<ConfigHandle>,
        job_ttl: Duration,
        inspect_window: f64,
    ) -> Jobs {
        let c = broker.into();
        let state = c.broker_redis.clone().unwrap_or_else(|| backend.clone());
        Jobs {
            store: JobStore::new(state, job_ttl.as_secs()),
            registry: Arc::new(Mutex::new(WorkerRegistry::new(inspect_window))),
            control: Arc::new(ControlClient::new(c.transport.clone())),
            config,
            transport: c.transport,
            broker_redis: c.broker_redis,
            backend,
        }
    }

    /// Decide with the current config and registry snapshot (pure `routing::decide` underneath).
    pub fn decide(&self, job: &routing::Job) -> routing::Decision {
        let config = self.config.get();
        let snapshot = self
            .registry
            .lock()
            .expect("registry")
            .snapshot(broker::now_f64());
        routing::decide(&config, &snapshot, job)
    }

    /// Broadcast `revoke` (with `terminate`, signal default `SIGTERM`) and mark the record revoked. `NotFound` if
    /// neither a record nor a result exists.
    pub async fn revoke(
        &self,
        id: &str,
        terminate: bool,
        signal: Option<&str>,
    ) -> Result<(), JobError> {
        let mut record = self.store.job(id).await?;
        if record.is_none() && self.backend.get_result(id).await?.is_none() {
            return Err(JobError::NotFound(id.to_string()));
        }
        let signal = signal.unwrap_or("SIGTERM");
        let args = json!({"task_id": [id], "terminate": terminate, "signal": signal});
        self.control
            .broadcast(
                "revoke",
                args,
                None,
                false,
                Duration::from_millis(100),
                None,
            )
            .await
            .map_err(|e| JobError::BrokerUnavailable(e.to_string()))?;
        if let Some(r) = record.as_mut() {
            r.revoked = true;
            self.store.put_job(r).await?;
        }
        Ok(())
    }
}
