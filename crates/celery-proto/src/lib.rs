//! The Celery/kombu wire contract with Python, with no I/O: envelopes, task protocol v1/v2, result meta,
//! exception encoding, states, key and channel names, priority buckets, topic patterns, pidbox and event bodies.
//!
//! Architecture invariant: this crate knows nothing about tokio, Redis, diesel or HTTP.
//! Its types change only together with golden tests against real Celery output (`tests/golden.rs`).

pub mod clock;
pub mod command;
pub mod control;
pub mod envelope;
pub mod event;
pub mod json;
pub mod keys;
pub mod kombu_amqp;
pub mod kombu_redis;
pub mod pyrepr;
pub mod result;
pub mod state;
pub mod task;
pub mod time;

pub use clock::LamportClock;
pub use envelope::{Envelope, EnvelopeError, Message};
pub use result::{ExceptionInfo, Extended, ResultMeta};
pub use state::State;
pub use task::{Embed, InvalidTask, Signature, TaskMessage, TaskRequest};

/// This machine's host name, as Python's `socket.gethostname()` gives it.
pub fn hostname() -> String {
    std::env::var("CELERIAC_HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
