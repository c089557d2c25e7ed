//! The worker runtime: everything a Celery worker does, for tasks written in Rust, over any transport.
//!
//! - [`task`]: the task API (`Task::new` / `Task::blocking` with Python-style argument binding, options,
//!   `TaskContext::update_state`, `TaskError` outcomes) and the [`TaskRegistry`].
//! - [`worker::Worker`]: wires the parts and runs them; [`consumer`] takes messages within the prefetch budget,
//!   [`executor`] runs one message from delivery to settlement, [`state`] owns every request's lifecycle.
//! - [`control`]: the remote-control mailbox (`celery inspect` / `celery control`), [`mingle`] at start-up,
//!   [`events`] (the typed event sink), [`metrics`] (Prometheus), [`chord`] joins, [`ratelimit`], [`otel`]
//!   (OpenTelemetry spans and W3C trace context in task headers, when `RuntimeConfig::tracing` is on).
//! - [`builtin`]: small tasks every celeriac worker registers (ping, add, sleep, noop, ...).
//!
//! Architecture invariant: this crate knows no Cowrie, no PostgreSQL and no broker client library. It talks to
//! brokers and result backends only through the `transport` traits; binaries pick the implementation.

pub mod builtin;
mod chord;
pub mod config;
mod consumer;
pub mod control;
pub mod events;
mod executor;
pub mod metrics;
pub mod mingle;
pub mod otel;
pub mod ratelimit;
pub mod state;
pub mod task;
pub mod worker;

pub use config::RuntimeConfig;
pub use executor::{Pool, Shutdown};
pub use task::{Task, TaskContext, TaskError, TaskOptions, TaskRegistry};
pub use worker::Worker;

/// A registry holding the built-in tasks (what every celeriac worker starts with).
pub fn default_registry() -> TaskRegistry {
    let mut reg = TaskRegistry::new();
    builtin::register(&mut reg);
    reg
}
