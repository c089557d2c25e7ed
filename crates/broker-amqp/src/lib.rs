//! The AMQP 0-9-1 transport (RabbitMQ) behind the `transport` seam, on kombu's conventions
//! (`celery_proto::kombu_amqp`), over lapin. The only crate that depends on lapin.
//!
//! - One connection with three long-lived channels: *publish* (publisher confirms: every publish waits for the
//!   broker's ack), *consume* (`basic.qos` prefetch, the task-queue consumers, acks and rejects), *misc*
//!   (declarations); plus a channel per subscription (pidbox, events; `no_ack` consumers) and a short-lived one per
//!   mailbox pop or unbind (their errors close only that channel).
//! - Consuming: the first `consume` naming a queue declares it and starts `basic.consume` (manual acks) on it;
//!   deliveries go into a local buffer ([`buffer`]) from which `consume(queues, max, idle_wait)` takes, in the
//!   caller's queue order. A queue the caller stops naming has its consumer cancelled and its buffered messages
//!   rejected back to RabbitMQ.
//! - Tags: `"<generation>.<delivery tag>"`, where the generation numbers connections of this process. A tag of an
//!   earlier connection can no longer be settled (RabbitMQ requeued the message when the channel died): `ack` fails
//!   with [`TransportError::Failed`] (not retried), `requeue` returns `Ok(false)`. A tag is settled at most once
//!   (acking an unknown tag would close the channel).
//! - `requeue` is `basic.reject(requeue=true)` for both [`Requeue::Back`] and [`Requeue::Front`]: RabbitMQ puts the
//!   message back at its original position and marks it redelivered; a consumer gets it after what it already
//!   prefetched. `recover` and `renew` do nothing: RabbitMQ redelivers the unacknowledged messages of a lost
//!   connection by itself.
//! - Reconnection: any connection or channel failure marks the connection dead and returns
//!   [`TransportError::Unavailable`] (so the caller's backoff applies); the next call connects again, declares again
//!   what it uses (declarations are cached per connection) and restarts consumers; subscriptions end (`next()` gives
//!   `None`) and are made again by their owners.
//! - Dead letters: a durable queue named after the store, the JSON record published to it persistently.
//! - Logs: [`QuietNotFound`] keeps lapin's error line for an expected 404 (a missing queue's depth) out of them.

mod buffer;
mod convert;
mod logs;
mod rpc;
mod url;

pub use logs::QuietNotFound;
pub use rpc::RpcBackend;
pub use url::is_amqp_url;

use async_trait::async_trait;
use celery_proto::Envelope;
use celery_proto::kombu_amqp::{
    self, AmqpProperties, DeliveryInfo, ExchangeDecl, ExchangeKind, QueueDecl, QueueType,
    TaskQueueOptions,
};
use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::{FieldTable as LapinTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use transport::{Binding, Delivery, Incoming, Requeue, Subscription, Transport, TransportError};

use buffer::{Buffer, Pending};

pub(crate) const NAME: &str = "amqp";

/// How long connecting may take before the broker counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a mailbox pop polls with `basic.get` while waiting.
const POP_POLL: Duration = Duration::from_millis(25);

/// Settings that shape what this transport declares and how much RabbitMQ pushes ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmqpOptions {
    /// `basic.qos` prefetch count of the consume channel (Celery: concurrency × prefetch multiplier; 0 = no limit).
    /// The runtime never holds more than its own prefetch budget, so this bounds the local buffer plus held messages.
    pub prefetch: u16,
    /// Celery's `task_queue_max_priority` and `task_default_queue_type`: they must match what other Celery
    /// processes declare for the same queues.
    pub queues: TaskQueueOptions,
}

impl Default for AmqpOptions {
    fn default() -> AmqpOptions {
        AmqpOptions {
            prefetch: 8,
            queues: TaskQueueOptions::default(),
        }
    }
}

/// One connection and what was set up on it.
struct Live {
    id: u64,
    conn: Connection,
    publish: Channel,
    consume: Channel,
    misc: tokio::sync::Mutex<Channel>,
    broken: AtomicBool,
    /// Names declared on this connection (`q:<queue>`, `x:<exchange>`), so each is declared once per connection.
    declared: Mutex<HashSet<String>>,
    /// Kinds of the exchanges declared here (an exchange used once as a topic stays one).
    kinds: Mutex<HashMap<String, ExchangeKind>>,
    /// Task-queue consumers: queue → consumer tag.
    consumers: tokio::sync::Mutex<HashMap<String, ShortString>>,
    /// Delivery tags taken by `consume` and not settled yet.
    held: Mutex<HashSet<u64>>,
    /// The `basic.qos` prefetch count in force on the consume channel.
    qos: AtomicU64,
}

