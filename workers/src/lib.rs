//! celeriac-worker as a library: the task API, the built-in tasks, and the worker that runs them.
//! `main.rs` only parses the command line and calls [`worker::Worker::run`], so tests start the real thing.

pub mod analysis_tasks;
pub mod builtin;
mod chord;
pub mod config;
pub mod control;
pub mod events;
pub mod metrics;
pub mod mingle;
pub mod ratelimit;
pub mod state;
pub mod task;
pub mod worker;

pub use config::WorkerConfig;
pub use task::{Registry, Task, TaskContext, TaskError, TaskOptions};
pub use worker::{Shutdown, Worker};

/// The registry every celeriac-worker starts with.
pub fn default_registry() -> Registry {
    let mut reg = Registry::new();
    builtin::register(&mut reg);
    reg
}
