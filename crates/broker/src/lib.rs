//! The only crate that talks to Redis: kombu's Redis transport and Celery's Redis result backend, from Rust.
//!
//! - Publishing: LPUSH on the anonymous exchange's priority lists, queue declaration as kombu 5.7 writes it.
//! - Consuming: under backlog through an atomic Lua pop-and-record into kombu's `unacked`/`unacked_index`; when
//!   idle, `BLMOVE` from every watched list at once into this process's in-flight list, then an atomic take from
//!   there (nothing leaves a queue except into `unacked` or a list that recovery scans);
//!   ack, reject, requeue (LPUSH + `redelivered`), restore (RPUSH to the front), and `restore_visible` under `unacked_mutex`, so Python and Rust consumers restore each other's messages.
//! - Results: GET-skip-if-SUCCESS, SETEX and PUBLISH in one Lua script, for every write that is waiting at the time
//!   (batched like acks, [`results`]).
//! - Fanout publish and pub/sub connections for remote control and events.
//! - A shared GCRA rate limiter for the public API ([`rate_limit`]).
//!
//! Architecture invariant: no other crate depends on `redis`; everything Celery-specific about bytes lives in
//! `celery-proto`, this crate only moves them.

mod acks;
pub mod coordinator_store;
pub mod dead_letters;
pub mod fanout;
pub mod lease;
pub mod rate_limit;
mod redis_transport;
mod results;
pub mod subscribe;
pub mod url;

use celery_proto::kombu_redis::{self, UNACKED, UNACKED_INDEX, UNACKED_MUTEX};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use ::transport::redact_url as redact;
use acks::Acker;
pub use rate_limit::RateDecision;
use results::ResultWriter;
pub use subscribe::Subscriber;
pub use url::BrokerUrl;

/// What can go wrong talking to Redis. No `redis` type appears here: the client library stays inside this crate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid broker URL {url}: {why}")]
    BadUrl { url: String, why: String },
    #[error("sentinel: {0}")]
    Sentinel(String),
    /// Redis cannot be reached now (refused, reset, timed out, loading its data set).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered a command with an error.
    #[error("redis: {0}")]
    Command(String),
    /// The ack or result batcher is gone (the process is stopping).
    #[error("ack or result batcher stopped")]
    Closed,
    /// A write the master took but fewer replicas than asked confirmed in time (`WAIT`, see [`ReplicaWait`]): it
    /// is on the master, and a failover before the replicas catch up would lose it.
    #[error(
        "written to the Redis master but confirmed by {confirmed} of {wanted} replicas within {timeout_ms} ms: a failover now would lose it"
    )]
    NotReplicated {
        confirmed: i64,
        wanted: u32,
        timeout_ms: u64,
    },
    /// A setting (environment variable) the broker reads is invalid.
    #[error("{0}")]
    Config(String),
}

/// Writes that must survive a failover: after each publish and each result write, `WAIT replicas timeout` on the
/// connection that wrote, and [`BrokerError::NotReplicated`] when fewer replicas confirmed in time. Redis
/// replicates asynchronously, so without it a failover loses whatever the master acknowledged and had not yet sent
/// on. Set for every process by `CELERIAC_REDIS_WAIT_REPLICAS` (default 0: off) and
/// `CELERIAC_REDIS_WAIT_TIMEOUT_MS` (default 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    pub replicas: u32,
    pub timeout: Duration,
}

impl ReplicaWait {
    pub const REPLICAS_ENV: &'static str = "CELERIAC_REDIS_WAIT_REPLICAS";
    pub const TIMEOUT_ENV: &'static str = "CELERIAC_REDIS_WAIT_TIMEOUT_MS";

    /// From the environment: `None` when no replicas are asked for; an error names a value that is not a number.
    pub fn from_env() -> Result<Option<ReplicaWait>> {
        Self::parse(
            std::env::var(Self::REPLICAS_ENV).ok().as_deref(),
            std::env::var(Self::TIMEOUT_ENV).ok().as_deref(),
        )
    }