impl Live {
    fn ok(&self) -> bool {
        !self.broken.load(Ordering::SeqCst)
            && self.conn.status().connected()
            && self.publish.status().connected()
            && self.consume.status().connected()
    }

    fn tag(&self, dtag: u64) -> String {
        format!("{}.{dtag}", self.id)
    }
}

struct Inner {
    uri: lapin::uri::AMQPUri,
    /// For `amqps://`: the TLS files to read at each connection.
    tls: Option<url::TlsFiles>,
    url: String,
    opts: AmqpOptions,
    slot: tokio::sync::Mutex<Option<Arc<Live>>>,
    current: Mutex<Option<Arc<Live>>>,
    buffer: Mutex<Buffer>,
    arrived: Notify,
    generations: AtomicU64,
    reconnects: AtomicU64,
    /// Messages the caller holds outside its prefetch budget (ETA tasks), added to the prefetch count.
    beyond: AtomicI64,
}

/// The AMQP transport. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct AmqpTransport {
    inner: Arc<Inner>,
}

fn unavailable(message: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable {
        transport: NAME,
        message: message.to_string(),
    }
}

fn failed(message: impl std::fmt::Display) -> TransportError {
    TransportError::Failed {
        transport: NAME,
        message: message.to_string(),
    }
}

/// The AMQP reply code of a channel or connection error (404 NOT_FOUND, 406 PRECONDITION_FAILED, ...).
fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

fn parse_tag(tag: &str) -> Option<(u64, u64)> {
    let (g, d) = tag.split_once('.')?;
    Some((g.parse().ok()?, d.parse().ok()?))
}

impl AmqpTransport {
    /// A transport for `url` (`amqp://user:pass@host:port/vhost`, kombu's forms) that connects on first use.
    pub fn new(url: &str, opts: AmqpOptions) -> Result<AmqpTransport, TransportError> {
        let (uri, tls) = url::parse(url)?;
        Ok(AmqpTransport {
            inner: Arc::new(Inner {
                uri,
                tls,
                url: transport::redact_url(url),
                opts,
                slot: tokio::sync::Mutex::new(None),
                current: Mutex::new(None),
                buffer: Mutex::new(Buffer::default()),
                arrived: Notify::new(),
                generations: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                beyond: AtomicI64::new(0),
            }),
        })
    }

    /// Connect now (a refused or timed-out connection is [`TransportError::Unavailable`]).
    pub async fn connect(url: &str, opts: AmqpOptions) -> Result<AmqpTransport, TransportError> {
        let t = AmqpTransport::new(url, opts)?;
        t.live().await?;
        Ok(t)
    }

