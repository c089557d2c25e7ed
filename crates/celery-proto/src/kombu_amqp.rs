//! kombu's AMQP 0-9-1 conventions (Celery 5.7 on RabbitMQ), as plain data: no client library here.
//!
//! - Declarations: the exchanges Celery uses (`celery` and every task queue's own direct exchange, `C.dq2` for
//!   worker-direct queues, the `celery.pidbox` fanout, the `reply.celery.pidbox` direct exchange, the `celeryev`
//!   topic) and the queues it declares, with their flags and arguments (`x-max-priority`, `x-queue-type`, and the
//!   `x-expires`/`x-message-ttl` of pidbox, reply and event queues).
//! - Messages: a [`crate::Envelope`] as AMQP message parts ([`Publish`]: exchange, routing key, [`AmqpProperties`]
//!   with the protocol headers as an ordered, typed [`FieldTable`], and the raw body), and a delivery back to a
//!   [`crate::Message`]. Header values are typed as py-amqp types them (`str` → `S`, `int` → `I` or `L`, `float` →
//!   `d`, `bool` → `t`, `None` → `V`, `list` → `A`, `dict` → `F`).
//! - [`kombu_json`]: a delivery as kombu's JSON envelope (base64 body), the form dead letters keep so a message can
//!   be read back with [`crate::Message::decode`] whatever broker it came from.
//!
//! Everything here is checked against captures of real Celery 5.7 on RabbitMQ 3.10 (`tests/golden_amqp.rs`, fixtures
//! in `../shared/fixtures/celery-wire-amqp/`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Number, Value, json};
use std::time::Duration;

use crate::envelope::{CONTENT_TYPE_JSON, Envelope, EnvelopeError, Message, decompress};
use crate::json::to_py_json;
use crate::keys::{EVENT_EXCHANGE, PIDBOX_EXCHANGE, REPLY_EXCHANGE};

/// The exchange Celery's worker-direct queues (`<node>.dq2`) are bound to, with the node name as routing key.
pub const WORKER_DIRECT_EXCHANGE: &str = "C.dq2";
/// The default exchange: every queue is bound to it under its own name. Celery publishes task messages for queues on
/// direct exchanges here (routing key = queue name).
pub const DEFAULT_EXCHANGE: &str = "";
/// `x-expires` and `x-message-ttl` of a worker's pidbox mailbox and a requester's reply queue (kombu's `Mailbox`).
pub const PIDBOX_QUEUE_EXPIRES: Duration = Duration::from_secs(10);
pub const PIDBOX_MESSAGE_TTL: Duration = Duration::from_secs(300);
/// `x-expires` and `x-message-ttl` of an event receiver's (or the worker's gossip) `celeryev.<uuid>` queue.
pub const EVENT_QUEUE_EXPIRES: Duration = Duration::from_secs(60);
pub const EVENT_MESSAGE_TTL: Duration = Duration::from_secs(5);
/// The delivery mode of task messages (persistent).
pub const PERSISTENT: u8 = 2;

// ---------------------------------------------------------------------------------------------------------------
// Field tables
// ---------------------------------------------------------------------------------------------------------------

/// A value in an AMQP field table, as py-amqp writes and reads them.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t`
    Bool(bool),
    /// `I` (signed 32 bit): a Python int that fits.
    I32(i32),
    /// `L` from py-amqp, `l` from RabbitMQ and most other clients (signed 64 bit): a larger Python int.
    I64(i64),
    /// `d`
    F64(f64),
    /// `S` (long string) holding UTF-8.
    Str(String),
    /// `S` that is not UTF-8, or `x` (byte array).
    Bytes(Vec<u8>),
    /// `T`: seconds since the epoch (RabbitMQ's `x-death` times).
    Timestamp(u64),
    /// `V`: Python's `None`.
    Void,
    /// `A`
    Array(Vec<FieldValue>),
    /// `F`
    Table(FieldTable),
}

/// A field table with its keys in order (Python's dict order; the wire keeps it, RabbitMQ keeps it except when it
/// dead-letters a message, when it sorts the keys).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTable(pub Vec<(String, FieldValue)>);