    fn parse(replicas: Option<&str>, timeout_ms: Option<&str>) -> Result<Option<ReplicaWait>> {
        let number = |name: &str, v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| BrokerError::Config(format!("{name}={v:?} is not a whole number")))
        };
        let replicas = match replicas.filter(|v| !v.trim().is_empty()) {
            Some(v) => number(Self::REPLICAS_ENV, v)?,
            None => 0,
        };
        let timeout_ms = match timeout_ms.filter(|v| !v.trim().is_empty()) {
            Some(v) => number(Self::TIMEOUT_ENV, v)?,
            None => 1000,
        };
        if replicas == 0 {
            return Ok(None);
        }
        if timeout_ms == 0 {
            // WAIT with 0 blocks until the replicas confirm, forever if they never do.
            return Err(BrokerError::Config(format!(
                "{}=0 would wait forever for the replicas; give a timeout in milliseconds",
                Self::TIMEOUT_ENV
            )));
        }
        Ok(Some(ReplicaWait {
            replicas: u32::try_from(replicas).map_err(|_| {
                BrokerError::Config(format!("{}={replicas} is too large", Self::REPLICAS_ENV))
            })?,
            timeout: Duration::from_millis(timeout_ms),
        }))
    }
}

impl From<redis::RedisError> for BrokerError {
    fn from(e: redis::RedisError) -> BrokerError {
        let passing = |kind: Option<redis::ServerErrorKind>| {
            matches!(
                kind,
                Some(redis::ServerErrorKind::BusyLoading | redis::ServerErrorKind::ReadOnly)
            )
        };
        // A transaction Redis refused while loading its data set (or as a read-only replica) reports EXECABORT
        // with the reason inside: look at the commands' own errors too, so such an ack is retried, not given up.
        let transient = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_connection_refusal()
            || passing(match e.kind() {
                redis::ErrorKind::Server(k) => Some(k),
                _ => None,
            })
            || e.clone()
                .into_server_errors()
                .is_some_and(|errs| errs.iter().any(|(_, se)| passing(se.kind())));
        if transient {
            BrokerError::Unavailable(e.to_string())
        } else {
            BrokerError::Command(e.to_string())
        }
    }
}

impl BrokerError {
    /// True when retrying later can help (connection refused, reset, timeout, loading).
    pub fn is_transient(&self) -> bool {
        matches!(self, BrokerError::Unavailable(_) | BrokerError::Sentinel(_))
    }
}

pub type Result<T> = std::result::Result<T, BrokerError>;

struct Scripts {
    pop_and_record: redis::Script,
    move_unacked: redis::Script,
    store_results: redis::Script,
    release_mutex: redis::Script,
    take_in_flight: redis::Script,
    sweep_in_flight: redis::Script,
    bind_expiring: redis::Script,
    chord_join: redis::Script,
    chord_done: redis::Script,
    gcra: redis::Script,
}

const STORE_RESULTS_LUA: &str = include_str!("lua/store_results.lua");

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            pop_and_record: redis::Script::new(include_str!("lua/pop_and_record.lua")),
            move_unacked: redis::Script::new(include_str!("lua/move_unacked.lua")),
            store_results: redis::Script::new(STORE_RESULTS_LUA),
            release_mutex: redis::Script::new(include_str!("lua/release_mutex.lua")),
            take_in_flight: redis::Script::new(include_str!("lua/take_in_flight.lua")),
            sweep_in_flight: redis::Script::new(include_str!("lua/sweep_in_flight.lua")),
            bind_expiring: redis::Script::new(include_str!("lua/bind_expiring.lua")),
            chord_join: redis::Script::new(include_str!("lua/chord_join.lua")),
            chord_done: redis::Script::new(include_str!("lua/chord_done.lua")),
            gcra: redis::Script::new(include_str!("lua/gcra.lua")),
        }
    }
}

/// The Redis server commands go to now: for Sentinel, the master the sentinels named last.
#[derive(Clone)]
struct Link {
    /// `host:port` (or the URL) it was opened for.
    addr: String,
    client: redis::Client,
    conn: ConnectionManager,
}

struct Inner {
    url: BrokerUrl,
    link: std::sync::RwLock<Link>,
    declared: Mutex<HashSet<String>>,
    reconnects: Arc<AtomicU64>,
    scripts: Scripts,
    /// The idle wait's connections, one per list it watches (see `redis_transport.rs`).
    watchers: tokio::sync::Mutex<Vec<redis_transport::Watcher>>,
    /// Set once this Redis answered that it has no BLMOVE (older than 6.2): idle consumers poll instead.
    no_blmove: std::sync::atomic::AtomicBool,
    /// This process's in-flight list, where the idle wait moves a message before recording it.
    in_flight: InFlight,
    /// Idle connections for popping mailbox replies.
    reply_conns: Mutex<Vec<ConnectionManager>>,
    acker: std::sync::OnceLock<Acker>,
    results: std::sync::OnceLock<ResultWriter>,
    /// Replicas a publish or result write waits for (`None`: none, Redis's asynchronous default).
    replica_wait: std::sync::RwLock<Option<ReplicaWait>>,
    /// The connection for writes followed by `WAIT` (it blocks its connection, so not the shared one).
    durable_conn: tokio::sync::Mutex<Option<ConnectionManager>>,
}