    /// The URL with its password hidden.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    fn by_priority(&self) -> bool {
        self.inner.opts.queues.max_priority.is_some()
    }

    /// The current connection, connecting (again) when there is none or it failed.
    async fn live(&self) -> Result<Arc<Live>, TransportError> {
        if let Some(l) = self.inner.current.lock().expect("current").clone()
            && l.ok()
        {
            return Ok(l);
        }
        let mut slot = self.inner.slot.lock().await;
        if let Some(l) = slot.as_ref()
            && l.ok()
        {
            return Ok(l.clone());
        }
        if let Some(old) = slot.take() {
            old.broken.store(true, Ordering::SeqCst);
            self.inner.reconnects.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(url = %self.inner.url, "AMQP connection lost; connecting again");
            tokio::spawn(async move {
                if old.conn.status().connected() {
                    let _ = old.conn.close(200, "reconnecting".into()).await;
                }
            });
            *self.inner.current.lock().expect("current") = None;
        }
        let live = Arc::new(self.open().await?);
        self.inner.buffer.lock().expect("buffer").keep_only(live.id);
        *slot = Some(live.clone());
        *self.inner.current.lock().expect("current") = Some(live.clone());
        // Wake consumers waiting on the old connection's buffer.
        self.inner.arrived.notify_waiters();
        Ok(live)
    }

    async fn open(&self) -> Result<Live, TransportError> {
        let props = ConnectionProperties::default().with_connection_name("celeriac".into());
        let tls = match &self.inner.tls {
            Some(files) => files.load()?,
            None => lapin::tcp::OwnedTLSConfig::default(),
        };
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| failed(format!("no async runtime for lapin: {e}")))?;
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            lapin::Connect::connect_with_config(self.inner.uri.clone(), props, tls, runtime),
        )
        .await
        .map_err(|_| unavailable(format!("connecting to {} timed out", self.inner.url)))?
        .map_err(|e| unavailable(format!("connecting to {}: {e}", self.inner.url)))?;
        let setup = async {
            let publish = conn.create_channel().await?;
            publish
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let consume = conn.create_channel().await?;
            let prefetch = self.wanted_prefetch();
            if prefetch > 0 {
                consume
                    .basic_qos(
                        prefetch,
                        BasicQosOptions {
                            global: self.global_qos(),
                        },
                    )
                    .await?;
            }
            let misc = conn.create_channel().await?;
            Ok::<_, lapin::Error>((publish, consume, misc))
        };
        let (publish, consume, misc) = setup
            .await
            .map_err(|e| unavailable(format!("opening channels: {e}")))?;
        let id = self.inner.generations.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::info!(url = %self.inner.url, generation = id, "connected to RabbitMQ");
        Ok(Live {
            id,
            conn,
            publish,
            consume,
            misc: tokio::sync::Mutex::new(misc),
            broken: AtomicBool::new(false),
            declared: Mutex::new(HashSet::new()),
            kinds: Mutex::new(HashMap::new()),
            consumers: tokio::sync::Mutex::new(HashMap::new()),
            held: Mutex::new(HashSet::new()),
            qos: AtomicU64::new(u64::from(self.wanted_prefetch())),
        })
    }

    /// Classic queues: one budget for the channel (Celery's global QoS); quorum queues refuse a global QoS, so
    /// Celery (and we) set it per consumer there.
    fn global_qos(&self) -> bool {
        self.inner.opts.queues.queue_type == QueueType::Classic
    }

    /// The prefetch count to ask for: the configured one plus the messages held beyond it (0 stays unlimited).
    fn wanted_prefetch(&self) -> u16 {
        let base = i64::from(self.inner.opts.prefetch);
        if base == 0 {
            return 0;
        }
        let extra = self.inner.beyond.load(Ordering::SeqCst).max(0);
        (base + extra).min(i64::from(u16::MAX)) as u16
    }

    /// Apply a changed prefetch count (Celery's `qos.update()`, run from the consume loop).
    async fn update_qos(&self, live: &Live) -> Result<(), TransportError> {
        let want = self.wanted_prefetch();
        if want == 0 || live.qos.load(Ordering::SeqCst) == u64::from(want) {
            return Ok(());
        }
        live.consume
            .basic_qos(
                want,
                BasicQosOptions {
                    global: self.global_qos(),
                },
            )
            .await
            .map_err(|e| self.error(live, "basic.qos", e))?;
        live.qos.store(u64::from(want), Ordering::SeqCst);
        tracing::debug!(prefetch = want, "prefetch count changed");
        Ok(())
    }

    /// Map a lapin error: a lost connection or a failed long-lived channel makes the connection dead (the next call
    /// connects again) and is `Unavailable`; an error the broker gave to one request is `Failed`.
    fn error(&self, live: &Live, what: &str, e: lapin::Error) -> TransportError {
        let soft = e.is_amqp_soft_error();
        if !soft || !live.conn.status().connected() {
            live.broken.store(true, Ordering::SeqCst);
            self.inner.arrived.notify_waiters();
            return unavailable(format!("{what}: {e}"));
        }
        if !live.publish.status().connected() || !live.consume.status().connected() {
            live.broken.store(true, Ordering::SeqCst);
        }
        failed(format!("{what}: {e}"))
    }

    /// The misc channel, opened again if an error closed it.
    async fn misc(&self, live: &Live) -> Result<Channel, TransportError> {
        let mut ch = live.misc.lock().await;
        if !ch.status().connected() {
            *ch = live
                .conn
                .create_channel()
                .await
                .map_err(|e| self.error(live, "opening a channel", e))?;
        }
        Ok(ch.clone())
    }

    async fn temp_channel(&self, live: &Live) -> Result<Channel, TransportError> {
        live.conn
            .create_channel()
            .await
            .map_err(|e| self.error(live, "opening a channel", e))
    }

    fn first_time(live: &Live, key: String) -> bool {
        !live.declared.lock().expect("declared").contains(&key)
    }

    fn remember(live: &Live, key: String) {
        live.declared.lock().expect("declared").insert(key);
    }

    async fn declare_exchange_on(
        &self,
        live: &Live,
        ch: &Channel,
        decl: &ExchangeDecl,
    ) -> Result<(), TransportError> {
        ch.exchange_declare(
            decl.name.as_str().into(),
            convert::exchange_kind(decl.kind),
            ExchangeDeclareOptions {
                durable: decl.durable,
                ..ExchangeDeclareOptions::default()
            },
            LapinTable::default(),
        )
        .await
        .map_err(|e| self.error(live, &format!("declaring exchange {}", decl.name), e))?;
        live.kinds
            .lock()
            .expect("kinds")
            .insert(decl.name.clone(), decl.kind);
        Ok(())
    }

    /// Declare an exchange once per connection (the default exchange needs none). `otherwise` is its kind unless
    /// Celery names it or it was declared here before.
    async fn ensure_exchange(
        &self,
        live: &Live,
        name: &str,
        otherwise: ExchangeKind,
    ) -> Result<(), TransportError> {
        if name.is_empty() || !Self::first_time(live, format!("x:{name}")) {
            return Ok(());
        }
        let known = live.kinds.lock().expect("kinds").get(name).copied();
        let decl = kombu_amqp::exchange(name, known.unwrap_or(otherwise));
        let ch = self.misc(live).await?;
        self.declare_exchange_on(live, &ch, &decl).await?;
        Self::remember(live, format!("x:{name}"));
        Ok(())
    }

    async fn declare_queue_on(
        &self,
        live: &Live,
        ch: &Channel,
        q: &QueueDecl,
    ) -> Result<(), TransportError> {
        declare_queue(ch, q)
            .await
            .map_err(|e| self.error(live, &format!("declaring queue {}", q.name), e))
    }

    /// A pidbox, event or reply queue as kombu declares it (non-durable, auto-delete, with its expiry) and its
    /// binding, on `ch`.
    async fn declare_bound_queue(
        &self,
        live: &Live,
        ch: &Channel,
        binding: &Binding,
    ) -> Result<(), TransportError> {
        self.declare_queue_on(
            live,
            ch,
            &kombu_amqp::bound_queue(&binding.queue, binding.expires),
        )
        .await?;
        ch.queue_bind(
            binding.queue.as_str().into(),
            binding.exchange.as_str().into(),
            binding.routing_key.as_str().into(),
            QueueBindOptions::default(),
            LapinTable::default(),
        )
        .await
        .map_err(|e| self.error(live, &format!("binding {}", binding.queue), e))
    }

    /// A task queue as Celery declares it (exchange, queue, binding), once per connection.
    async fn ensure_task_queue(&self, live: &Live, queue: &str) -> Result<(), TransportError> {
        let key = format!("q:{queue}");
        if !Self::first_time(live, key.clone()) {
            return Ok(());
        }
        let (ex, q, bind) = kombu_amqp::task_queue(queue, &self.inner.opts.queues);
        let ch = self.misc(live).await?;
        self.declare_exchange_on(live, &ch, &ex).await?;
        if let Err(e) = declare_queue(&ch, &q).await {
            // 406 PRECONDITION_FAILED: the queue exists with other arguments (another x-max-priority or queue
            // type, declared by workers configured differently). Use it as it is rather than fail every publish.
            if reply_code(&e) != Some(406) {
                return Err(self.error(live, &format!("declaring queue {queue}"), e));
            }
            tracing::warn!(queue, error = %e, "task queue exists with other arguments; using it as declared");
            let ch = self.misc(live).await?;
            ch.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                LapinTable::default(),
            )
            .await
            .map_err(|e| self.error(live, &format!("declaring queue {queue}"), e))?;
            Self::remember(live, key);
            return Ok(());
        }
        let ch = self.misc(live).await?;
        self.bind_queue(live, &ch, &bind).await?;
        if self.inner.opts.queues.native_delayed_delivery()
            && kombu_amqp::worker_direct_node(queue).is_none()
        {
            // Celery 5.5+: delayed messages come back from the delay levels to this queue.
            self.ensure_delayed_topology(live, &ch).await?;
            let (back, own) = kombu_amqp::delayed_return_bindings(queue);
            self.bind_exchange(live, &ch, &back).await?;
            self.bind_queue(live, &ch, &own).await?;
        }
        Self::remember(live, key);
        Ok(())
    }

    async fn bind_queue(
        &self,
        live: &Live,
        ch: &Channel,
        b: &kombu_amqp::BindDecl,
    ) -> Result<(), TransportError> {
        ch.queue_bind(
            b.queue.as_str().into(),
            b.exchange.as_str().into(),
            b.routing_key.as_str().into(),
            QueueBindOptions::default(),
            LapinTable::default(),
        )
        .await
        .map_err(|e| self.error(live, &format!("binding queue {}", b.queue), e))
    }

    async fn bind_exchange(
        &self,
        live: &Live,
        ch: &Channel,
        b: &kombu_amqp::ExchangeBindDecl,
    ) -> Result<(), TransportError> {
        ch.exchange_bind(
            b.destination.as_str().into(),
            b.source.as_str().into(),
            b.routing_key.as_str().into(),
            ExchangeBindOptions::default(),
            LapinTable::default(),
        )
        .await
        .map_err(|e| {
            self.error(
                live,
                &format!("binding exchange {} to {}", b.destination, b.source),
                e,
            )
        })
    }

    /// The 28 delay levels of native delayed delivery, declared once per connection as Celery's worker declares
    /// them (`kombu_amqp::delayed_delivery_topology`).
    async fn ensure_delayed_topology(
        &self,
        live: &Live,
        ch: &Channel,
    ) -> Result<(), TransportError> {
        let key = "x:celery_delayed_delivery".to_string();
        if !Self::first_time(live, key.clone()) {
            return Ok(());
        }
        let t = kombu_amqp::delayed_delivery_topology();
        for e in &t.exchanges {
            self.declare_exchange_on(live, ch, e).await?;
        }
        for q in &t.queues {
            self.declare_queue_on(live, ch, q).await?;
        }
        for b in &t.queue_bindings {
            self.bind_queue(live, ch, b).await?;
        }
        for b in &t.exchange_bindings {
            self.bind_exchange(live, ch, b).await?;
        }
        Self::remember(live, key);
        Ok(())
    }

    /// Publish on the confirm channel and wait for the broker's confirm. Returns false when a mandatory message was
    /// returned unroutable.
    async fn publish_confirmed(
        &self,
        live: &Live,
        p: &kombu_amqp::Publish,
        mandatory: bool,
    ) -> Result<bool, TransportError> {
        let what = format!("publishing to {:?}/{:?}", p.exchange, p.routing_key);
        let confirm = live
            .publish
            .basic_publish(
                p.exchange.as_str().into(),
                p.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                &p.body,
                convert::properties_to_lapin(&p.properties),
            )
            .await
            .map_err(|e| self.error(live, &what, e))?
            .await
            .map_err(|e| self.error(live, &what, e))?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(true),
            Confirmation::Ack(Some(_)) => Ok(false),
            Confirmation::Nack(_) => Err(failed(format!("{what}: the broker refused the message"))),
        }
    }

    /// Start consumers for the queues asked that have none; cancel those no longer asked and give their buffered
    /// messages back.
    async fn ensure_consumers(
        &self,
        live: &Arc<Live>,
        queues: &[String],
    ) -> Result<(), TransportError> {
        let mut consumers = live.consumers.lock().await;
        let gone: Vec<String> = consumers
            .keys()
            .filter(|q| !queues.contains(q))
            .cloned()
            .collect();
        for q in gone {
            if let Some(tag) = consumers.remove(&q) {
                live.consume
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await
                    .map_err(|e| self.error(live, &format!("cancelling consumer of {q}"), e))?;
            }
            let drained = self.inner.buffer.lock().expect("buffer").drain(&q);
            for p in drained.into_iter().filter(|p| p.live == live.id) {
                live.consume
                    .basic_reject(p.dtag, BasicRejectOptions { requeue: true })
                    .await
                    .map_err(|e| self.error(live, "giving back a prefetched message", e))?;
            }
            tracing::info!(queue = %q, "stopped consuming");
        }
        for q in queues {
            if consumers.contains_key(q) {
                continue;
            }
            self.ensure_task_queue(live, q).await?;
            let consumer = live
                .consume
                .basic_consume(
                    q.as_str().into(),
                    format!("celeriac.{}.{q}", live.id).into(),
                    BasicConsumeOptions::default(),
                    LapinTable::default(),
                )
                .await
                .map_err(|e| self.error(live, &format!("consuming {q}"), e))?;
            consumers.insert(q.clone(), consumer.tag());
            tokio::spawn(read_deliveries(
                self.clone(),
                live.clone(),
                q.clone(),
                consumer,
            ));
        }
        Ok(())
    }

    fn deliveries(&self, live: &Live, queues: &[String], max: usize) -> Vec<Delivery> {
        let taken = self
            .inner
            .buffer
            .lock()
            .expect("buffer")
            .take(queues, max, live.id);
        if taken.is_empty() {
            return Vec::new();
        }
        let mut held = live.held.lock().expect("held");
        taken
            .into_iter()
            .map(|(queue, p)| {
                held.insert(p.dtag);
                Delivery {
                    queue,
                    tag: Some(p.info.tag.clone()),
                    raw: kombu_amqp::kombu_json(&p.info, &p.props, &p.body),
                    message: kombu_amqp::message(&p.info, &p.props, &p.body),
                }
            })
            .collect()
    }

    /// The connection a tag belongs to, if it is the current one and the message is still held: then it is
    /// removed from the held set (the caller settles it).
    fn claim(&self, tag: &str) -> Result<Option<(Arc<Live>, u64)>, TransportError> {
        let (generation, dtag) =
            parse_tag(tag).ok_or_else(|| failed(format!("not an AMQP delivery tag: {tag:?}")))?;
        let live = self.inner.current.lock().expect("current").clone();
        let Some(live) = live.filter(|l| l.id == generation && l.ok()) else {
            return Ok(None);
        };
        if !live.held.lock().expect("held").remove(&dtag) {
            return Ok(None);
        }
        Ok(Some((live, dtag)))
    }
}