impl FieldTable {
    pub fn new() -> FieldTable {
        FieldTable(Vec::new())
    }

    /// Set `key`, replacing an earlier value in place.
    pub fn insert(&mut self, key: &str, value: FieldValue) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A JSON object as py-amqp would encode the dict.
    pub fn from_json(map: &Map<String, Value>) -> FieldTable {
        FieldTable(
            map.iter()
                .map(|(k, v)| (k.clone(), FieldValue::from_json(v)))
                .collect(),
        )
    }

    /// The table as the JSON object a Python consumer gets.
    pub fn to_json(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect()
    }
}

impl FieldValue {
    /// py-amqp's choice of type for a JSON value.
    pub fn from_json(v: &Value) -> FieldValue {
        match v {
            Value::Null => FieldValue::Void,
            Value::Bool(b) => FieldValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => match i32::try_from(i) {
                    Ok(small) => FieldValue::I32(small),
                    Err(_) => FieldValue::I64(i),
                },
                // An integer above i64 (py-amqp refuses it) or a float.
                None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => FieldValue::Str(s.clone()),
            Value::Array(a) => FieldValue::Array(a.iter().map(FieldValue::from_json).collect()),
            Value::Object(m) => FieldValue::Table(FieldTable::from_json(m)),
        }
    }

    /// What a Python consumer sees, as JSON (non-UTF-8 strings lossily, non-finite floats as `null`).
    pub fn to_json(&self) -> Value {
        match self {
            FieldValue::Bool(b) => Value::Bool(*b),
            FieldValue::I32(i) => json!(i),
            FieldValue::I64(i) => json!(i),
            FieldValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            FieldValue::Str(s) => Value::String(s.clone()),
            FieldValue::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
            FieldValue::Timestamp(t) => json!(t),
            FieldValue::Void => Value::Null,
            FieldValue::Array(a) => Value::Array(a.iter().map(FieldValue::to_json).collect()),
            FieldValue::Table(t) => Value::Object(t.to_json()),
        }
    }

    /// The type tag py-amqp writes for this value (`L` for 64-bit integers; RabbitMQ itself writes `l`).
    pub fn type_tag(&self) -> char {
        match self {
            FieldValue::Bool(_) => 't',
            FieldValue::I32(_) => 'I',
            FieldValue::I64(_) => 'L',
            FieldValue::F64(_) => 'd',
            FieldValue::Str(_) => 'S',
            FieldValue::Bytes(_) => 'x',
            FieldValue::Timestamp(_) => 'T',
            FieldValue::Void => 'V',
            FieldValue::Array(_) => 'A',
            FieldValue::Table(_) => 'F',
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Declarations
// ---------------------------------------------------------------------------------------------------------------

/// AMQP exchange types Celery uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExchangeKind {
    #[default]
    Direct,
    Fanout,
    Topic,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
        }
    }
}

/// An `exchange.declare` (never auto-delete, no arguments: none of Celery's have any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeDecl {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
}

/// A `queue.declare`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDecl {
    pub name: String,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// A `queue.bind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindDecl {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
}

/// What kind of queue task queues are (Celery's `task_default_queue_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

/// The Celery settings that shape task-queue declarations. They must match what other Celery processes declare
/// for the same queues: RabbitMQ refuses a redeclaration with other arguments (`PRECONDITION_FAILED`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskQueueOptions {
    /// `task_queue_max_priority`: `x-max-priority` on every task queue (worker-direct ones included).
    pub max_priority: Option<u8>,
    /// `task_default_queue_type`: `x-queue-type` on task queues (worker-direct queues stay classic).
    pub queue_type: QueueType,
    /// `task_default_exchange_type`: the kind of each task queue's own exchange (worker-direct queues stay on the
    /// direct `C.dq2`). With quorum queues and a non-direct exchange, countdowns and ETAs go through RabbitMQ's
    /// native delayed delivery ([`delayed_delivery_topology`]).
    pub exchange_type: ExchangeKind,
}

