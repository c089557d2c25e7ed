//! The transport seam: what the worker runtime, the control client and the event receiver need from a broker and
//! a result backend, as two traits with no client-library type in them.
//!
//! - [`Transport`]: task queues (declare, publish, consume with a prefetch budget, ack, requeue, restore, leases,
//!   dead letters), fanout for remote control and events (broadcast, subscribe), and mailboxes (direct sends to
//!   bound queues, popping replies) as kombu's `Mailbox` uses them.
//! - [`ResultBackend`]: store, get and wait for task results, and chord joins.
//!
//! Implementations: `broker` (Redis, kombu's conventions), `broker-amqp` (RabbitMQ, kombu's AMQP conventions; also
//! the `rpc://` result backend), and [`memory`] (in-process, for tests of the runtime with `tokio::time::pause`).
//! Messages cross the seam as `celery_proto` values: [`Envelope`] out, [`celery_proto::Message`] in; how they are
//! laid out on the wire is the implementation's business.
//!
//! Architecture invariant: this crate depends on no client library (no `redis`, no `lapin`), only on `celery-proto`
//! and tokio's channels and timers.

pub mod backoff;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod memory;
mod redact;

use async_trait::async_trait;
use celery_proto::{Envelope, EnvelopeError, Message};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub use backoff::Backoff;
pub use redact::{percent_decode, redact_url};

/// What can go wrong talking to a broker or result backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The service cannot be reached now (refused, reset, timed out, loading); retrying later can help.
    #[error("{transport} unavailable: {message}")]
    Unavailable {
        transport: &'static str,
        message: String,
    },
    /// The service answered with an error, or the request cannot succeed as asked; retrying does not help.
    #[error("{transport}: {message}")]
    Failed {
        transport: &'static str,
        message: String,
    },
}

impl TransportError {
    /// True when retrying later can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, TransportError::Unavailable { .. })
    }
}

pub type Result<T> = std::result::Result<T, TransportError>;

/// How many dead letters a store keeps and for how long; the oldest go first (0 or `None`: no bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterBounds {
    pub max_entries: u64,
    pub max_age: Option<Duration>,
}

impl Default for DeadLetterBounds {
    /// 100,000 entries, 30 days.
    fn default() -> DeadLetterBounds {
        DeadLetterBounds {
            max_entries: 100_000,
            max_age: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// An age as operators write it: a whole number with an optional unit, `s` (the default), `m`, `h`, `d` or `w`
/// (`90`, `15m`, `7d`); used by `--dead-letter-max-age` and `purge --older-than`.
pub fn parse_age(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not an age (a whole number with s, m, h, d or w, e.g. 7d)")
    })?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, m, h, d or w)"
            ));
        }
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Dead letters dropped by [`Transport::keep_dead_letter`] to stay within its bounds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterDropped {
    /// Beyond `max_entries`.
    pub too_many: u64,
    /// Older than `max_age`.
    pub too_old: u64,
}

/// A dead-letter record and its id: the record's own string `id`, or a new one (a UUID) written into it. A record
/// that is not a JSON object is kept as it is, under a new id.
pub fn dead_letter_with_id(record: &[u8]) -> (String, Vec<u8>) {
    let new_id = || uuid::Uuid::new_v4().to_string();
    match serde_json::from_slice::<serde_json::Value>(record) {
        Ok(serde_json::Value::Object(mut map)) => {
            if let Some(id) = map
                .get("id")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
            {
                return (id.to_string(), record.to_vec());
            }
            let id = new_id();
            map.insert("id".into(), serde_json::Value::String(id.clone()));
            let bytes = serde_json::to_vec(&serde_json::Value::Object(map)).expect("json");
            (id, bytes)
        }
        _ => (new_id(), record.to_vec()),
    }
}

/// A message taken from a task queue.
#[derive(Debug)]
pub struct Delivery {
    /// The queue it came from.
    pub queue: String,
    /// The tag to settle it with, when the transport holds it unacknowledged (`None`: nothing to ack, e.g. a Redis
    /// message without a readable delivery tag, which kombu cannot record either).
    pub tag: Option<String>,
    /// The bytes as they were on the wire (kept for dead letters).
    pub raw: Vec<u8>,
    /// The decoded message, or why it could not be decoded.
    pub message: std::result::Result<Message, EnvelopeError>,
}

/// A message received on a subscription or popped from a mailbox queue (never acknowledged).
#[derive(Debug)]
pub struct Incoming {
    /// The routing key it was published with, as far as the transport knows it.
    pub routing_key: String,
    pub raw: Vec<u8>,
    pub message: std::result::Result<Message, EnvelopeError>,
}

/// Where an unacknowledged message goes when it is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Reject with requeue: to the back of its queue, after what is waiting (kombu's `reject(requeue=True)`).
    Back,
    /// Restore: to the front of its queue, delivered next (kombu's restore on close, shutdown, lost consumers).
    Front,
}