impl AmqpTransport {
    /// Consume `queue` without acknowledgements on `ch` (which `guard` closes when the reader stops): every message
    /// goes to the returned subscription.
    async fn listen_on(
        &self,
        live: &Live,
        ch: Channel,
        guard: CloseOnDrop,
        queue: &str,
    ) -> Result<Subscription, TransportError> {
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                LapinTable::default(),
            )
            .await
            .map_err(|e| self.error(live, &format!("consuming {queue}"), e))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let _guard = guard;
            while let Some(Ok(d)) = consumer.next().await {
                if tx.send(incoming(d)).is_err() {
                    break;
                }
            }
        });
        Ok(Subscription::new(rx, Some(reader.abort_handle())))
    }

    /// Declare `queue` as given and receive everything delivered to it from now on, without acknowledgements (an
    /// `rpc://` client's reply queue). The subscription ends when the connection is lost.
    pub async fn listen(&self, queue: &QueueDecl) -> Result<Subscription, TransportError> {
        let live = self.live().await?;
        let ch = self.temp_channel(&live).await?;
        let guard = CloseOnDrop(ch.clone());
        self.declare_queue_on(&live, &ch, queue).await?;
        self.listen_on(&live, ch, guard, &queue.name).await
    }

    /// Publish a prepared message and wait for RabbitMQ's confirm (an `rpc://` result).
    pub async fn publish_message(&self, p: &kombu_amqp::Publish) -> Result<(), TransportError> {
        let live = self.live().await?;
        self.publish_confirmed(&live, p, false).await?;
        Ok(())
    }
}