/// The registry of every consumer's in-flight list (a set of list keys).
pub const IN_FLIGHT_REGISTRY: &str = "celeriac:in_flight";
/// Where the sweeper puts an orphaned in-flight message without a readable delivery tag (for an operator).
pub const IN_FLIGHT_UNREADABLE: &str = "celeriac:in_flight_unreadable";
/// How long a consumer's in-flight list stays its own after its last sign of life; it renews at a quarter of that.
const IN_FLIGHT_ALIVE: Duration = Duration::from_secs(60);

/// One process's in-flight list: `celeriac:in_flight:<uuid>`, alive while `celeriac:in_flight:<uuid>:alive` exists.
struct InFlight {
    list: String,
    alive: String,
    /// When the alive key and the registry entry were last written.
    renewed: Mutex<Option<std::time::Instant>>,
    /// The list may hold a message not yet recorded (a wait or a take whose answer did not arrive).
    dirty: std::sync::atomic::AtomicBool,
}

impl InFlight {
    fn new() -> InFlight {
        let list = format!("{IN_FLIGHT_REGISTRY}:{}", uuid::Uuid::new_v4().simple());
        InFlight {
            alive: format!("{list}:alive"),
            list,
            renewed: Mutex::new(None),
            dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// A handle on the broker (cheap to clone; commands from clones are pipelined on one connection).
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// Seconds since the epoch as a float, like Python's `time.time()`.
pub fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Broker {
    /// Connect (resolving Sentinel if needed). Fails fast if Redis cannot be reached now.
    ///
    /// With a Sentinel URL the broker then follows failovers: every second it asks the sentinels for the master,
    /// and when another one was promoted it moves every connection there (commands, the idle consumer's, mailbox
    /// replies; subscriptions end with the old master's connection and their owners subscribe again).
    pub async fn connect(url: &str) -> Result<Broker> {
        let replica_wait = ReplicaWait::from_env()?;
        let parsed = BrokerUrl::parse(url)?;
        let resolved = parsed.resolve().await?;
        let link = open_link(&parsed, &resolved).await.map_err(|e| match e {
            BrokerError::BadUrl { why, .. } => BrokerError::BadUrl {
                url: redact(url),
                why,
            },
            other => other,
        })?;
        let reconnects = Arc::new(AtomicU64::new(0));
        let sentinel = matches!(parsed, BrokerUrl::Sentinel { .. });
        let broker = Broker {
            inner: Arc::new(Inner {
                url: parsed,
                link: std::sync::RwLock::new(link),
                declared: Mutex::new(HashSet::new()),
                reconnects,
                scripts: Scripts::new(),
                watchers: tokio::sync::Mutex::new(Vec::new()),
                no_blmove: std::sync::atomic::AtomicBool::new(false),
                in_flight: InFlight::new(),
                reply_conns: Mutex::new(Vec::new()),
                acker: std::sync::OnceLock::new(),
                results: std::sync::OnceLock::new(),
                replica_wait: std::sync::RwLock::new(replica_wait),
                durable_conn: tokio::sync::Mutex::new(None),
            }),
        };
        if sentinel {
            tokio::spawn(follow_sentinel(Arc::downgrade(&broker.inner)));
        }
        Ok(broker)
    }

    /// The Redis database number (used in fanout channel names).
    pub fn db(&self) -> i64 {
        self.inner.url.db()
    }

    /// How many connection losses callers have reported with [`Broker::note_connection_error`].
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Count a transient connection error (the connection manager reconnects by itself on the next command).
    pub fn note_connection_error(&self, err: &BrokerError) {
        if err.is_transient() {
            self.count_reconnect();
        }
    }

    /// Ask every later publish and result write to wait for `wait.replicas` replicas (or none), whatever the
    /// environment said at connect.
    pub fn set_replica_wait(&self, wait: Option<ReplicaWait>) {
        *self.inner.replica_wait.write().expect("replica wait") = wait;
    }

    /// The replicas publishes and result writes wait for, if any.
    pub fn replica_wait(&self) -> Option<ReplicaWait> {
        *self.inner.replica_wait.read().expect("replica wait")
    }

    /// Send `pipe` and then `WAIT` in one round trip on the connection kept for such writes (WAIT blocks its
    /// connection, so not the shared one; and the write and its WAIT must share a connection, which is why they
    /// go together: a reconnect in between would make WAIT count another client's writes). Returns the answers
    /// of the pipeline's commands that are not ignored; [`BrokerError::NotReplicated`] when too few replicas
    /// confirmed in time.
    async fn write_and_wait(
        &self,
        wait: ReplicaWait,
        mut pipe: redis::Pipeline,
    ) -> Result<Vec<redis::Value>> {
        let timeout_ms = u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX);
        pipe.cmd("WAIT").arg(wait.replicas).arg(timeout_ms);
        let mut slot = self.inner.durable_conn.lock().await;
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(self.blocking_connection().await?),
        };
        let answer = tokio::time::timeout(
            wait.timeout + Duration::from_secs(5),
            pipe.query_async::<Vec<redis::Value>>(conn),
        )
        .await;
        let mut answers = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                *slot = None;
                return Err(e.into());
            }
            Err(_) => {
                *slot = None;
                return Err(BrokerError::Unavailable(format!(
                    "no answer to a write and its WAIT within {:?}",
                    wait.timeout + Duration::from_secs(5)
                )));
            }
        };
        let confirmed = match answers.pop() {
            Some(redis::Value::Int(n)) => n,
            other => return Err(BrokerError::Command(format!("WAIT answered {other:?}"))),
        };
        if confirmed < i64::from(wait.replicas) {
            return Err(BrokerError::NotReplicated {
                confirmed,
                wanted: wait.replicas,
                timeout_ms,
            });
        }
        Ok(answers)
    }

    fn count_reconnect(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.link.read().expect("link").conn.clone()
    }

    fn client(&self) -> redis::Client {
        self.inner.link.read().expect("link").client.clone()
    }

    /// A separate connection for blocking commands (BRPOP), so they do not stall pipelined traffic.
    pub(crate) async fn blocking_connection(&self) -> Result<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_max_delay(Duration::from_secs(5));
        Ok(self
            .client()
            .get_connection_manager_with_config(config)
            .await?)
    }

    /// A pub/sub connection (for the pidbox, events and result waits).
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        Ok(self.client().get_async_pubsub().await?)
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Declare a queue the way kombu 5.7 does: measure its four lists, then bind it on the anonymous/direct
    /// exchange of the same name in `_kombu.binding.<q>` and `_kombu.binding_permanent.<q>`.
    pub async fn declare_queue(&self, queue: &str) -> Result<()> {
        let member = kombu_redis::binding_member(queue, "", queue);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for k in kombu_redis::queue_keys(queue) {
            pipe.llen(k).ignore();
        }
        pipe.sadd(kombu_redis::binding_key(queue), &member).ignore();
        pipe.sadd(kombu_redis::binding_permanent_key(queue), &member)
            .ignore();
        let () = pipe.query_async(&mut self.conn()).await?;
        self.inner
            .declared
            .lock()
            .expect("declared set")
            .insert(queue.to_string());
        Ok(())
    }

    /// Bind a queue with `x-expires` semantics (pidbox mailbox, reply queue, event receiver), like kombu 5.7.
    pub async fn bind_expiring(
        &self,
        exchange: &str,
        routing_key: &str,
        queue: &str,
        ttl_ms: u64,
    ) -> Result<()> {
        let member = kombu_redis::binding_member(routing_key, "", queue);
        let () = self
            .inner
            .scripts
            .bind_expiring
            .key(kombu_redis::binding_key(exchange))
            .key(kombu_redis::BINDING_DEADLINES)
            .arg(member)
            .arg(exchange)
            .arg(ttl_ms)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())?;
        Ok(())
    }

    /// Remove a binding member (from both binding sets) and delete the queue's lists.
    pub async fn unbind_and_delete(
        &self,
        exchange: &str,
        routing_key: &str,
        queue: &str,
    ) -> Result<()> {
        let member = kombu_redis::binding_member(routing_key, "", queue);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.srem(kombu_redis::binding_key(exchange), &member)
            .ignore();
        pipe.srem(kombu_redis::binding_permanent_key(exchange), &member)
            .ignore();
        pipe.del(kombu_redis::queue_keys(queue).to_vec()).ignore();
        let () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Members of an exchange's binding set.
    pub async fn bindings(&self, exchange: &str) -> Result<Vec<String>> {
        Ok(self
            .conn()
            .smembers(kombu_redis::binding_key(exchange))
            .await?)
    }

    /// Publish an envelope to `queue` at `priority` on the anonymous exchange (declaring the queue once).
    pub async fn publish(&self, queue: &str, priority: u8, payload: &[u8]) -> Result<()> {
        let known = self
            .inner
            .declared
            .lock()
            .expect("declared set")
            .contains(queue);
        if !known {
            self.declare_queue(queue).await?;
        }
        let key = kombu_redis::queue_key(queue, priority);
        if let Some(wait) = self.replica_wait() {
            let mut pipe = redis::pipe();
            pipe.lpush(key, payload).ignore();
            self.write_and_wait(wait, pipe).await?;
            return Ok(());
        }
        let () = self.conn().lpush(key, payload).await.map(|_: i64| ())?;
        Ok(())
    }

    /// Publish many envelopes to `queue` in one round trip: one LPUSH per priority list with every payload of that
    /// priority, in order (so they are popped in the order given), like as many [`Broker::publish`] calls.
    pub async fn publish_many(&self, queue: &str, items: &[(u8, Vec<u8>)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let known = self
            .inner
            .declared
            .lock()
            .expect("declared set")
            .contains(queue);
        if !known {
            self.declare_queue(queue).await?;
        }
        let mut lists: Vec<(String, Vec<&[u8]>)> = Vec::new();
        for (priority, payload) in items {
            let key = kombu_redis::queue_key(queue, *priority);
            match lists.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(payload),
                None => lists.push((key, vec![payload])),
            }
        }
        let mut pipe = redis::pipe();
        for (key, payloads) in &lists {
            pipe.lpush(key, payloads).ignore();
        }
        if let Some(wait) = self.replica_wait() {
            self.write_and_wait(wait, pipe).await?;
            return Ok(());
        }
        let () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// LPUSH raw bytes to a list (reply queues).
    pub async fn lpush(&self, key: &str, payload: &[u8]) -> Result<()> {
        let _: i64 = self.conn().lpush(key, payload).await?;
        Ok(())
    }

    /// PUBLISH on a fanout channel.
    pub async fn publish_fanout(&self, channel: &str, payload: &[u8]) -> Result<()> {
        let _: i64 = self.conn().publish(channel, payload).await?;
        Ok(())
    }

    /// The pop-and-record script: (list key, envelope bytes) pairs; those with a string delivery tag are recorded.
    pub(crate) async fn pop_and_record(
        &self,
        keys: &[String],
        max: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let mut inv = self.inner.scripts.pop_and_record.key(UNACKED);
        inv.key(UNACKED_INDEX);
        for k in keys {
            inv.key(k);
        }
        inv.arg(format!("{:.6}", now_f64())).arg(max.max(1));
        let flat: Vec<Vec<u8>> = inv.invoke_async(&mut self.conn()).await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(key), Some(raw)) = (it.next(), it.next()) {
            out.push((String::from_utf8_lossy(&key).into_owned(), raw));
        }
        Ok(out)
    }

    /// Acknowledge: remove the tags from `unacked_index` and `unacked` in one transaction.
    pub async fn ack(&self, tags: &[String]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrem(UNACKED_INDEX, tags)
            .ignore()
            .hdel(UNACKED, tags)
            .ignore();
        let () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Put an unacked message back: `front = false` is kombu's reject(requeue=True) (LPUSH, back of the queue),
    /// `front = true` is restore (RPUSH, popped next). Adds the `redelivered` flags. Returns false if the tag
    /// was no longer unacked (someone else restored or acked it).
    pub async fn requeue(&self, tag: &str, front: bool) -> Result<bool> {
        let stored: Option<Vec<u8>> = self.conn().hget(UNACKED, tag).await?;
        let Some(stored) = stored else {
            let _: i64 = self.conn().zrem(UNACKED_INDEX, tag).await?;
            return Ok(false);
        };
        let Some((msg, dest)) = self.restore_target(&stored).await? else {
            // Unreadable entry: drop it from the index so it is not scanned forever, but keep the hash field.
            tracing::error!(
                tag,
                "unacked entry is not [message, exchange, routing_key]; left in `unacked` for inspection"
            );
            let _: i64 = self.conn().zrem(UNACKED_INDEX, tag).await?;
            return Ok(false);
        };
        let moved: i64 = self
            .inner
            .scripts
            .move_unacked
            .key(UNACKED)
            .key(UNACKED_INDEX)
            .key(dest)
            .arg(tag)
            .arg(stored)
            .arg(msg)
            .arg(if front { "right" } else { "left" })
            .invoke_async(&mut self.conn())
            .await?;
        Ok(moved == 1)
    }

    /// Where a stored `[message, exchange, routing_key]` goes back to, and the message with `redelivered` set.
    async fn restore_target(&self, stored: &[u8]) -> Result<Option<(Vec<u8>, String)>> {
        let Some(entry) = kombu_redis::UnackedEntry::parse(stored) else {
            return Ok(None);
        };
        let (exchange, rk) = (entry.exchange.as_str(), entry.routing_key.as_str());
        let queue = if exchange.is_empty() {
            rk.to_string()
        } else {
            // A direct exchange: the first bound queue with this routing key (kombu `_lookup`).
            let members = self.bindings(exchange).await?;
            members
                .iter()
                .filter_map(|m| kombu_redis::parse_binding_member(m))
                .find(|(k, _, _)| *k == rk)
                .map(|(_, _, q)| q.to_string())
                .unwrap_or_else(|| rk.to_string())
        };
        Ok(Some((
            entry.message,
            kombu_redis::queue_key(&queue, entry.priority),
        )))
    }

    /// kombu's `restore_visible`: under `unacked_mutex`, put back every unacked message older than
    /// `visibility_timeout` seconds. Returns how many were restored (0 if another process holds the mutex).
    pub async fn restore_visible(&self, visibility_timeout: f64) -> Result<usize> {
        let token = uuid::Uuid::new_v4().to_string();
        let got: Option<String> = redis::cmd("SET")
            .arg(UNACKED_MUTEX)
            .arg(&token)
            .arg("PX")
            .arg(300_000)
            .arg("NX")
            .query_async(&mut self.conn())
            .await?;
        if got.is_none() {
            return Ok(0);
        }
        let swept = self.sweep_in_flight().await;
        // Swept messages are unacked with score 0 now: the restore below puts them back with the rest.
        let result = match swept {
            Ok(_) => self.restore_expired(visibility_timeout).await,
            Err(e) => Err(e),
        };
        let _: i64 = self
            .inner
            .scripts
            .release_mutex
            .key(UNACKED_MUTEX)
            .arg(&token)
            .invoke_async(&mut self.conn())
            .await?;
        result
    }

    /// Take over the in-flight lists of consumers that are gone (their alive key expired): their messages are
    /// recorded as unacked with score 0, so [`Broker::restore_expired`] right after puts them back at once.
    /// Returns how many messages were taken over.
    async fn sweep_in_flight(&self) -> Result<usize> {
        let lists: Vec<String> = self.conn().smembers(IN_FLIGHT_REGISTRY).await?;
        let mut taken = 0;
        for list in lists {
            if list == self.inner.in_flight.list {
                continue;
            }
            let (recorded, unreadable): (i64, i64) = self
                .inner
                .scripts
                .sweep_in_flight
                .key(UNACKED)
                .key(UNACKED_INDEX)
                .key(&list)
                .key(format!("{list}:alive"))
                .key(IN_FLIGHT_REGISTRY)
                .key(IN_FLIGHT_UNREADABLE)
                .invoke_async(&mut self.conn())
                .await?;
            if recorded > 0 || unreadable > 0 {
                tracing::warn!(
                    list,
                    recorded,
                    unreadable,
                    "took over the in-flight messages of a consumer that is gone"
                );
            }
            taken += recorded.max(0) as usize;
        }
        Ok(taken)
    }

    /// Register this process's in-flight list and renew its alive key, when a quarter of its lifetime has passed.
    pub(crate) async fn renew_in_flight(&self) -> Result<()> {
        let f = &self.inner.in_flight;
        let due = f
            .renewed
            .lock()
            .expect("in-flight renewal")
            .is_none_or(|t| t.elapsed() > IN_FLIGHT_ALIVE / 4);
        if !due {
            return Ok(());
        }
        let _: () = redis::pipe()
            .atomic()
            .set_ex(&f.alive, 1, IN_FLIGHT_ALIVE.as_secs())
            .ignore()
            .sadd(IN_FLIGHT_REGISTRY, &f.list)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        *f.renewed.lock().expect("in-flight renewal") = Some(std::time::Instant::now());
        Ok(())
    }

    /// This process's in-flight list key.
    pub(crate) fn in_flight_list(&self) -> &str {
        &self.inner.in_flight.list
    }

    /// Whether the in-flight list may hold a message not yet recorded; `set` marks or clears it.
    pub(crate) fn in_flight_dirty(&self, set: Option<bool>) -> bool {
        let d = &self.inner.in_flight.dirty;
        match set {
            Some(v) => {
                d.store(v, Ordering::SeqCst);
                v
            }
            None => d.load(Ordering::SeqCst),
        }
    }

    /// Record and return up to `max` messages of this process's in-flight list, oldest first
    /// (`lua/take_in_flight.lua`).
    pub(crate) async fn take_in_flight(&self, max: usize) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .inner
            .scripts
            .take_in_flight
            .key(UNACKED)
            .key(UNACKED_INDEX)
            .key(&self.inner.in_flight.list)
            .arg(format!("{:.6}", now_f64()))
            .arg(max)
            .invoke_async(&mut self.conn())
            .await?)
    }

    async fn restore_expired(&self, visibility_timeout: f64) -> Result<usize> {
        let ceiling = now_f64() - visibility_timeout;
        let tags: Vec<String> = self
            .conn()
            .zrangebyscore(UNACKED_INDEX, "-inf", format!("{ceiling:.6}"))
            .await?;
        let mut restored = 0;
        for tag in tags {
            if self.requeue(&tag, true).await? {
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// Store a task result (skip if already SUCCESS; SETEX/SET + PUBLISH). Returns false if skipped.
    /// Writes from concurrent callers go out together in one script call ([`results`]).
    pub async fn store_result(
        &self,
        task_id: &str,
        meta: &[u8],
        expires_secs: u64,
    ) -> Result<bool> {
        self.inner
            .results
            .get_or_init(|| ResultWriter::new(self.clone()))
            .store(
                kombu_redis::result_key(task_id),
                meta.to_vec(),
                expires_secs,
            )
            .await
    }

    /// Several result writes in one script call, in order: `(key, meta, expiry seconds)`; true where written,
    /// false where skipped because the stored state was already SUCCESS.
    pub(crate) async fn store_results(&self, writes: &[(&str, &[u8], u64)]) -> Result<Vec<bool>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(wait) = self.replica_wait() {
            // The script as EVAL inside the pipeline that ends with WAIT (Redis caches it like EVALSHA's).
            let mut eval = redis::cmd("EVAL");
            eval.arg(STORE_RESULTS_LUA).arg(writes.len());
            for (key, _, _) in writes {
                eval.arg(*key);
            }
            for (_, meta, expires) in writes {
                eval.arg(*meta).arg(*expires);
            }
            let mut pipe = redis::pipe();
            pipe.add_command(eval);
            let answers = self.write_and_wait(wait, pipe).await?;
            let written: Vec<i64> = match answers.into_iter().next() {
                Some(v) => redis::from_redis_value(v)
                    .map_err(|e| BrokerError::Command(format!("store_results answered: {e}")))?,
                None => Vec::new(),
            };
            return Ok(written.into_iter().map(|w| w == 1).collect());
        }
        let mut inv = self.inner.scripts.store_results.prepare_invoke();
        for (key, meta, expires) in writes {
            inv.key(*key).arg(*meta).arg(*expires);
        }
        let written: Vec<i64> = inv.invoke_async(&mut self.conn()).await?;
        Ok(written.into_iter().map(|w| w == 1).collect())
    }

    /// Add a chord header result (`[1, id, state, result]` JSON) to the join of group `gid`; returns true when this
    /// caller claimed the chord body (every header result is in), like Celery 5.7's Redis backend.
    pub async fn chord_join(
        &self,
        gid: &str,
        task_id: &str,
        value: &[u8],
        index: Option<i64>,
        expires: u64,
        token: &str,
    ) -> Result<bool> {
        let k = |suffix: &str| format!("celery-taskset-meta-{gid}{suffix}");
        let reply: Vec<redis::Value> = self
            .inner
            .scripts
            .chord_join
            .key(k(".j"))
            .key(k(".t"))
            .key(k(".s"))
            .key(k(".d"))
            .key(k(""))
            .key(k(".c"))
            .arg(task_id)
            .arg(value)
            .arg("1")
            .arg(
                index
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "+inf".into()),
            )
            .arg(expires)
            .arg(expires)
            .arg(6)
            .arg(token)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(matches!(reply.get(3), Some(redis::Value::Int(1))))
    }

    /// The header results of a chord, in `group_index` order.
    pub async fn chord_results(&self, gid: &str) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .conn()
            .zrange(format!("celery-taskset-meta-{gid}.j"), 0, -1)
            .await?)
    }

    /// After the body was applied: drop the join keys and mark the chord done.
    pub async fn chord_done(&self, gid: &str, token: &str, expires: u64) -> Result<()> {
        let k = |suffix: &str| format!("celery-taskset-meta-{gid}{suffix}");
        let _: i64 = self
            .inner
            .scripts
            .chord_done
            .key(k(".c"))
            .key(k(".j"))
            .key(k(".t"))
            .key(k(".s"))
            .key(k(".d"))
            .arg(token)
            .arg(expires)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The stored meta of a task, if any.
    pub async fn get_result(&self, task_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.conn().get(kombu_redis::result_key(task_id)).await?)
    }

    /// The Redis server's own CPU time so far (user + system seconds, from `INFO cpu`), for benchmarks.
    pub async fn server_cpu_seconds(&self) -> Result<f64> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut self.conn())
            .await?;
        let field = |name: &str| {
            info.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        };
        match (field("used_cpu_user"), field("used_cpu_sys")) {
            (Some(u), Some(s)) => Ok(u + s),
            _ => Err(BrokerError::Command(
                "INFO cpu has no used_cpu_user/used_cpu_sys".into(),
            )),
        }
    }

    /// Length of a queue over its four priority lists.
    pub async fn queue_len(&self, queue: &str) -> Result<u64> {
        let mut pipe = redis::pipe();
        for k in kombu_redis::queue_keys(queue) {
            pipe.llen(k);
        }
        let lens: Vec<u64> = pipe.query_async(&mut self.conn()).await?;
        Ok(lens.iter().sum())
    }

    /// Delete a queue's four lists; returns how many messages they held.
    pub async fn purge(&self, queue: &str) -> Result<u64> {
        let n = self.queue_len(queue).await?;
        let _: i64 = self
            .conn()
            .del(kombu_redis::queue_keys(queue).to_vec())
            .await?;
        Ok(n)
    }

    /// Renew the lease of messages this process still holds: move their `unacked_index` score to now (only for
    /// tags still present, `ZADD XX`), so no consumer restores a message whose holder is alive.
    pub async fn renew_leases(&self, tags: &[String]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let now = format!("{:.6}", now_f64());
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(UNACKED_INDEX).arg("XX");
        for t in tags {
            cmd.arg(&now).arg(t);
        }
        let _: i64 = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }
}

