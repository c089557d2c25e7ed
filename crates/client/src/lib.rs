//! The Rust client: publish tasks that Python (or Rust) workers run, and wait for their results, on Redis or
//! RabbitMQ.
//!
//! It writes the v2 envelope exactly as Python's `send_task` does (see `celery-proto`) and publishes it through the
//! `transport` seam chosen by the broker URL ([`connect::transport`]). Results come from where Celery would read them:
//! - a Redis result backend: subscribe to the result channel before publishing (Celery's `ResultConsumer` order),
//!   GET once to catch a result stored in between, and poll if the pub/sub connection drops;
//! - `rpc://` (with an AMQP broker): the client's own reply queue, declared before the first send and named in every
//!   task's `reply_to`; results are matched to tasks by `correlation_id` (`broker_amqp::RpcBackend`).
//!
//! With [`Client::with_tracing`], every publish gets an OpenTelemetry producer span and carries its W3C context in
//! the task's headers ([`otel`]).

pub mod connect;
pub mod otel;

use broker::{Broker, Subscriber};
use broker_amqp::RpcBackend;
use celery_proto::{ResultMeta, State, TaskRequest};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, mpsc};
use transport::{ResultBackend as _, SharedTransport, TransportError};

pub use broker_amqp::AmqpOptions;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("timed out after {0:?} waiting for task {1}")]
    Timeout(Duration, String),
    #[error("stored result of {0} is not valid JSON: {1}")]
    BadResult(String, String),
    #[error("{0}")]
    Config(String),
}

impl From<broker::BrokerError> for ClientError {
    fn from(e: broker::BrokerError) -> ClientError {
        ClientError::Transport(e.into())
    }
}

/// An encoded envelope and its priority, as [`Broker::publish_many`] takes them.
type Encoded = (u8, Vec<u8>);

/// Where the client reads results.
enum Results {
    Redis {
        backend: Broker,
        subscriber: OnceCell<Subscriber>,
    },
    Rpc(RpcBackend),
    /// No result backend (an AMQP broker and none given): tasks can be sent, results cannot be read, as with
    /// Celery's `DisabledBackend`.
    Disabled,
}

fn no_backend() -> ClientError {
    ClientError::Config(
        "no result backend configured: set one (--result-backend / CELERY_RESULT_BACKEND: redis://... or rpc://)"
            .to_string(),
    )
}

pub struct Client {
    transport: SharedTransport,
    /// The broker itself when it is Redis, for batched publishes ([`Client::publish_many`]).
    redis: Option<Broker>,
    results: Results,
    /// Make an `apply_async/<task>` span per publish and put its `traceparent` in the headers ([`otel`]).
    tracing: bool,
}

/// A published task whose result can be awaited.
pub struct AsyncResult {
    pub id: String,
    rx: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
}

impl Client {
    /// Connect to a broker (`redis://`, `rediss://`, `redis+sentinel://`, `amqp://`, `amqps://`) and a result backend
    /// (`redis://...` or `rpc://`; default: the broker when it is Redis, none when it is RabbitMQ).
    pub async fn connect(
        broker_url: &str,
        backend_url: Option<&str>,
    ) -> Result<Client, ClientError> {
        Client::connect_with(broker_url, backend_url, AmqpOptions::default()).await
    }

    /// [`Client::connect`] with the AMQP queue options (Celery's `task_queue_max_priority` and
    /// `task_default_queue_type`), which must match what the workers declare.
    pub async fn connect_with(
        broker_url: &str,
        backend_url: Option<&str>,
        amqp: AmqpOptions,
    ) -> Result<Client, ClientError> {
        let connection = connect::broker(broker_url, amqp).await?;
        let transport = connection.transport();
        let (amqp_transport, redis) = match connection {
            connect::BrokerConnection::Amqp(t) => (Some(t), None),
            connect::BrokerConnection::Redis(b) => (None, Some(b)),
        };
        let backend_url = match backend_url {
            Some(u) => u,
            None if amqp_transport.is_some() => {
                return Ok(Client {
                    transport,
                    redis,
                    results: Results::Disabled,
                    tracing: false,
                });
            }
            None => broker_url,
        };
        let results = if connect::is_rpc_url(backend_url) {
            let Some(t) = amqp_transport else {
                return Err(ClientError::Config(
                    "the rpc:// result backend needs an AMQP broker (amqp://...)".to_string(),
                ));
            };
            Results::Rpc(RpcBackend::new(t, &uuid::Uuid::new_v4().to_string()))
        } else if broker_amqp::is_amqp_url(backend_url) {
            return Err(ClientError::Config(
                "an AMQP broker is not a result backend: use rpc:// or redis://... as the result backend"
                    .to_string(),
            ));
        } else {
            Results::Redis {
                backend: Broker::connect(backend_url).await?,
                subscriber: OnceCell::new(),
            }
        };
        Ok(Client {
            transport,
            redis,
            results,
            tracing: false,
        })
    }

    /// Trace every publish (OpenTelemetry, through the global tracer provider and propagator the binary installed;
    /// see `docs/tracing.md`). Off by default: no spans, no trace headers.
    pub fn with_tracing(mut self, on: bool) -> Client {
        self.tracing = on;
        self
    }

    /// The broker, behind the transport seam.
    pub fn transport(&self) -> &SharedTransport {
        &self.transport
    }

    /// The raw result meta of a task as the backend holds it (Redis: the stored value; `rpc://`: the last meta
    /// this client received for it).
    pub async fn raw_meta(&self, id: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(match &self.results {
            Results::Redis { backend, .. } => backend.get_result(id).await?,
            Results::Rpc(rpc) => rpc.get(id).await?,
            Results::Disabled => return Err(no_backend()),
        })
    }