/// `queue.declare` as `q` says.
async fn declare_queue(ch: &Channel, q: &QueueDecl) -> Result<(), lapin::Error> {
    ch.queue_declare(
        q.name.as_str().into(),
        QueueDeclareOptions {
            durable: q.durable,
            exclusive: q.exclusive,
            auto_delete: q.auto_delete,
            ..QueueDeclareOptions::default()
        },
        convert::table_to_lapin(&q.arguments),
    )
    .await?;
    Ok(())
}

/// Move a consumer's deliveries into the buffer until it ends (cancelled, or the channel or connection died).
async fn read_deliveries(
    t: AmqpTransport,
    live: Arc<Live>,
    queue: String,
    mut consumer: lapin::Consumer,
) {
    let by_priority = t.by_priority();
    while let Some(item) = consumer.next().await {
        match item {
            Ok(d) => {
                let pending = Pending {
                    live: live.id,
                    dtag: d.delivery_tag,
                    info: DeliveryInfo {
                        exchange: d.exchange.as_str().to_string(),
                        routing_key: d.routing_key.as_str().to_string(),
                        redelivered: d.redelivered,
                        tag: live.tag(d.delivery_tag),
                    },
                    props: convert::properties_from_lapin(&d.properties),
                    body: d.data,
                };
                t.inner
                    .buffer
                    .lock()
                    .expect("buffer")
                    .push(&queue, pending, by_priority);
                t.inner.arrived.notify_waiters();
            }
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "AMQP consumer failed");
                live.broken.store(true, Ordering::SeqCst);
                break;
            }
        }
    }
    // Cancelled by us (already removed), by the broker (queue deleted), or the connection died: the next consume
    // starts it again.
    let mut consumers = live.consumers.lock().await;
    if consumers.get(&queue) == Some(&consumer.tag()) {
        consumers.remove(&queue);
    }
    t.inner.arrived.notify_waiters();
}

