//! Talking to a Celery cluster from Rust the way `celery inspect`, `celery control`, `celery events` and Flower do:
//!
//! - [`ControlClient`]: broadcast a pidbox command and collect `{node: reply}` answers (kombu's `Mailbox._broadcast`
//!   and `_collect`: bind a reply queue, broadcast the request, pop replies until a quiet `timeout` or `limit`
//!   replies, then unbind and delete the reply queue).
//! - [`EventReceiver`]: subscribe to the `celeryev` exchange (`#`), decode envelopes, split `task.multi` batches
//!   into events.
//! - [`ClusterState`]: a worker-state model fed by events (online, last heartbeat, freq, active, processed,
//!   loadavg, software), with Flower's liveness rule, plus a bounded view of recent tasks.
//!
//! Works against Python and Rust workers alike: only the wire format of `celery-proto` is assumed. Brokers are
//! reached through the [`transport::Transport`] trait only (Redis through `broker`, or `transport::memory`).

pub mod client;
pub mod receiver;
pub mod state;

pub use client::{ControlClient, ControlError, DEFAULT_MAX_REPLY_BYTES, DEFAULT_TIMEOUT};
pub use receiver::{Event, EventReceiver};
pub use state::{ClusterState, TaskView, WorkerView};
