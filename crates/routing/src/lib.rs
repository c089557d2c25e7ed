//! PURE routing for the coordinator: the `worker-config.yaml` model and its validation ([`config`]), and routing
//! decisions with their explanations ([`decide`]).
//!
//! Architecture invariant: no tokio, redis, actix or filesystem watching here; the only I/O is
//! [`WorkerConfig::load`], a convenience for binaries that reads one file.

pub mod config;
pub mod decide;

pub use config::{
    Accelerator, Capabilities, ConfigError, NoWorkerPolicy, Profile, Requirements, Strategy,
    TaskPatterns, WorkerConfig, WorkerSpec,
};
pub use decide::{Candidate, Decision, Job, LiveWorker, Outcome, decide};