/// Closes a subscription's channel when its reader stops (dropped subscription or lost connection).
struct CloseOnDrop(Channel);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let ch = self.0.clone();
        if ch.status().connected()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = ch.close(200, "subscription closed".into()).await;
            });
        }
    }
}

fn incoming(d: lapin::message::Delivery) -> Incoming {
    let props = convert::properties_from_lapin(&d.properties);
    let info = DeliveryInfo {
        exchange: d.exchange.as_str().to_string(),
        routing_key: d.routing_key.as_str().to_string(),
        redelivered: d.redelivered,
        tag: String::new(),
    };
    Incoming {
        routing_key: info.routing_key.clone(),
        message: kombu_amqp::message(&info, &props, &d.data),
        raw: d.data,
    }
}

#[async_trait]
impl Transport for AmqpTransport {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn declare_queue(&self, queue: &str) -> transport::Result<()> {
        let live = self.live().await?;
        self.ensure_task_queue(&live, queue).await
    }

    async fn publish(&self, queue: &str, envelope: &Envelope) -> transport::Result<()> {
        let live = self.live().await?;
        self.ensure_task_queue(&live, queue).await?;
        // Celery publishes to a queue on a direct exchange through the default exchange (routing key = queue), to a
        // topic queue through its exchange, and a countdown under native delayed delivery to the delay levels.
        let countdown = envelope
            .headers
            .get("eta")
            .and_then(serde_json::Value::as_str)
            .and_then(celery_proto::time::parse_iso)
            .map(|eta| (eta - chrono::Utc::now()).num_milliseconds() as f64 / 1000.0);
        let (exchange, routing_key) =
            kombu_amqp::task_publish_target(queue, &self.inner.opts.queues, countdown);
        let p = kombu_amqp::publish(envelope, &exchange, &routing_key);
        self.publish_confirmed(&live, &p, false).await?;
        Ok(())
    }