    async fn subscriber(&self) -> Result<Option<&Subscriber>, ClientError> {
        match &self.results {
            Results::Redis {
                backend,
                subscriber,
            } => Ok(Some(
                subscriber
                    .get_or_try_init(|| Subscriber::new(backend))
                    .await?,
            )),
            Results::Rpc(_) | Results::Disabled => Ok(None),
        }
    }

    /// Publish a task without waiting for anything (its result, if any, goes where the backend says).
    pub async fn publish(&self, req: &TaskRequest) -> Result<(), ClientError> {
        // The reply queue is this client's, whatever the request says.
        let reply_to = match &self.results {
            Results::Rpc(rpc) => Some(rpc.reply_queue()),
            Results::Redis { .. } | Results::Disabled => None,
        };
        if reply_to.is_none() && !self.tracing {
            self.transport.publish(&req.queue, &req.envelope()).await?;
            return Ok(());
        }
        let mut req = req.clone();
        if let Some(r) = reply_to {
            req.reply_to = r.to_string();
        }
        let span = self.tracing.then(|| otel::start_publish(&mut req));
        let published = self.transport.publish(&req.queue, &req.envelope()).await;
        if let Some(span) = span {
            otel::end_publish(span, published.as_ref().err().map(ToString::to_string));
        }
        published?;
        Ok(())
    }

    /// Publish several tasks without waiting for anything, in order. On Redis, tasks for the same queue go out
    /// together (one LPUSH per queue and priority, in one round trip), byte for byte what [`Client::publish`]
    /// writes for each; with tracing or an `rpc://` backend, or on RabbitMQ, they are published one by one.
    pub async fn publish_many(&self, reqs: &[TaskRequest]) -> Result<(), ClientError> {
        let plain =
            matches!(self.results, Results::Redis { .. } | Results::Disabled) && !self.tracing;
        let Some(redis) = self.redis.as_ref().filter(|_| plain) else {
            for req in reqs {
                self.publish(req).await?;
            }
            return Ok(());
        };
        let mut by_queue: Vec<(&str, Vec<Encoded>)> = Vec::new();
        for req in reqs {
            let envelope = req.envelope();
            let item = (envelope.priority, envelope.encode());
            match by_queue.iter_mut().find(|(q, _)| *q == req.queue) {
                Some((_, items)) => items.push(item),
                None => by_queue.push((&req.queue, vec![item])),
            }
        }
        for (queue, items) in by_queue {
            redis.publish_many(queue, &items).await?;
        }
        Ok(())
    }

    /// Publish a task; get ready for its result first unless `ignore_result` is set.
    pub async fn send(&self, req: &TaskRequest) -> Result<AsyncResult, ClientError> {
        let wants_result = req.ignore_result != Some(true);
        let rx = match (&self.results, wants_result) {
            (_, false) => None,
            (Results::Redis { .. }, true) => {
                let channel = celery_proto::kombu_redis::result_key(&req.id);
                let sub = self.subscriber().await?.expect("Redis results");
                Some(sub.subscribe(&channel).await?)
            }
            (Results::Rpc(rpc), true) => {
                rpc.listen().await?;
                None
            }
            (Results::Disabled, true) => return Err(no_backend()),
        };
        self.publish(req).await?;
        Ok(AsyncResult {
            id: req.id.clone(),
            rx,
        })
    }

    /// The stored meta of a task, or `None` while it is PENDING.
    pub async fn meta(&self, id: &str) -> Result<Option<ResultMeta>, ClientError> {
        match self.raw_meta(id).await? {
            Some(raw) => decode(id, &raw).map(Some),
            None => Ok(None),
        }
    }

    /// Wait until the task reaches a ready state (SUCCESS, FAILURE, REVOKED) and return its meta.
    /// `on_update` sees every intermediate state (STARTED, RETRY, PROGRESS...).
    pub async fn wait(
        &self,
        res: &mut AsyncResult,
        timeout: Duration,
        on_update: impl FnMut(&ResultMeta),
    ) -> Result<ResultMeta, ClientError> {
        match &self.results {
            Results::Redis { .. } => self.wait_redis(res, timeout, on_update).await,
            Results::Rpc(rpc) => {
                let outcome = wait_rpc(rpc, &res.id, timeout, on_update).await;
                rpc.forget(&res.id);
                outcome
            }
            Results::Disabled => Err(no_backend()),
        }
    }

    async fn wait_redis(
        &self,
        res: &mut AsyncResult,
        timeout: Duration,
        mut on_update: impl FnMut(&ResultMeta),
    ) -> Result<ResultMeta, ClientError> {
        let deadline = Instant::now() + timeout;
        let subscriber = self.subscriber().await?.expect("Redis results");
        let channel = celery_proto::kombu_redis::result_key(&res.id);
        if res.rx.is_none() {
            res.rx = Some(subscriber.subscribe(&channel).await?);
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
                    Ok(Some(raw)) => decode(&res.id, &raw)?,
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
        subscriber.unsubscribe(&channel).await;
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

/// Every meta the reply queue brings for `id`, in order, until a ready one.
async fn wait_rpc(
    rpc: &RpcBackend,
    id: &str,
    timeout: Duration,
    mut on_update: impl FnMut(&ResultMeta),
) -> Result<ResultMeta, ClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(raw) = rpc.next(id, left).await? else {
            return Err(ClientError::Timeout(timeout, id.to_string()));
        };
        let meta = decode(id, &raw)?;
        if meta.status.is_ready() {
            return Ok(meta);
        }
        on_update(&meta);
    }
}

fn decode(id: &str, raw: &[u8]) -> Result<ResultMeta, ClientError> {
    ResultMeta::decode(raw).map_err(|e| ClientError::BadResult(id.to_string(), e.to_string()))
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