impl TaskQueueOptions {
    /// The options from Celery's settings as written in its configuration and on our command lines:
    /// `task_queue_max_priority`, `task_default_queue_type` (`classic` or `quorum`) and `task_default_exchange_type`
    /// (`direct`, `topic` or `fanout`). Anything else is an error naming the setting.
    pub fn from_settings(
        max_priority: Option<u8>,
        queue_type: &str,
        exchange_type: &str,
    ) -> Result<TaskQueueOptions, String> {
        let queue_type = match queue_type.to_ascii_lowercase().as_str() {
            "classic" => QueueType::Classic,
            "quorum" => QueueType::Quorum,
            other => {
                return Err(format!(
                    "task_default_queue_type must be classic or quorum, not {other:?}"
                ));
            }
        };
        let exchange_type = match exchange_type.to_ascii_lowercase().as_str() {
            "direct" => ExchangeKind::Direct,
            "topic" => ExchangeKind::Topic,
            "fanout" => ExchangeKind::Fanout,
            other => {
                return Err(format!(
                    "task_default_exchange_type must be direct, topic or fanout, not {other:?}"
                ));
            }
        };
        Ok(TaskQueueOptions {
            max_priority,
            queue_type,
            exchange_type,
        })
    }

    /// Celery 5.5+'s native delayed delivery applies: quorum queues on a non-direct exchange (with a direct
    /// exchange Celery's worker only warns, and countdowns are held by the worker as on classic queues).
    pub fn native_delayed_delivery(&self) -> bool {
        self.queue_type == QueueType::Quorum && self.exchange_type != ExchangeKind::Direct
    }
}

/// The node name of a worker-direct queue `<node>.dq2`.
pub fn worker_direct_node(queue: &str) -> Option<&str> {
    queue.strip_suffix(".dq2").filter(|n| !n.is_empty())
}

/// The exchange, queue and binding Celery declares for a task queue: `Queue(q, Exchange(q, 'direct'), q)`, or for a
/// worker-direct queue `Queue('<node>.dq2', Exchange('C.dq2', 'direct'), '<node>')`. All durable.
pub fn task_queue(queue: &str, opts: &TaskQueueOptions) -> (ExchangeDecl, QueueDecl, BindDecl) {
    let direct = worker_direct_node(queue);
    let (exchange, routing_key) = match direct {
        Some(node) => (WORKER_DIRECT_EXCHANGE, node),
        None => (queue, queue),
    };
    let mut arguments = FieldTable::new();
    if let Some(p) = opts.max_priority {
        arguments.insert("x-max-priority", FieldValue::I32(i32::from(p)));
    }
    if opts.queue_type == QueueType::Quorum && direct.is_none() {
        arguments.insert("x-queue-type", FieldValue::Str("quorum".into()));
    }
    (
        ExchangeDecl {
            name: exchange.to_string(),
            kind: if direct.is_some() {
                ExchangeKind::Direct
            } else {
                opts.exchange_type
            },
            durable: true,
        },
        QueueDecl {
            name: queue.to_string(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments,
        },
        BindDecl {
            queue: queue.to_string(),
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
        },
    )
}

/// Where a task message for `queue` is published: a queue on a direct exchange (and a worker-direct queue) through
/// the default exchange with the queue's name as routing key; a queue on a topic or fanout exchange through its
/// own exchange; with native delayed delivery and a countdown of a second or more, to `celery_delayed_27` with the
/// countdown's bits in the routing key ([`delayed_routing_key`]), as Celery 5.5+ publishes it.
/// `countdown_secs` is how long until the message's ETA.
pub fn task_publish_target(
    queue: &str,
    opts: &TaskQueueOptions,
    countdown_secs: Option<f64>,
) -> (String, String) {
    if worker_direct_node(queue).is_some() || opts.exchange_type == ExchangeKind::Direct {
        return (DEFAULT_EXCHANGE.to_string(), queue.to_string());
    }
    // Whole seconds, rounded: a countdown of 2 s measured a moment after its ETA was set is 1.99 s, and is meant
    // as 2 (Celery takes the int of a countdown it is given).
    if opts.native_delayed_delivery()
        && let Some(key) = countdown_secs
            .map(f64::round)
            .filter(|c| *c >= 1.0)
            .and_then(|c| delayed_routing_key(c as u64, queue))
    {
        return (delayed_exchange(DELAYED_LEVELS - 1), key);
    }
    (queue.to_string(), queue.to_string())
}

/// Levels of native delayed delivery: queues `celery_delayed_0` to `celery_delayed_27`, level N holding a message
/// 2^N seconds; the longest delay is 2^28 - 1 seconds (about 8.5 years).
pub const DELAYED_LEVELS: u32 = 28;
/// Where a delayed message comes out of the levels, to be routed back to its queue by the `#.<routing key>` binding.
pub const DELAYED_DELIVERY_EXCHANGE: &str = "celery_delayed_delivery";

/// The exchange (and queue) of delay level `level`.
pub fn delayed_exchange(level: u32) -> String {
    format!("celery_delayed_{level}")
}

/// Celery's routing key for a delayed message: the countdown in whole seconds as 28 binary digits separated by
/// dots, then the original routing key (`60 s` on `celery`: `0.0.…0.1.1.1.1.0.0.celery`). `None` for 0 or a delay
/// beyond the levels.
pub fn delayed_routing_key(countdown_secs: u64, routing_key: &str) -> Option<String> {
    if countdown_secs == 0 || countdown_secs >= 1 << DELAYED_LEVELS {
        return None;
    }
    let bits: Vec<String> = (0..DELAYED_LEVELS)
        .rev()
        .map(|b| ((countdown_secs >> b) & 1).to_string())
        .collect();
    Some(format!("{}.{routing_key}", bits.join(".")))
}

/// An `exchange.bind`: messages published to `source` that match `routing_key` also go to `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeBindDecl {
    pub destination: String,
    pub source: String,
    pub routing_key: String,
}