    async fn consume(
        &self,
        queues: &[String],
        max: usize,
        idle_wait: Duration,
    ) -> transport::Result<Vec<Delivery>> {
        let live = self.live().await?;
        self.update_qos(&live).await?;
        self.ensure_consumers(&live, queues).await?;
        let deadline = tokio::time::Instant::now() + idle_wait;
        loop {
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.deliveries(&live, queues, max);
            if !got.is_empty() || max == 0 {
                return Ok(got);
            }
            if !live.ok() {
                live.broken.store(true, Ordering::SeqCst);
                return Err(unavailable("the AMQP connection was lost"));
            }
            if u64::from(self.wanted_prefetch()) != live.qos.load(Ordering::SeqCst) {
                // The prefetch count must change first (held ETA tasks): the caller's next consume applies it.
                return Ok(Vec::new());
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn purge(&self, queue: &str) -> transport::Result<u64> {
        let live = self.live().await?;
        // On a channel of its own: purging a queue that does not exist is a channel error (404), meaning 0.
        let ch = self.temp_channel(&live).await?;
        let _guard = CloseOnDrop(ch.clone());
        match ch
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
        {
            Ok(n) => Ok(u64::from(n)),
            Err(e) if reply_code(&e) == Some(404) => Ok(0),
            Err(e) => Err(self.error(&live, &format!("purging {queue}"), e)),
        }
    }

    async fn queue_len(&self, queue: &str) -> transport::Result<Option<u64>> {
        let live = self.live().await?;
        // A passive declare on a channel of its own: a missing queue is a channel error (404), meaning None.
        let ch = self.temp_channel(&live).await?;
        let _guard = CloseOnDrop(ch.clone());
        let declared = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                LapinTable::default(),
            )
            .await;
        match declared {
            Ok(q) => Ok(Some(u64::from(q.message_count()))),
            Err(e) if reply_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(&live, &format!("reading the depth of {queue}"), e)),
        }
    }

    async fn ack(&self, tag: &str) -> transport::Result<()> {
        let Some((live, dtag)) = self.claim(tag)? else {
            if parse_tag(tag).is_some_and(|(g, _)| {
                self.inner
                    .current
                    .lock()
                    .expect("current")
                    .as_ref()
                    .is_some_and(|l| l.id == g && l.ok())
            }) {
                // Settled before: nothing to do (a second ack would close the channel).
                return Ok(());
            }
            return Err(failed(format!(
                "cannot ack {tag}: the channel it was delivered on is closed, and RabbitMQ delivers the message again"
            )));
        };
        live.consume
            .basic_ack(dtag, BasicAckOptions::default())
            .await
            .map_err(|e| self.error(&live, "ack", e))
    }

    async fn requeue(&self, tag: &str, _to: Requeue) -> transport::Result<bool> {
        let Some((live, dtag)) = self.claim(tag)? else {
            return Ok(false);
        };
        live.consume
            .basic_reject(dtag, BasicRejectOptions { requeue: true })
            .await
            .map_err(|e| self.error(&live, "reject", e))?;
        Ok(true)
    }

    async fn keep_dead_letter(
        &self,
        name: &str,
        _id: &str,
        record: &[u8],
        bounds: transport::DeadLetterBounds,
    ) -> transport::Result<transport::DeadLetterDropped> {
        let live = self.live().await?;
        let key = format!("q:{name}");
        if Self::first_time(&live, key.clone()) {
            let ch = self.misc(&live).await?;
            self.declare_queue_on(&live, &ch, &kombu_amqp::dead_letter_queue(name))
                .await?;
            Self::remember(&live, key);
        }
        let p = kombu_amqp::Publish {
            exchange: kombu_amqp::DEFAULT_EXCHANGE.to_string(),
            routing_key: name.to_string(),
            properties: AmqpProperties {
                content_type: Some(celery_proto::envelope::CONTENT_TYPE_JSON.to_string()),
                content_encoding: Some("utf-8".to_string()),
                delivery_mode: Some(kombu_amqp::PERSISTENT),
                // The age bound is a per-message TTL: RabbitMQ discards the entry itself when it expires.
                expiration: bounds.max_age.map(|a| a.as_millis().max(1).to_string()),
                ..AmqpProperties::default()
            },
            body: record.to_vec(),
        };
        self.publish_confirmed(&live, &p, false).await?;
        // The size bound: take the oldest entries out while there are too many (the queue's own arguments are
        // kombu's declaration and cannot change without deleting it; a `max-length` policy does the same).
        let mut dropped = transport::DeadLetterDropped::default();
        if bounds.max_entries > 0 {
            let mut waiting = self.queue_len(name).await?.unwrap_or(0);
            while waiting > bounds.max_entries {
                if self.pop(name, Duration::ZERO).await?.is_none() {
                    break;
                }
                dropped.too_many += 1;
                waiting -= 1;
            }
        }
        Ok(dropped)
    }

    async fn broadcast(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> transport::Result<()> {
        let live = self.live().await?;
        self.ensure_exchange(&live, exchange, ExchangeKind::Topic)
            .await?;
        let p = kombu_amqp::publish(envelope, exchange, routing_key);
        self.publish_confirmed(&live, &p, false).await?;
        Ok(())
    }

    async fn subscribe(&self, binding: &Binding) -> transport::Result<Subscription> {
        let live = self.live().await?;
        let ch = self.temp_channel(&live).await?;
        let guard = CloseOnDrop(ch.clone());
        let known = live
            .kinds
            .lock()
            .expect("kinds")
            .get(&binding.exchange)
            .copied();
        let ex = kombu_amqp::exchange(&binding.exchange, known.unwrap_or(ExchangeKind::Topic));
        self.declare_exchange_on(&live, &ch, &ex).await?;
        self.declare_bound_queue(&live, &ch, binding).await?;
        self.listen_on(&live, ch, guard, &binding.queue).await
    }

    async fn bind(&self, binding: &Binding) -> transport::Result<()> {
        let live = self.live().await?;
        self.ensure_exchange(&live, &binding.exchange, ExchangeKind::Direct)
            .await?;
        let ch = self.misc(&live).await?;
        self.declare_bound_queue(&live, &ch, binding).await
    }

    async fn unbind(&self, binding: &Binding) -> transport::Result<()> {
        let live = self.live().await?;
        // On a channel of its own: unbinding what does not exist (any more) is a channel error (404).
        let ch = self.temp_channel(&live).await?;
        let unbound = ch
            .queue_unbind(
                binding.queue.as_str().into(),
                binding.exchange.as_str().into(),
                binding.routing_key.as_str().into(),
                LapinTable::default(),
            )
            .await;
        let ch = match unbound {
            Ok(()) => ch,
            Err(e) if reply_code(&e) == Some(404) => self.temp_channel(&live).await?,
            Err(e) => return Err(self.error(&live, &format!("unbinding {}", binding.queue), e)),
        };
        let deleted = ch
            .queue_delete(binding.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        if ch.status().connected() {
            let _ = ch.close(200, "done".into()).await;
        }
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if reply_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.error(&live, &format!("deleting {}", binding.queue), e)),
        }
    }

    async fn send_direct(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> transport::Result<usize> {
        let live = self.live().await?;
        self.ensure_exchange(&live, exchange, ExchangeKind::Direct)
            .await?;
        let p = kombu_amqp::publish(envelope, exchange, routing_key);
        // Mandatory: an unroutable reply comes back, which is how we know nobody listens. AMQP does not say how
        // many queues got it, so "routed" counts as 1.
        let routed = self.publish_confirmed(&live, &p, true).await?;
        Ok(usize::from(routed))
    }

    async fn pop(&self, queue: &str, timeout: Duration) -> transport::Result<Option<Incoming>> {
        let live = self.live().await?;
        let ch = self.temp_channel(&live).await?;
        let _guard = CloseOnDrop(ch.clone());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .map_err(|e| self.error(&live, &format!("basic.get from {queue}"), e))?;
            if let Some(m) = got {
                return Ok(Some(incoming(m.delivery)));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POP_POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }

    fn hold_beyond_prefetch(&self, delta: i64) {
        self.inner.beyond.fetch_add(delta, Ordering::SeqCst);
        // Applied by the next `consume` (the consumer loop calls it at least every idle wait).
        self.inner.arrived.notify_waiters();
    }

    fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::SeqCst)
    }
}
