//! `jobs`: the one implementation of job records and routing decisions, shared by `celeriac-coordinator` and
//! `celeriac-api`, so a job submitted through either goes through the same routing, record and publish path.
//!
//! - [`Jobs`] holds the broker, the result backend, the records ([`JobStore`]), the live config ([`ConfigHandle`]),
//!   the worker [`Registry`] and the remote-control client; its methods decide, submit, view, revoke and watch
//!   jobs, and run one inspect round ([`Jobs::refresh`]); [`Jobs::queue_depths`] reads the known queues' depths.
//! - [`spawn_cluster_watch`] keeps the registry current: the Celery event subscription and periodic inspect rounds.
//! - Decisions come from the pure `routing` crate; Redis is reached only through `broker` (remote control and
//!   events through its `transport::Transport` implementation). There is no HTTP here: each service maps
//!   [`JobError`] to its own error table.

pub mod cluster;
pub mod config_handle;
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

pub use cluster::spawn_cluster_watch;
pub use config_handle::{ConfigHandle, Reload};
pub use queues::{DeadLetter, QueueDepth};
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

impl From<JobStoreError> for JobError {
    fn from(e: JobStoreError) -> Self {
        match e {
            JobStoreError::Broker(b) => JobError::BrokerUnavailable(b.to_string()),
            other => JobError::Internal(other.to_string()),
        }
    }
}

/// Everything a job operation needs: the broker, the result backend, the records, the live config and registry,
/// and the control client.
pub struct Jobs {
    pub broker: Broker,
    /// The Celery result backend (the broker itself unless configured apart).
    pub backend: Broker,
    pub store: JobStore,
    pub config: Arc<ConfigHandle>,
    pub registry: Arc<Mutex<WorkerRegistry>>,
    pub control: Arc<ControlClient>,
}

impl Jobs {
    /// Job records are kept `job_ttl`; an inspect reply counts as a sign of life for `inspect_window` seconds
    /// (for workers without heartbeats).
    pub fn new(
        broker: Broker,
        backend: Broker,
        config: Arc<ConfigHandle>,
        job_ttl: Duration,
        inspect_window: f64,
    ) -> Jobs {
        Jobs {
            store: JobStore::new(broker.clone(), job_ttl.as_secs()),
            registry: Arc::new(Mutex::new(WorkerRegistry::new(inspect_window))),
            control: Arc::new(ControlClient::new(Arc::new(broker.clone()))),
            config,
            broker,
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