/// Everything Celery's worker declares for native delayed delivery (its `DelayedDelivery` bootstep, kombu's
/// `declare_native_delayed_delivery_exchanges_and_queues`): for each level N from 27 down to 0, a durable topic
/// exchange and a quorum queue `celery_delayed_N` holding messages 2^N s (`x-message-ttl`, `x-overflow`
/// reject-publish) and dead-lettering them at least once to level N-1's exchange (level 0's: to
/// `celery_delayed_delivery`); the queue takes the keys whose bit N is 1, the next level's exchange those whose bit N
/// is 0. Plus the durable topic exchange `celery_delayed_delivery`.
pub struct DelayedTopology {
    pub exchanges: Vec<ExchangeDecl>,
    pub queues: Vec<QueueDecl>,
    pub queue_bindings: Vec<BindDecl>,
    pub exchange_bindings: Vec<ExchangeBindDecl>,
}

pub fn delayed_delivery_topology() -> DelayedTopology {
    let topic = |name: String| ExchangeDecl {
        name,
        kind: ExchangeKind::Topic,
        durable: true,
    };
    let mut t = DelayedTopology {
        exchanges: vec![topic(DELAYED_DELIVERY_EXCHANGE.to_string())],
        queues: Vec::new(),
        queue_bindings: Vec::new(),
        exchange_bindings: Vec::new(),
    };
    for level in (0..DELAYED_LEVELS).rev() {
        let name = delayed_exchange(level);
        let next = if level == 0 {
            DELAYED_DELIVERY_EXCHANGE.to_string()
        } else {
            delayed_exchange(level - 1)
        };
        let ttl_ms = (1i64 << level) * 1000;
        let mut arguments = FieldTable::new();
        arguments.insert("x-queue-type", FieldValue::Str("quorum".into()));
        arguments.insert("x-overflow", FieldValue::Str("reject-publish".into()));
        arguments.insert(
            "x-message-ttl",
            match i32::try_from(ttl_ms) {
                Ok(small) => FieldValue::I32(small),
                Err(_) => FieldValue::I64(ttl_ms),
            },
        );
        arguments.insert("x-dead-letter-exchange", FieldValue::Str(next.clone()));
        arguments.insert(
            "x-dead-letter-strategy",
            FieldValue::Str("at-least-once".into()),
        );
        let stars = "*.".repeat((DELAYED_LEVELS - 1 - level) as usize);
        t.exchanges.push(topic(name.clone()));
        t.queues.push(QueueDecl {
            name: name.clone(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments,
        });
        t.queue_bindings.push(BindDecl {
            queue: name.clone(),
            exchange: name.clone(),
            routing_key: format!("{stars}1.#"),
        });
        t.exchange_bindings.push(ExchangeBindDecl {
            destination: next,
            source: name,
            routing_key: format!("{stars}0.#"),
        });
    }
    t
}

/// The bindings that bring delayed messages back to a task queue (kombu's
/// `bind_queue_to_native_delayed_delivery_exchange`): `celery_delayed_delivery` to the queue's exchange, and the
/// queue to its exchange, both with `#.<routing key>`.
pub fn delayed_return_bindings(queue: &str) -> (ExchangeBindDecl, BindDecl) {
    let key = format!("#.{queue}");
    (
        ExchangeBindDecl {
            destination: queue.to_string(),
            source: DELAYED_DELIVERY_EXCHANGE.to_string(),
            routing_key: key.clone(),
        },
        BindDecl {
            queue: queue.to_string(),
            exchange: queue.to_string(),
            routing_key: key,
        },
    )
}

/// The declaration of an exchange by name: Celery's own ones as Celery declares them (`celery.pidbox` fanout and
/// `reply.celery.pidbox` direct, both non-durable; `celeryev` topic and `C.dq2` direct, both durable); any other
/// name gets `otherwise` (the kind the caller's operation implies: direct for mailboxes, topic for broadcasts),
/// non-durable.
pub fn exchange(name: &str, otherwise: ExchangeKind) -> ExchangeDecl {
    let (kind, durable) = match name {
        PIDBOX_EXCHANGE => (ExchangeKind::Fanout, false),
        REPLY_EXCHANGE => (ExchangeKind::Direct, false),
        EVENT_EXCHANGE => (ExchangeKind::Topic, true),
        WORKER_DIRECT_EXCHANGE => (ExchangeKind::Direct, true),
        _ => (otherwise, false),
    };
    ExchangeDecl {
        name: name.to_string(),
        kind,
        durable,
    }
}

/// The declaration of a queue bound to a fanout, topic or reply exchange: kombu's pidbox mailboxes and reply queues
/// (`*.celery.pidbox`: exclusive, auto-delete, `x-expires` 10 s, `x-message-ttl` 300 s) and event queues
/// (`celeryev.*`: exclusive, auto-delete, `x-expires` 60 s, `x-message-ttl` 5 s), as Celery declares them; any other
/// queue: non-durable, auto-delete, not exclusive, `x-expires` = `expires`.
pub fn bound_queue(queue: &str, expires: Duration) -> QueueDecl {
    let ms = |d: Duration| FieldValue::I32(i32::try_from(d.as_millis()).unwrap_or(i32::MAX));
    let mut arguments = FieldTable::new();
    let exclusive = if queue.ends_with(".celery.pidbox") {
        arguments.insert("x-expires", ms(PIDBOX_QUEUE_EXPIRES));
        arguments.insert("x-message-ttl", ms(PIDBOX_MESSAGE_TTL));
        true
    } else if queue.starts_with("celeryev.") {
        arguments.insert("x-expires", ms(EVENT_QUEUE_EXPIRES));
        arguments.insert("x-message-ttl", ms(EVENT_MESSAGE_TTL));
        true
    } else {
        arguments.insert("x-expires", ms(expires.max(Duration::from_millis(1))));
        false
    };
    QueueDecl {
        name: queue.to_string(),
        durable: false,
        exclusive,
        auto_delete: true,
        arguments,
    }
}

/// A durable queue to keep unprocessable messages in, reached through the default exchange under its name.
pub fn dead_letter_queue(name: &str) -> QueueDecl {
    QueueDecl {
        name: name.to_string(),
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::new(),
    }
}

/// How long an `rpc://` reply queue lives unused (Celery's `result_expires`, one day by default, as `x-expires`).
pub const RPC_REPLY_QUEUE_EXPIRES: Duration = Duration::from_secs(86_400);

/// The reply queue of a client using Celery's `rpc://` result backend, named after the client (its `oid`, the
/// `reply_to` of every task it sends): durable, auto-delete, not exclusive, `x-expires` one day, reached through the
/// default exchange only. Declared by the client before it sends, so no result is published to a missing queue.
pub fn rpc_reply_queue(name: &str) -> QueueDecl {
    let mut arguments = FieldTable::new();
    arguments.insert(
        "x-expires",
        FieldValue::I32(RPC_REPLY_QUEUE_EXPIRES.as_millis() as i32),
    );
    QueueDecl {
        name: name.to_string(),
        durable: true,
        exclusive: false,
        auto_delete: true,
        arguments,
    }
}

/// A result meta sent by the `rpc://` backend: to the default exchange with the task's `reply_to` as routing key,
/// `correlation_id` = the task id, transient (`delivery_mode` 1), priority 0, an empty headers table, JSON.
pub fn rpc_result(task_id: &str, reply_to: &str, meta: &[u8]) -> Publish {
    Publish {
        exchange: DEFAULT_EXCHANGE.to_string(),
        routing_key: reply_to.to_string(),
        properties: AmqpProperties {
            content_type: Some(CONTENT_TYPE_JSON.to_string()),
            content_encoding: Some("utf-8".to_string()),
            headers: Some(FieldTable::new()),
            delivery_mode: Some(1),
            priority: Some(0),
            correlation_id: Some(task_id.to_string()),
            ..AmqpProperties::default()
        },
        body: meta.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------------------------

/// The basic-class content properties of an AMQP message (what py-amqp calls `properties`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AmqpProperties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// `application_headers`: the protocol v2 headers.
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    /// Milliseconds as a decimal string.
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    pub timestamp: Option<u64>,
    /// The `type` property.
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
}

impl AmqpProperties {
    /// The properties as kombu's `message.properties` (present ones only, in the AMQP property order).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put("content_type", self.content_type.clone().map(Value::String));
        put(
            "content_encoding",
            self.content_encoding.clone().map(Value::String),
        );
        put(
            "application_headers",
            self.headers.as_ref().map(|h| Value::Object(h.to_json())),
        );
        put("delivery_mode", self.delivery_mode.map(|v| json!(v)));
        put("priority", self.priority.map(|v| json!(v)));
        put(
            "correlation_id",
            self.correlation_id.clone().map(Value::String),
        );
        put("reply_to", self.reply_to.clone().map(Value::String));
        put("expiration", self.expiration.clone().map(Value::String));
        put("message_id", self.message_id.clone().map(Value::String));
        put("timestamp", self.timestamp.map(|v| json!(v)));
        put("type", self.kind.clone().map(Value::String));
        put("user_id", self.user_id.clone().map(Value::String));
        put("app_id", self.app_id.clone().map(Value::String));
        m
    }
}

/// A message to `basic.publish`.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub exchange: String,
    pub routing_key: String,
    pub properties: AmqpProperties,
    pub body: Vec<u8>,
}

