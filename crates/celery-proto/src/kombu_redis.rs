//! kombu's Redis transport and Celery's Redis result backend, as bytes and key names: everything about how Celery
//! lays messages out on Redis lives here, apart from the transport-neutral protocol.
//!
//! - Key and channel names: lists per priority bucket (`queue`, `queue\x06\x163`, ...), binding sets
//!   (`_kombu.binding.<exchange>`), `unacked`/`unacked_index`/`unacked_mutex`, fanout channels (`/{db}.<exchange>/<rk>`),
//!   result keys (`celery-task-meta-<id>`), topic patterns.
//! - The JSON envelope: [`crate::Envelope`] to kombu's JSON object with a base64 body and its properties
//!   (`delivery_tag`, `delivery_info`, `priority`, `body_encoding`), and back to a [`crate::Message`].
//! - What kombu stores about an unacknowledged message (`[message, exchange, routing_key]`) and how a message is
//!   restored (`redelivered`), readdressed or recognised as recordable (a string delivery tag).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use crate::envelope::{CONTENT_TYPE_JSON, Envelope, EnvelopeError, Message, decompress};
use crate::json::to_py_json;
use crate::keys::clamp_priority;

/// kombu 5.7's zset of binding deadlines for queues with `x-expires`.
pub const BINDING_DEADLINES: &str = "_kombu.binding_deadlines";

/// kombu's separator between a queue name and its priority step, and inside binding members.
pub const SEP: &str = "\x06\x16";

/// kombu's `PRIORITY_STEPS` for Redis: a message of priority p lives in the list of the largest step <= p.
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// Hash of unacknowledged messages (field = delivery tag, value = `[message, exchange, routing_key]`).
pub const UNACKED: &str = "unacked";
/// Zset of unacknowledged delivery tags, scored by the time the consumer received them.
pub const UNACKED_INDEX: &str = "unacked_index";
/// Lock taken while restoring expired unacknowledged messages.
pub const UNACKED_MUTEX: &str = "unacked_mutex";

/// The priority step (bucket) a priority falls into.
pub fn priority_step(priority: u8) -> u8 {
    let p = priority.min(9);
    *PRIORITY_STEPS.iter().rev().find(|s| **s <= p).unwrap_or(&0)
}

/// The Redis list holding messages of `queue` at `priority`: `queue` for bucket 0, `queue\x06\x16<step>` otherwise.
pub fn queue_key(queue: &str, priority: u8) -> String {
    match priority_step(priority) {
        0 => queue.to_string(),
        step => format!("{queue}{SEP}{step}"),
    }
}

/// The four lists of a queue, highest priority (bucket 0) first.
pub fn queue_keys(queue: &str) -> [String; 4] {
    PRIORITY_STEPS.map(|s| queue_key(queue, s))
}

/// BRPOP key order for several queues: priority-major, so priority beats queue order.
pub fn consume_keys<S: AsRef<str>>(queues: &[S]) -> Vec<String> {
    let mut keys = Vec::with_capacity(queues.len() * 4);
    for step in PRIORITY_STEPS {
        for q in queues {
            keys.push(queue_key(q.as_ref(), step));
        }
    }
    keys
}

/// The queue a BRPOP'd key belongs to (`key.rsplit(SEP, 1)[0]` when the suffix is a step).
pub fn queue_of_key(key: &str) -> &str {
    match key.rsplit_once(SEP) {
        Some((q, step)) if step.len() == 1 && step.as_bytes()[0].is_ascii_digit() => q,
        _ => key,
    }
}

/// kombu's own bookkeeping keys (`_kombu.binding.*`, `_kombu.binding_permanent.*`, `_kombu.binding_deadlines`):
/// never a queue, whatever their name ends with.
pub fn is_kombu_internal(key: &str) -> bool {
    key.starts_with("_kombu.")
}

/// The binding set of an exchange.
pub fn binding_key(exchange: &str) -> String {
    format!("_kombu.binding.{exchange}")
}

/// kombu 5.7's mirror of the binding set for queues without `x-expires`.
pub fn binding_permanent_key(exchange: &str) -> String {
    format!("_kombu.binding_permanent.{exchange}")
}

/// A member of a binding set: `routing_key SEP pattern SEP queue`.
pub fn binding_member(routing_key: &str, pattern: &str, queue: &str) -> String {
    format!("{routing_key}{SEP}{pattern}{SEP}{queue}")
}