/// A queue bound to an exchange with an expiry: the pidbox mailbox `<node>.celery.pidbox`, a reply queue, an event
/// receiver's `celeryev.<uuid>`. `routing_key` is an AMQP binding key (`#` matches everything on a topic exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: String,
    pub routing_key: String,
    pub queue: String,
    /// The queue's `x-expires`: it disappears when nobody used it for this long.
    pub expires: Duration,
}

impl Binding {
    pub fn new(exchange: &str, routing_key: &str, queue: &str, expires: Duration) -> Binding {
        Binding {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            queue: queue.to_string(),
            expires,
        }
    }
}

/// A live subscription: messages published to the bound exchange after [`Transport::subscribe`] returned.
/// Dropping it stops the reader.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<Incoming>,
    reader: Option<tokio::task::AbortHandle>,
}

impl Subscription {
    /// A subscription fed through `rx`; `reader` (if any) is aborted when the subscription is dropped.
    pub fn new(
        rx: mpsc::UnboundedReceiver<Incoming>,
        reader: Option<tokio::task::AbortHandle>,
    ) -> Subscription {
        Subscription { rx, reader }
    }

    /// The next message, or `None` once the connection behind it is lost (subscribe again to go on).
    pub async fn next(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(r) = &self.reader {
            r.abort();
        }
    }
}

/// A message broker as Celery uses it. Every method is safe to call from many tasks at once.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Short name of the transport (`redis`, `memory`, `amqp`), for logs and `inspect report`.
    fn name(&self) -> &'static str;

    /// Declare a task queue (and its binding on the default exchange) the way Celery does.
    async fn declare_queue(&self, queue: &str) -> Result<()>;

    /// Publish a task message to `queue` (declaring it first if this process has not yet).
    async fn publish(&self, queue: &str, envelope: &Envelope) -> Result<()>;

    /// Take up to `max` messages from `queues` (listed in the order to prefer), holding them unacknowledged.
    /// Returns at once when something is waiting; otherwise waits up to `idle_wait` for one message.
    /// Not cancel-safe: a caller that drops the future may lose the message being taken; let it finish.
    async fn consume(
        &self,
        queues: &[String],
        max: usize,
        idle_wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Remove every message waiting in `queue` (not those held unacknowledged); returns how many.
    async fn purge(&self, queue: &str) -> Result<u64>;

    /// How many messages wait in `queue` (not those held unacknowledged), or `None` when the broker has no such
    /// queue.
    async fn queue_len(&self, queue: &str) -> Result<Option<u64>>;

    /// Acknowledge a held message: it is gone for good.
    async fn ack(&self, tag: &str) -> Result<()>;

    /// Give a held message back to its queue, marked redelivered. Returns false when the transport no longer held it
    /// (someone else restored or acknowledged it).
    async fn requeue(&self, tag: &str, to: Requeue) -> Result<bool>;

    /// Renew the leases of the messages this process still holds (transports with visibility timeouts).
    async fn renew(&self, _held: &[String]) -> Result<()> {
        Ok(())
    }

    /// Restore messages whose holder went away, once their lease is older than `visibility_timeout` seconds;
    /// returns how many. Transports that detect lost consumers themselves (AMQP) do nothing here.
    async fn recover(&self, _visibility_timeout: f64) -> Result<usize> {
        Ok(0)
    }

    /// Keep an unprocessable message: `record` (a JSON object, `docs/dead-letters.md`) under `id` in the
    /// dead-letter store `name`, then drop the oldest entries beyond `bounds`; returns how many were dropped.
    async fn keep_dead_letter(
        &self,
        name: &str,
        id: &str,
        record: &[u8],
        bounds: DeadLetterBounds,
    ) -> Result<DeadLetterDropped>;

    /// Keep `record` with the default bounds, under the record's string `id` (one is added when it has none).
    async fn dead_letter(&self, name: &str, record: &[u8]) -> Result<()> {
        let (id, record) = dead_letter_with_id(record);
        self.keep_dead_letter(name, &id, &record, DeadLetterBounds::default())
            .await
            .map(|_| ())
    }

    /// Publish to every queue bound to a fanout or topic exchange (remote-control requests, events).
    async fn broadcast(&self, exchange: &str, routing_key: &str, envelope: &Envelope)
    -> Result<()>;

    /// Bind `binding.queue` and receive what is broadcast to `binding.exchange` from now on.
    async fn subscribe(&self, binding: &Binding) -> Result<Subscription>;

    /// Declare or refresh a binding (and its expiry) without consuming from it.
    async fn bind(&self, binding: &Binding) -> Result<()>;

    /// Remove a binding and delete its queue.
    async fn unbind(&self, binding: &Binding) -> Result<()>;

    /// Send to every queue bound to a direct exchange with `routing_key` (remote-control replies); returns how many
    /// queues received it (0: nobody is listening any more).
    async fn send_direct(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> Result<usize>;

    /// Take one message from a mailbox queue without holding it (kombu's `no_ack`), waiting up to `timeout`.
    async fn pop(&self, queue: &str, timeout: Duration) -> Result<Option<Incoming>>;

    /// The caller holds `delta` more (or, negative, fewer) unacknowledged messages outside its prefetch budget
    /// (tasks waiting for their ETA). Transports whose broker limits unacknowledged messages (AMQP's `basic.qos`)
    /// raise that limit by as much, as Celery does, so held ETA tasks do not stop delivery; others do nothing.
    fn hold_beyond_prefetch(&self, _delta: i64) {}

    /// Record a connection problem seen by a caller (feeds [`Transport::reconnects`]).
    fn note_error(&self, _error: &TransportError) {}

    /// How many connection losses were seen since start.
    fn reconnects(&self) -> u64 {
        0
    }
}

/// Whose result is stored, and where its caller waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultKey<'a> {
    pub task_id: &'a str,
    /// The task message's `reply_to` property: the caller's reply queue, where backends that send results to the
    /// caller (Celery's `rpc://`) deliver them. Backends that store results by id ignore it.
    pub reply_to: Option<&'a str>,
}