/// The AMQP parts of an envelope published to `exchange` with `routing_key`, as kombu's `Producer.publish` makes
/// them: JSON/UTF-8, the headers as `application_headers` (always present, possibly empty), the envelope's delivery
/// mode and priority, `correlation_id` and `reply_to` when set (other leading properties have no AMQP slot and are
/// dropped, as py-amqp drops them), and `expiration` in milliseconds.
pub fn publish(envelope: &Envelope, exchange: &str, routing_key: &str) -> Publish {
    let prop = |k: &str| {
        envelope
            .leading_properties
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Publish {
        exchange: exchange.to_string(),
        routing_key: routing_key.to_string(),
        properties: AmqpProperties {
            content_type: Some(CONTENT_TYPE_JSON.to_string()),
            content_encoding: Some("utf-8".to_string()),
            headers: Some(FieldTable::from_json(&envelope.headers)),
            delivery_mode: Some(envelope.delivery_mode),
            priority: Some(envelope.priority),
            correlation_id: prop("correlation_id"),
            reply_to: prop("reply_to"),
            expiration: envelope.expiration_ms.map(|ms| ms.to_string()),
            ..AmqpProperties::default()
        },
        body: envelope.body.clone(),
    }
}

/// Where a delivered message came from (`basic.deliver` or `basic.get-ok`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    /// The tag the transport settles the message with (unique across its channels).
    pub tag: String,
}

