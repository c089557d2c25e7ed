//! Celery's `rpc://` result backend on RabbitMQ: results are not stored anywhere, they are sent to the caller.
//!
//! - A worker publishes each result meta (STARTED, PROGRESS, RETRY, then the ready state) to the default exchange
//!   with the task message's `reply_to` as routing key and the task id as `correlation_id`
//!   ([`kombu_amqp::rpc_result`]). A task message without `reply_to` has nobody to send to: storing fails with a
//!   clear error, as Celery's `RPC backend missing task request` does.
//! - A client owns one reply queue named after itself ([`RpcBackend::reply_queue`], the `reply_to` of everything it
//!   sends), declared as Celery declares it ([`kombu_amqp::rpc_reply_queue`]) before the first send, and read by one
//!   consumer that sorts the metas by `correlation_id`. Results of other tasks that arrive while one is awaited are
//!   kept for their own caller, as Celery's `ResultConsumer` keeps them.
//! - As in Celery, only the client that sent a task can read its result, and chords are not supported.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use celery_proto::kombu_amqp;
use serde_json::Value;
use tokio::sync::Notify;
use transport::{ChordPart, ResultBackend, ResultKey, TransportError};

use crate::{AmqpTransport, NAME};

/// The `rpc://` result backend over an [`AmqpTransport`]. Cheap to clone; clones share the reply queue.
#[derive(Clone)]
pub struct RpcBackend {
    inner: Arc<Inner>,
}

struct Inner {
    transport: AmqpTransport,
    queue: String,
    results: Mutex<Results>,
    arrived: Notify,
    /// The reader of the reply queue, while it runs.
    reader: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Tasks whose replies are kept at most: beyond, the oldest task's are dropped (a client that sends with
/// `rpc://` and never waits must not grow without end).
const MAX_KEPT: usize = 10_000;

#[derive(Default)]
struct Results {
    /// Metas received and not yet taken by [`RpcBackend::next`], per task, in arrival order.
    unread: HashMap<String, VecDeque<Vec<u8>>>,
    /// The last meta received per task (what [`ResultBackend::get`] answers).
    latest: HashMap<String, Vec<u8>>,
    /// Task ids in the order their first reply came, to drop the oldest beyond [`MAX_KEPT`].
    order: VecDeque<String>,
}

impl Results {
    fn record(&mut self, id: String, raw: Vec<u8>, max: usize) {
        if !self.latest.contains_key(&id) {
            self.order.push_back(id.clone());
        }
        self.unread
            .entry(id.clone())
            .or_default()
            .push_back(raw.clone());
        self.latest.insert(id, raw);
        while self.latest.len() > max {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.unread.remove(&old);
            self.latest.remove(&old);
        }
    }