/// Build the redis client, with TLS certificates when the URL asked for them.
/// Open the command connection to `resolved` (a connection manager that reconnects by itself).
async fn open_link(parsed: &BrokerUrl, resolved: &str) -> Result<Link> {
    let client = open_client(parsed, resolved).map_err(|why| BrokerError::BadUrl {
        url: redact(resolved),
        why,
    })?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_max_delay(Duration::from_secs(5))
        .set_number_of_retries(3);
    let conn = client.get_connection_manager_with_config(config).await?;
    Ok(Link {
        addr: resolved.to_string(),
        client,
        conn,
    })
}

/// How often a Sentinel broker asks which server is the master.
const SENTINEL_POLL: Duration = Duration::from_secs(1);

/// Follow Sentinel failovers for as long as the broker lives: when the sentinels name another master, open a
/// connection there and move everything to it.
async fn follow_sentinel(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(SENTINEL_POLL).await;
        let Some(inner) = inner.upgrade() else { return };
        let current = inner.link.read().expect("link").addr.clone();
        let resolved = match inner.url.resolve().await {
            Ok(r) if r != current => r,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "sentinels not answering; keeping the master we have");
                continue;
            }
        };
        match open_link(&inner.url, &resolved).await {
            Ok(link) => {
                *inner.link.write().expect("link") = link;
                inner.watchers.lock().await.clear();
                inner.durable_conn.lock().await.take();
                inner.reply_conns.lock().expect("reply conns").clear();
                inner.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(from = %redact(&current), to = %redact(&resolved), "Redis master changed (Sentinel failover); following it");
            }
            Err(e) => {
                tracing::warn!(to = %redact(&resolved), error = %e, "cannot reach the new Redis master yet; retrying")
            }
        }
    }
}

fn open_client(parsed: &BrokerUrl, resolved: &str) -> std::result::Result<redis::Client, String> {
    #[cfg(feature = "tls")]
    if resolved.starts_with("rediss://") {
        // rustls needs one process-wide crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let BrokerUrl::Direct { tls: Some(t), .. } = parsed
            && (t.ca_certs.is_some() || t.certfile.is_some())
        {
            let read = |p: &str| std::fs::read(p).map_err(|e| format!("reading {p}: {e}"));
            let root_cert = t.ca_certs.as_deref().map(read).transpose()?;
            let client_tls = match (&t.certfile, &t.keyfile) {
                (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                    client_cert: read(c)?,
                    client_key: read(k)?,
                }),
                (None, None) => None,
                _ => return Err("ssl_certfile and ssl_keyfile go together".into()),
            };
            return redis::Client::build_with_tls(
                resolved,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
            .map_err(|e| e.to_string());
        }
    }
    #[cfg(not(feature = "tls"))]
    if resolved.starts_with("rediss://") {
        return Err(
            "this build has no TLS support (build the broker crate with its `tls` feature)".into(),
        );
    }
    let _ = parsed;
    redis::Client::open(resolved).map_err(|e| e.to_string())
}