/// A delivered message as a [`Message`]: headers from `application_headers`, the body decompressed per
/// `headers.compression`, the priority as sent (AMQP priorities are not clamped to Redis's 0-9; missing = 0), and
/// `properties` as kombu's (plus `delivery_info` and `delivery_tag`, as on Redis).
pub fn message(
    info: &DeliveryInfo,
    props: &AmqpProperties,
    body: &[u8],
) -> Result<Message, EnvelopeError> {
    let headers = props
        .headers
        .as_ref()
        .map(FieldTable::to_json)
        .unwrap_or_default();
    let body = match headers.get("compression").and_then(Value::as_str) {
        Some(kind) => decompress(kind, body)?,
        None => body.to_vec(),
    };
    let mut properties = props.to_json();
    properties.remove("application_headers");
    properties.insert(
        "delivery_info".into(),
        json!({"exchange": info.exchange, "routing_key": info.routing_key, "redelivered": info.redelivered}),
    );
    properties.insert("delivery_tag".into(), json!(info.tag));
    Ok(Message {
        headers,
        properties,
        content_type: props
            .content_type
            .clone()
            .unwrap_or_else(|| CONTENT_TYPE_JSON.to_string()),
        content_encoding: props
            .content_encoding
            .clone()
            .unwrap_or_else(|| "utf-8".to_string()),
        body,
        delivery_tag: info.tag.clone(),
        priority: props.priority.unwrap_or(0),
        exchange: info.exchange.clone(),
        routing_key: info.routing_key.clone(),
        redelivered: info.redelivered,
    })
}