impl<'a> ResultKey<'a> {
    /// The result of `task_id` for a caller that gave a reply queue (`reply_to` may be empty: none).
    pub fn with_reply_to(task_id: &'a str, reply_to: Option<&'a str>) -> ResultKey<'a> {
        ResultKey {
            task_id,
            reply_to: reply_to.filter(|r| !r.is_empty()),
        }
    }
}

impl<'a> From<&'a str> for ResultKey<'a> {
    fn from(task_id: &'a str) -> ResultKey<'a> {
        ResultKey {
            task_id,
            reply_to: None,
        }
    }
}

impl<'a> From<&'a String> for ResultKey<'a> {
    fn from(task_id: &'a String) -> ResultKey<'a> {
        ResultKey::from(task_id.as_str())
    }
}

/// Where task results are kept (Celery's result backend).
#[async_trait]
pub trait ResultBackend: Send + Sync + 'static {
    /// Store a result meta (encoded JSON) for `expires_secs` (0 = forever) and announce it to waiters. Returns
    /// false when it was not written because the task already has a SUCCESS stored (Celery never overwrites one).
    async fn store(&self, key: ResultKey<'_>, meta: &[u8], expires_secs: u64) -> Result<bool>;

    /// The stored meta of a task, if any.
    async fn get(&self, task_id: &str) -> Result<Option<Vec<u8>>>;

    /// Wait up to `timeout` for a task's meta to be stored (returns what is there at once if anything is).
    async fn wait(&self, task_id: &str, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.get(task_id).await? {
                return Ok(Some(m));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Add a chord header result (`[1, id, state, result]` JSON) to the join of group `group_id`; returns true when
    /// this caller completed the set and claimed the chord body (with `token`).
    async fn chord_join(&self, join: ChordPart<'_>) -> Result<bool>;

    /// The header results of a chord, in `group_index` order.
    async fn chord_results(&self, group_id: &str) -> Result<Vec<Vec<u8>>>;

    /// After the body was applied: drop the join and mark the chord done.
    async fn chord_done(&self, group_id: &str, token: &str, expires_secs: u64) -> Result<()>;

    /// Record a connection problem seen by a caller.
    fn note_error(&self, _error: &TransportError) {}
}

/// One header task's part of a chord join.
#[derive(Debug, Clone, Copy)]
pub struct ChordPart<'a> {
    pub group_id: &'a str,
    pub task_id: &'a str,
    /// `[1, id, state, result]` as JSON.
    pub value: &'a [u8],
    pub group_index: Option<i64>,
    pub expires_secs: u64,
    /// The claim token of whoever completes the set.
    pub token: &'a str,
}

/// A broker handle shared by many tasks.
pub type SharedTransport = Arc<dyn Transport>;
/// A result backend handle shared by many tasks.
pub type SharedBackend = Arc<dyn ResultBackend>;

/// Seconds since the epoch as a float, like Python's `time.time()`.
pub fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_read_with_their_unit_and_bad_ones_named() {
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_age("7y").unwrap_err().contains("unknown unit"));
        assert!(parse_age("d").unwrap_err().contains("not an age"));
        assert!(parse_age("").is_err());
    }

    #[test]
    fn dead_letter_records_keep_their_id_or_get_one() {
        let (id, bytes) = dead_letter_with_id(br#"{"id": "x1", "reason": "r"}"#);
        assert_eq!(id, "x1");
        assert_eq!(bytes, br#"{"id": "x1", "reason": "r"}"#);
        let (id, bytes) = dead_letter_with_id(br#"{"reason": "r"}"#);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["reason"], "r");
        let (id, bytes) = dead_letter_with_id(b"\xffnot json");
        assert!(!id.is_empty());
        assert_eq!(bytes, b"\xffnot json");
    }
}