    fn forget(&mut self, id: &str) {
        self.unread.remove(id);
        if self.latest.remove(id).is_some() {
            self.order.retain(|o| o != id);
        }
    }
}

impl RpcBackend {
    /// A backend on `transport` whose reply queue is `reply_queue` (a client's unique name; a worker that only sends
    /// results never declares it).
    pub fn new(transport: AmqpTransport, reply_queue: &str) -> RpcBackend {
        RpcBackend {
            inner: Arc::new(Inner {
                transport,
                queue: reply_queue.to_string(),
                results: Mutex::new(Results::default()),
                arrived: Notify::new(),
                reader: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The reply queue: the `reply_to` to put on every task sent through this backend.
    pub fn reply_queue(&self) -> &str {
        &self.inner.queue
    }

    /// Declare the reply queue and read it, unless that is already happening. Call before sending a task, so its
    /// result has somewhere to go.
    pub async fn listen(&self) -> Result<(), TransportError> {
        let mut reader = self.inner.reader.lock().await;
        if reader.as_ref().is_some_and(|r| !r.is_finished()) {
            return Ok(());
        }
        let decl = kombu_amqp::rpc_reply_queue(&self.inner.queue);
        let mut sub = self.inner.transport.listen(&decl).await?;
        let inner = Arc::downgrade(&self.inner);
        *reader = Some(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let Some(inner) = inner.upgrade() else { break };
                let id = m.message.as_ref().ok().and_then(|msg| {
                    msg.properties
                        .get("correlation_id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
                let Some(id) = id else {
                    tracing::warn!(queue = %inner.queue, "rpc reply without correlation_id ignored");
                    continue;
                };
                inner
                    .results
                    .lock()
                    .expect("results")
                    .record(id, m.raw, MAX_KEPT);
                inner.arrived.notify_waiters();
            }
            if let Some(inner) = inner.upgrade() {
                // Connection lost: wake the waiters; the next call listens again.
                inner.arrived.notify_waiters();
            }
        }));
        Ok(())
    }

    /// The next meta received for `task_id` that was not taken yet, waiting up to `timeout` for one.
    pub async fn next(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.listen().await?;
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(m) = self.take(task_id) {
                return Ok(Some(m));
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(self.take(task_id));
            }
        }
    }

    fn take(&self, task_id: &str) -> Option<Vec<u8>> {
        let mut r = self.inner.results.lock().expect("results");
        let q = r.unread.get_mut(task_id)?;
        let m = q.pop_front();
        if q.is_empty() {
            r.unread.remove(task_id);
        }
        m
    }

    /// Drop what was kept for `task_id` (its caller has its result).
    pub fn forget(&self, task_id: &str) {
        self.inner.results.lock().expect("results").forget(task_id);
    }
}

fn no_chords() -> TransportError {
    TransportError::Failed {
        transport: NAME,
        message: "the rpc:// result backend does not support chords (as in Celery): use a Redis result backend"
            .to_string(),
    }
}

#[async_trait]
impl ResultBackend for RpcBackend {
    async fn store(
        &self,
        key: ResultKey<'_>,
        meta: &[u8],
        _expires_secs: u64,
    ) -> transport::Result<bool> {
        let Some(reply_to) = key.reply_to else {
            return Err(TransportError::Failed {
                transport: NAME,
                message: format!(
                    "rpc:// has nowhere to send the result of {}: the task message has no reply_to",
                    key.task_id
                ),
            });
        };
        let p = kombu_amqp::rpc_result(key.task_id, reply_to, meta);
        self.inner.transport.publish_message(&p).await?;
        Ok(true)
    }

    async fn get(&self, task_id: &str) -> transport::Result<Option<Vec<u8>>> {
        self.listen().await?;
        Ok(self
            .inner
            .results
            .lock()
            .expect("results")
            .latest
            .get(task_id)
            .cloned())
    }

    async fn wait(&self, task_id: &str, timeout: Duration) -> transport::Result<Option<Vec<u8>>> {
        if let Some(m) = self.get(task_id).await? {
            return Ok(Some(m));
        }
        self.next(task_id, timeout).await
    }

    async fn chord_join(&self, _join: ChordPart<'_>) -> transport::Result<bool> {
        Err(no_chords())
    }

    async fn chord_results(&self, _group_id: &str) -> transport::Result<Vec<Vec<u8>>> {
        Err(no_chords())
    }

    async fn chord_done(
        &self,
        _group_id: &str,
        _token: &str,
        _expires_secs: u64,
    ) -> transport::Result<()> {
        Err(no_chords())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_without_reply_to_is_refused_with_the_reason() {
        // Refused before anything is sent: the transport never connects.
        let t = AmqpTransport::new("amqp://guest:guest@127.0.0.1:1//", Default::default()).unwrap();
        let rpc = RpcBackend::new(t, "");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(rpc.store("t1".into(), b"{}", 0)).unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("no reply_to"), "{err}");
        assert!(err.to_string().contains("t1"), "{err}");
    }

    #[test]
    fn replies_are_kept_in_order_per_task_and_bounded() {
        let mut r = Results::default();
        r.record("a".into(), b"STARTED".to_vec(), 2);
        r.record("a".into(), b"SUCCESS".to_vec(), 2);
        r.record("b".into(), b"SUCCESS".to_vec(), 2);
        assert_eq!(r.latest["a"], b"SUCCESS");
        assert_eq!(r.unread["a"].len(), 2);
        // A third task drops the oldest one's replies.
        r.record("c".into(), b"SUCCESS".to_vec(), 2);
        assert!(!r.latest.contains_key("a") && !r.unread.contains_key("a"));
        assert_eq!(r.order, ["b", "c"]);
        r.forget("b");
        assert_eq!(r.order, ["c"]);
        assert!(!r.latest.contains_key("b"));
    }
}