/// A received message as an envelope to publish again (a move or a retry): body and headers as received, delivery
/// mode, priority (0 when it had none: an envelope always carries one, as kombu does unless `priority=None` is
/// passed explicitly), `correlation_id`, `reply_to`, and `expiration` in milliseconds.
pub fn envelope_of(msg: &Message) -> Envelope {
    let mut env = Envelope::new(
        msg.body.clone(),
        msg.headers.clone(),
        &msg.exchange,
        &msg.routing_key,
    );
    for key in ["correlation_id", "reply_to"] {
        if let Some(v) = msg.properties.get(key).filter(|v| v.is_string()) {
            env.leading_properties.insert(key.into(), v.clone());
        }
    }
    if let Some(mode) = msg.properties.get("delivery_mode").and_then(Value::as_u64) {
        env.delivery_mode = u8::try_from(mode).unwrap_or(2);
    }
    env.expiration_ms = msg
        .properties
        .get("expiration")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse().ok());
    env.priority = msg.priority;
    env
}

/// A delivery as kombu's JSON envelope (`body` base64, `content-type`, `content-encoding`, `headers`, `properties`
/// with `delivery_info`, `delivery_tag` and `body_encoding`), so it can be kept as text and read back with
/// [`Message::decode`]. The body is kept as it came (still compressed, possibly not JSON at all).
pub fn kombu_json(info: &DeliveryInfo, props: &AmqpProperties, body: &[u8]) -> Vec<u8> {
    let mut properties = props.to_json();
    let headers = properties
        .remove("application_headers")
        .unwrap_or_else(|| Value::Object(Map::new()));
    properties.insert(
        "delivery_info".into(),
        json!({"exchange": info.exchange, "routing_key": info.routing_key, "redelivered": info.redelivered}),
    );
    properties.insert("body_encoding".into(), json!("base64"));
    properties.insert("delivery_tag".into(), json!(info.tag));
    let mut env = Map::new();
    env.insert("body".into(), json!(B64.encode(body)));
    env.insert(
        "content-encoding".into(),
        json!(props.content_encoding.as_deref().unwrap_or("utf-8")),
    );
    env.insert(
        "content-type".into(),
        json!(props.content_type.as_deref().unwrap_or(CONTENT_TYPE_JSON)),
    );
    env.insert("headers".into(), headers);
    env.insert("properties".into(), Value::Object(properties));
    to_py_json(&Value::Object(env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_ints_are_typed_like_py_amqp() {
        let t = FieldTable::from_json(
            json!({"a": 1, "b": 134_217_728_000_i64, "c": 1.5, "d": null, "e": [true], "f": {}})
                .as_object()
                .unwrap(),
        );
        let tags: String = t.0.iter().map(|(_, v)| v.type_tag()).collect();
        assert_eq!(tags, "ILdVAF");
        assert_eq!(
            Value::Object(t.to_json()),
            json!({"a": 1, "b": 134_217_728_000_i64, "c": 1.5, "d": null, "e": [true], "f": {}})
        );
    }

    #[test]
    fn declarations_follow_celery() {
        let opts = TaskQueueOptions::from_settings(Some(10), "quorum", "direct").unwrap();
        assert!(TaskQueueOptions::from_settings(None, "stream", "direct").is_err());
        assert!(TaskQueueOptions::from_settings(None, "classic", "headers").is_err());
        let (ex, q, b) = task_queue("celery", &opts);
        assert_eq!(
            (ex.name.as_str(), ex.kind, ex.durable),
            ("celery", ExchangeKind::Direct, true)
        );
        assert!(q.durable && !q.exclusive && !q.auto_delete);
        assert_eq!(
            q.arguments.get("x-max-priority"),
            Some(&FieldValue::I32(10))
        );
        assert_eq!(
            q.arguments.get("x-queue-type"),
            Some(&FieldValue::Str("quorum".into()))
        );
        assert_eq!(b.routing_key, "celery");
        let (ex, q, b) = task_queue("capw@vm.dq2", &opts);
        assert_eq!(
            (ex.name.as_str(), b.routing_key.as_str()),
            ("C.dq2", "capw@vm")
        );
        assert!(
            q.arguments.get("x-queue-type").is_none(),
            "dq2 stays classic"
        );
        assert_eq!(
            exchange(PIDBOX_EXCHANGE, ExchangeKind::Topic).kind,
            ExchangeKind::Fanout
        );
        assert_eq!(
            exchange(EVENT_EXCHANGE, ExchangeKind::Direct).kind,
            ExchangeKind::Topic
        );
        let pidbox = bound_queue("w@h.celery.pidbox", Duration::from_secs(3600));
        assert!(pidbox.exclusive && pidbox.auto_delete && !pidbox.durable);
        assert_eq!(
            pidbox.arguments.get("x-expires"),
            Some(&FieldValue::I32(10_000))
        );
        let ev = bound_queue("celeryev.x", Duration::from_secs(3600));
        assert_eq!(
            ev.arguments.get("x-message-ttl"),
            Some(&FieldValue::I32(5_000))
        );
    }

    #[test]
    fn kombu_json_reads_back_as_the_same_message() {
        let mut env = Envelope::new(b"not json".to_vec(), Map::new(), "", "celery");
        env.headers.insert("task".into(), json!("t"));
        let p = publish(&env, "", "celery");
        let info = DeliveryInfo {
            exchange: String::new(),
            routing_key: "celery".into(),
            redelivered: true,
            tag: "1.7".into(),
        };
        let direct = message(&info, &p.properties, &p.body).unwrap();
        let back = Message::decode(&kombu_json(&info, &p.properties, &p.body), true).unwrap();
        assert_eq!(back.body, direct.body);
        assert_eq!(back.headers, direct.headers);
        assert_eq!(back.delivery_tag, "1.7");
        assert!(back.redelivered && direct.redelivered);
    }
}
