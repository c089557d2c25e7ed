//! The Rust client: publish tasks that Python (or Rust) workers run, and wait for their results.
//!
//! It writes the v2 envelope exactly as Python's `send_task` does (see `celery-proto`), subscribes to the result
//! channel before publishing (Celery's `ResultConsumer` order), then GETs once to catch a result stored in between,
//! and falls back to polling if the pub/sub connection drops.

use broker::{Broker, BrokerError, Subscriber};
use celery_proto::{ResultMeta, State, TaskRequest};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, mpsc};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("timed out after {0:?} waiting for task {1}")]
    Timeout(Duration, String),
    #[error("stored result of {0} is not valid JSON: {1}")]
    BadResult(String, String),
}

pub struct Client {
    broker: Broker,
    backend: Broker,
    subscriber: OnceCell<Subscriber>,
}

/// A published task whose result can be awaited.
pub struct AsyncResult {
    pub id: String,
    rx: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
}

impl Client {
    pub async fn connect(
        broker_url: &str,
        backend_url: Option<&str>,
    ) -> Result<Client, ClientError> {
        let broker = Broker::connect(broker_url).await?;
        let backend = match backend_url {
            Some(u) if u != broker_url => Broker::connect(u).await?,
            _ => broker.clone(),
        };
        Ok(Client {
            broker,
            backend,
            subscriber: OnceCell::new(),
        })
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    pub fn backend(&self) -> &Broker {
        &self.backend
    }

    async fn subscriber(&self) -> Result<&Subscriber, ClientError> {
        Ok(self
            .subscriber
            .get_or_try_init(|| Subscriber::new(&self.backend))
            .await?)
    }

    /// Publish a task; subscribe to its result first unless `ignore_result` is set.
    pub async fn send(&self, req: &TaskRequest) -> Result<AsyncResult, ClientError> {
        let rx = if req.ignore_result == Some(true) {
            None
        } else {
            let channel = celery_proto::kombu_redis::result_key(&req.id);
            Some(self.subscriber().await?.subscribe(&channel).await?)
        };
        self.broker
            .publish(&req.queue, req.priority, &req.envelope().encode())
            .await?;
        Ok(AsyncResult {
            id: req.id.clone(),
            rx,
        })
    }

    /// The stored meta of a task, or `None` while it is PENDING.
    pub async fn meta(&self, id: &str) -> Result<Option<ResultMeta>, ClientError> {
        match self.backend.get_result(id).await? {
            Some(raw) => ResultMeta::decode(&raw)
                .map(Some)
                .map_err(|e| ClientError::BadResult(id.to_string(), e.to_string())),
            None => Ok(None),
        }
    }

    /// Wait until the task reaches a ready state (SUCCESS, FAILURE, REVOKED) and return its meta.
    /// `on_update` sees every intermediate state (STARTED, RETRY, PROGRESS...).
    pub async fn wait(
        &self,
        res: &mut AsyncResult,
        timeout: Duration,
        mut on_update: impl FnMut(&ResultMeta),
    ) -> Result<ResultMeta, ClientError> {
        let deadline = Instant::now() + timeout;
        if res.rx.is_none() {
            let channel = celery_proto::kombu_redis::result_key(&res.id);
            res.rx = Some(self.subscriber().await?.subscribe(&channel).await?);
        }
        let outcome = async {
            if let Some(meta) = self.meta(&res.id).await? {
                if meta.status.is_ready() {
                    return Ok(meta);
                }
                on_update(&meta);
            }
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::Timeout(timeout, res.id.clone()));
                }
                let rx = res.rx.as_mut().expect("subscribed above");
                let msg = tokio::time::timeout(left.min(Duration::from_secs(1)), rx.recv()).await;
                let meta = match msg {
                    Ok(Some(raw)) => ResultMeta::decode(&raw)
                        .map_err(|e| ClientError::BadResult(res.id.clone(), e.to_string()))?,
                    // Pub/sub idle or dropped: poll the key so nothing is missed.
                    _ => match self.meta(&res.id).await? {
                        Some(m) => m,
                        None => continue,
                    },
                };
                if meta.status.is_ready() {
                    return Ok(meta);
                }
                on_update(&meta);
            }
        }
        .await;
        if let Ok(s) = self.subscriber().await {
            s.unsubscribe(&celery_proto::kombu_redis::result_key(&res.id))
                .await;
        }
        outcome
    }

    /// Publish and wait in one call.
    pub async fn call(
        &self,
        req: &TaskRequest,
        timeout: Duration,
    ) -> Result<ResultMeta, ClientError> {
        let mut res = self.send(req).await?;
        self.wait(&mut res, timeout, |_| {}).await
    }
}

impl AsyncResult {
    /// A handle on an already-published task.
    pub fn from_id(id: &str) -> AsyncResult {
        AsyncResult {
            id: id.to_string(),
            rx: None,
        }
    }
}

/// True when a meta means the task finished without error.
pub fn succeeded(meta: &ResultMeta) -> bool {
    meta.status == State::Success
}