/// Split a binding member back into (routing_key, pattern, queue).
pub fn parse_binding_member(member: &str) -> Option<(&str, &str, &str)> {
    let mut parts = member.splitn(3, SEP);
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// Fanout channel for `exchange` on database `db`, with the routing key appended when not empty.
pub fn fanout_channel(db: i64, exchange: &str, routing_key: &str) -> String {
    if routing_key.is_empty() {
        format!("/{db}.{exchange}")
    } else {
        format!("/{db}.{exchange}/{routing_key}")
    }
}

/// Result backend key of a task.
pub fn result_key(task_id: &str) -> String {
    format!("celery-task-meta-{task_id}")
}

/// kombu's `TopicExchange.key_to_pattern`: the regex string a topic binder stores.
pub fn topic_pattern(binding_key: &str) -> String {
    let escaped: String = binding_key
        .chars()
        .flat_map(|c| {
            let esc = !(c.is_alphanumeric() || c == '_' || c == '.' || c == '#' || c == '*');
            esc.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect();
    let words: Vec<String> = escaped
        .split('.')
        .map(|w| match w {
            "*" => r".*?[^\.]".to_string(),
            "#" => ".*?".to_string(),
            other => other.to_string(),
        })
        .collect();
    format!("^{}$", words.join(r"\."))
}

impl Message {
    /// Decode an envelope as stored in a queue or published on a channel.
    /// A missing delivery tag is tolerated only when `require_tag` is false (pub/sub messages).
    pub fn decode(raw: &[u8], require_tag: bool) -> Result<Message, EnvelopeError> {
        let value: Value =
            serde_json::from_slice(raw).map_err(|e| EnvelopeError::InvalidJson(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(EnvelopeError::NotAnObject);
        };
        let properties = match obj.remove("properties") {
            Some(Value::Object(p)) => p,
            _ => return Err(EnvelopeError::MissingProperties),
        };
        let delivery_tag = match properties.get("delivery_tag") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ if require_tag => return Err(EnvelopeError::MissingDeliveryTag),
            _ => String::new(),
        };
        let headers = match obj.remove("headers") {
            Some(Value::Object(h)) => h,
            _ => Map::new(),
        };
        let content_type = str_field(&obj, "content-type")
            .unwrap_or(CONTENT_TYPE_JSON)
            .to_string();
        let content_encoding = str_field(&obj, "content-encoding")
            .unwrap_or("utf-8")
            .to_string();
        let body_text = match obj.get("body") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Null) | None => return Err(EnvelopeError::MissingBody),
            Some(_) => return Err(EnvelopeError::MissingBody),
        };
        let body = match properties.get("body_encoding").and_then(Value::as_str) {
            Some(enc) if enc.eq_ignore_ascii_case("base64") => B64
                .decode(body_text.trim())
                .map_err(|e| EnvelopeError::BadBase64(e.to_string()))?,
            Some(enc) if !enc.eq_ignore_ascii_case("utf-8") => {
                return Err(EnvelopeError::UnsupportedBodyEncoding(enc.to_string()));
            }
            _ => body_text.as_bytes().to_vec(),
        };
        let body = match headers.get("compression").and_then(Value::as_str) {
            Some(kind) => decompress(kind, &body)?,
            None => body,
        };
        let priority = properties.get("priority").map(priority_of).unwrap_or(0);
        let info = properties.get("delivery_info").and_then(Value::as_object);
        let exchange = info
            .and_then(|i| str_field(i, "exchange"))
            .unwrap_or("")
            .to_string();
        let routing_key = info
            .and_then(|i| str_field(i, "routing_key"))
            .unwrap_or("")
            .to_string();
        let redelivered = headers
            .get("redelivered")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || info
                .and_then(|i| i.get("redelivered"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        Ok(Message {
            headers,
            properties,
            content_type,
            content_encoding,
            body,
            delivery_tag,
            priority,
            exchange,
            routing_key,
            redelivered,
        })
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// kombu's `_get_message_priority`: `int()` of the value, clamped; anything else is 0.
fn priority_of(v: &Value) -> u8 {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(clamp_priority)
            .unwrap_or(0),
        Value::String(s) => s.trim().parse::<i64>().map(clamp_priority).unwrap_or(0),
        _ => 0,
    }
}

impl Envelope {
    /// The envelope as a JSON value with kombu's key order.
    pub fn to_value(&self) -> Value {
        let mut props = self.leading_properties.clone();
        props.insert("delivery_mode".into(), json!(self.delivery_mode));
        if let Some(ms) = self.expiration_ms {
            props.insert("expiration".into(), json!(ms.to_string()));
        }
        props.insert(
            "delivery_info".into(),
            json!({"exchange": self.exchange, "routing_key": self.routing_key}),
        );
        props.insert("priority".into(), json!(self.priority));
        props.insert("body_encoding".into(), json!("base64"));
        props.insert("delivery_tag".into(), json!(self.delivery_tag));
        let mut env = Map::new();
        env.insert("body".into(), json!(B64.encode(&self.body)));
        env.insert("content-encoding".into(), json!("utf-8"));
        env.insert("content-type".into(), json!(CONTENT_TYPE_JSON));
        env.insert("headers".into(), Value::Object(self.headers.clone()));
        env.insert("properties".into(), Value::Object(props));
        Value::Object(env)
    }

    /// The bytes to LPUSH or PUBLISH.
    pub fn encode(&self) -> Vec<u8> {
        to_py_json(&self.to_value())
    }
}

/// Add the `redelivered` flags kombu sets when it puts a message back (`headers.redelivered` and
/// `properties.delivery_info.redelivered`, each only if that object exists). Returns the new bytes.
pub fn mark_redelivered(raw: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut value: Value =
        serde_json::from_slice(raw).map_err(|e| EnvelopeError::InvalidJson(e.to_string()))?;
    let obj = value.as_object_mut().ok_or(EnvelopeError::NotAnObject)?;
    if let Some(Value::Object(h)) = obj.get_mut("headers") {
        h.insert("redelivered".into(), Value::Bool(true));
    }
    if let Some(Value::Object(p)) = obj.get_mut("properties")
        && let Some(Value::Object(info)) = p.get_mut("delivery_info")
    {
        info.insert("redelivered".into(), Value::Bool(true));
    }
    Ok(to_py_json(&value))
}

/// The message's delivery tag when it is a non-empty JSON string: what kombu (and the pop-and-record script) need to
/// record a message as unacknowledged. Reads only `properties.delivery_tag`, not the rest of the envelope.
pub fn string_delivery_tag(raw: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Props {
        delivery_tag: Option<Value>,
    }
    #[derive(serde::Deserialize)]
    struct Env {
        properties: Option<Props>,
    }
    match serde_json::from_slice::<Env>(raw) {
        Ok(Env {
            properties:
                Some(Props {
                    delivery_tag: Some(Value::String(s)),
                }),
        }) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// kombu's value in the `unacked` hash: `[message, exchange, routing_key]`, the message embedded as it was.
pub fn unacked_entry(raw: &[u8], exchange: &str, routing_key: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(raw.len() + 64);
    value.push(b'[');
    value.extend_from_slice(raw);
    value.extend_from_slice(b", ");
    value.extend_from_slice(&to_py_json(exchange));
    value.extend_from_slice(b", ");
    value.extend_from_slice(&to_py_json(routing_key));
    value.push(b']');
    value
}

/// An `unacked` entry read back, ready to be restored.
#[derive(Debug, Clone, PartialEq)]
pub struct UnackedEntry {
    /// The message with `redelivered` set, as it goes back into a list.
    pub message: Vec<u8>,
    pub exchange: String,
    pub routing_key: String,
    pub priority: u8,
}

impl UnackedEntry {
    /// Parse `[message, exchange, routing_key]`; `None` when the entry is not of that shape.
    pub fn parse(stored: &[u8]) -> Option<UnackedEntry> {
        let Ok(Value::Array(parts)) = serde_json::from_slice::<Value>(stored) else {
            return None;
        };
        let (Some(msg), Some(exchange), Some(rk)) = (parts.first(), parts.get(1), parts.get(2))
        else {
            return None;
        };
        let message = mark_redelivered(&to_py_json(msg)).ok()?;
        let priority = msg
            .get("properties")
            .and_then(|p| p.get("priority"))
            .and_then(Value::as_i64)
            .map(clamp_priority)
            .unwrap_or(0);
        Some(UnackedEntry {
            message,
            exchange: exchange.as_str().unwrap_or("").to_string(),
            routing_key: rk.as_str().unwrap_or("").to_string(),
            priority,
        })
    }
}

/// The queue an `unacked` entry belongs to: its routing key (Celery's queues are bound on the default or a direct
/// exchange under their own name), read without decoding the embedded message's body.
pub fn unacked_queue(stored: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Entry(serde::de::IgnoredAny, serde::de::IgnoredAny, Value);
    let Entry(_, _, rk) = serde_json::from_slice(stored).ok()?;
    rk.as_str().filter(|q| !q.is_empty()).map(str::to_string)
}

/// The same message addressed to another queue on the default exchange, with a fresh delivery tag (a move by the
/// coordinator: the old tag belongs to the old delivery).
pub fn readdress(raw: &[u8], queue: &str) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(raw).ok()?;
    let props = v.get_mut("properties")?.as_object_mut()?;
    props.insert(
        "delivery_info".into(),
        json!({"exchange": "", "routing_key": queue}),
    );
    props.insert(
        "delivery_tag".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    Some(to_py_json(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_kombu() {
        let want = [0, 0, 0, 3, 3, 3, 6, 6, 6, 9];
        for p in 0..=9u8 {
            assert_eq!(priority_step(p), want[p as usize], "priority {p}");
        }
        assert_eq!(clamp_priority(50), 9);
        assert_eq!(clamp_priority(-3), 0);
        assert_eq!(queue_key("longtail", 9).as_bytes(), b"longtail\x06\x169");
        assert_eq!(queue_key("longtail", 5), "longtail\x06\x163");
        assert_eq!(queue_key("longtail", 2), "longtail");
    }

    #[test]
    fn consume_order_is_priority_major() {
        let keys = consume_keys(&["A", "B"]);
        let want = [
            "A",
            "B",
            "A\x06\x163",
            "B\x06\x163",
            "A\x06\x166",
            "B\x06\x166",
            "A\x06\x169",
            "B\x06\x169",
        ];
        assert_eq!(keys, want);
        for k in &keys {
            assert!(["A", "B"].contains(&queue_of_key(k)));
        }
        assert_eq!(queue_of_key("w1@vm.dq2"), "w1@vm.dq2");
    }

    #[test]
    fn bindings_and_channels() {
        assert_eq!(
            binding_member("celery", "", "celery"),
            "celery\x06\x16\x06\x16celery"
        );
        assert_eq!(
            parse_binding_member("\x06\x16\x06\x16w1@vm.celery.pidbox"),
            Some(("", "", "w1@vm.celery.pidbox"))
        );
        assert_eq!(fanout_channel(0, "celery.pidbox", ""), "/0.celery.pidbox");
        assert_eq!(
            fanout_channel(3, "celeryev", "worker.heartbeat"),
            "/3.celeryev/worker.heartbeat"
        );
    }

    #[test]
    fn topic_patterns_match_kombu() {
        // The table of celery-wire.md section 3.4, computed with kombu 5.6.2.
        let cases = [
            ("worker.#", r"^worker\..*?$"),
            ("#", r"^.*?$"),
            ("*.x", r"^.*?[^\.]\.x$"),
            ("a.*.c", r"^a\..*?[^\.]\.c$"),
            ("a-b.c", r"^a\-b\.c$"),
        ];
        for (key, want) in cases {
            assert_eq!(topic_pattern(key), want, "pattern of {key}");
        }
    }

    #[test]
    fn unacked_entries_round_trip_and_tags_are_read_alone() {
        let raw = br#"{"body": "", "headers": {}, "properties": {"delivery_tag": "t1", "priority": 7, "delivery_info": {"exchange": "", "routing_key": "q"}}}"#;
        assert_eq!(string_delivery_tag(raw).as_deref(), Some("t1"));
        assert_eq!(
            string_delivery_tag(br#"{"properties": {"delivery_tag": 5}}"#),
            None
        );
        assert_eq!(string_delivery_tag(b"garbage"), None);
        let entry = unacked_entry(raw, "", "q");
        let back = UnackedEntry::parse(&entry).expect("entry");
        assert_eq!(
            (
                back.exchange.as_str(),
                back.routing_key.as_str(),
                back.priority
            ),
            ("", "q", 7)
        );
        let m: Value = serde_json::from_slice(&back.message).unwrap();
        assert_eq!(m["properties"]["delivery_info"]["redelivered"], true);
        assert!(UnackedEntry::parse(b"[1]").is_none());
        assert_eq!(unacked_queue(&entry).as_deref(), Some("q"));
        assert_eq!(unacked_queue(b"[1, 2]"), None);
        assert_eq!(unacked_queue(b"not json"), None);
        let moved: Value = serde_json::from_slice(&readdress(raw, "w1@h.dq2").unwrap()).unwrap();
        assert_eq!(
            moved["properties"]["delivery_info"]["routing_key"],
            "w1@h.dq2"
        );
        assert_ne!(moved["properties"]["delivery_tag"], "t1");
    }
}
