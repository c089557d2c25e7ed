//! Celery task messages: protocol v2 (headers + `[args, kwargs, embed]` body) and v1 (everything in the body).
//!
//! [`TaskMessage::from_message`] accepts both, as the Celery worker does (v2 when `headers.task` exists, otherwise
//! the body's `task`); [`TaskRequest`] builds a v2 message exactly like Python's `send_task`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::envelope::{Envelope, EnvelopeError, Message};
use crate::json::to_py_json;
use crate::pyrepr::{REPR_MAXLEN, repr_args, repr_kwargs, truncate};
use crate::time::{isoformat, parse_iso};

/// Why a message is not a valid task (Celery: `InvalidTaskError`, or an unknown message).
#[derive(Debug, thiserror::Error)]
pub enum InvalidTask {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("message names no task (neither headers.task nor body.task)")]
    NoTaskName,
    #[error("task body has the wrong shape: {0}")]
    BadBody(String),
    #[error("invalid {field} {value:?}: not an ISO-8601 date-time")]
    BadTime { field: &'static str, value: String },
}

/// The embedded workflow of a v2 body: callbacks (link), errbacks (link_error), chain (reversed) and chord.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embed {
    pub callbacks: Vec<Value>,
    pub errbacks: Vec<Value>,
    pub chain: Vec<Value>,
    pub chord: Option<Value>,
}

impl Embed {
    fn from_value(v: Option<&Value>) -> Embed {
        let list = |k: &str| {
            v.and_then(|e| e.get(k))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        Embed {
            callbacks: list("callbacks"),
            errbacks: list("errbacks"),
            chain: list("chain"),
            chord: v
                .and_then(|e| e.get("chord"))
                .filter(|c| !c.is_null())
                .cloned(),
        }
    }

    /// The embed object as Python writes it (`null` for empty lists).
    pub fn to_value(&self) -> Value {
        let opt = |l: &Vec<Value>| {
            if l.is_empty() {
                Value::Null
            } else {
                Value::Array(l.clone())
            }
        };
        json!({
            "callbacks": opt(&self.callbacks),
            "errbacks": opt(&self.errbacks),
            "chain": opt(&self.chain),
            "chord": self.chord.clone().unwrap_or(Value::Null),
        })
    }
}

/// A decoded task request, whichever protocol it came in.
#[derive(Debug, Clone)]
pub struct TaskMessage {
    pub protocol: u8,
    pub id: String,
    pub name: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub embed: Embed,
    pub eta: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub retries: u32,
    /// `(hard, soft)` seconds, Celery's `timelimit` order.
    pub time_limit: (Option<f64>, Option<f64>),
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub group: Option<String>,
    pub group_index: Option<i64>,
    pub origin: Option<String>,
    pub shadow: Option<String>,
    /// `None` means "use the task's own setting".
    pub ignore_result: Option<bool>,
    pub argsrepr: String,
    pub kwargsrepr: String,
    /// All headers as received (v1: built from the body like Celery's `hybrid_to_proto2`).
    pub headers: Map<String, Value>,
}

fn opt_string(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn opt_time(v: Option<&Value>, field: &'static str) -> Result<Option<DateTime<Utc>>, InvalidTask> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_iso(s).map(Some).ok_or(InvalidTask::BadTime {
            field,
            value: s.clone(),
        }),
        Some(other) => Err(InvalidTask::BadTime {
            field,
            value: other.to_string(),
        }),
    }
}

fn opt_f64(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

impl TaskMessage {
    /// Decode a task from a broker message (v2 if `headers.task` exists, v1 otherwise).
    pub fn from_message(msg: &Message) -> Result<TaskMessage, InvalidTask> {
        let body = msg.json_body()?;
        if msg.headers.get("task").and_then(Value::as_str).is_some() {
            Self::from_v2(msg.headers.clone(), body)
        } else if body.get("task").and_then(Value::as_str).is_some() {
            Self::from_v1(&msg.headers, body)
        } else {
            Err(InvalidTask::NoTaskName)
        }
    }

    fn from_v2(headers: Map<String, Value>, body: Value) -> Result<TaskMessage, InvalidTask> {
        let Value::Array(parts) = body else {
            return Err(InvalidTask::BadBody(
                "protocol 2 body must be [args, kwargs, embed]".into(),
            ));
        };
        let mut it = parts.into_iter();
        let args = match it.next() {
            Some(Value::Array(a)) => a,
            Some(Value::Null) | None => Vec::new(),
            Some(other) => {
                return Err(InvalidTask::BadBody(format!(
                    "args must be a list, got {other}"
                )));
            }
        };
        let kwargs = match it.next() {
            Some(Value::Object(k)) => k,
            Some(Value::Null) | None => Map::new(),
            Some(other) => {
                return Err(InvalidTask::BadBody(format!(
                    "kwargs must be an object, got {other}"
                )));
            }
        };
        let embed = Embed::from_value(it.next().as_ref());
        Self::from_parts(2, headers, args, kwargs, embed)
    }

    fn from_v1(msg_headers: &Map<String, Value>, body: Value) -> Result<TaskMessage, InvalidTask> {
        let Value::Object(b) = body else {
            return Err(InvalidTask::BadBody(
                "protocol 1 body must be an object".into(),
            ));
        };
        let args = match b.get("args") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => {
                return Err(InvalidTask::BadBody(format!(
                    "args must be a list, got {other}"
                )));
            }
        };
        let kwargs = match b.get("kwargs") {
            Some(Value::Object(k)) => k.clone(),
            Some(Value::Null) | None => Map::new(),
            Some(other) => {
                return Err(InvalidTask::BadBody(format!(
                    "kwargs must be an object, got {other}"
                )));
            }
        };
        let embed = Embed::from_value(Some(&Value::Object(b.clone())));
        let mut headers = Map::new();
        for key in [
            "lang",
            "task",
            "id",
            "root_id",
            "parent_id",
            "group",
            "meth",
            "shadow",
            "eta",
            "expires",
            "retries",
            "timelimit",
            "argsrepr",
            "kwargsrepr",
            "origin",
        ] {
            if let Some(v) = b.get(key) {
                headers.insert(key.into(), v.clone());
            }
        }
        if headers.get("group").is_none_or(Value::is_null)
            && let Some(ts) = b.get("taskset").filter(|t| !t.is_null())
        {
            headers.insert("group".into(), ts.clone());
        }
        for (k, v) in msg_headers {
            headers.insert(k.clone(), v.clone());
        }
        Self::from_parts(1, headers, args, kwargs, embed)
    }

    fn from_parts(
        protocol: u8,
        headers: Map<String, Value>,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        embed: Embed,
    ) -> Result<TaskMessage, InvalidTask> {
        let name = opt_string(headers.get("task")).ok_or(InvalidTask::NoTaskName)?;
        let id = match headers.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(InvalidTask::BadBody("task message has no id".into())),
        };
        let eta = opt_time(headers.get("eta"), "eta")?;
        let expires = opt_time(headers.get("expires"), "expires")?;
        let time_limit = match headers.get("timelimit") {
            Some(Value::Array(tl)) => (opt_f64(tl.first()), opt_f64(tl.get(1))),
            _ => (None, None),
        };
        let argsrepr = opt_string(headers.get("argsrepr")).unwrap_or_else(|| repr_args(&args));
        let kwargsrepr =
            opt_string(headers.get("kwargsrepr")).unwrap_or_else(|| repr_kwargs(&kwargs));
        Ok(TaskMessage {
            protocol,
            retries: headers.get("retries").and_then(Value::as_u64).unwrap_or(0) as u32,
            root_id: opt_string(headers.get("root_id")),
            parent_id: opt_string(headers.get("parent_id")),
            group: opt_string(headers.get("group")),
            group_index: headers.get("group_index").and_then(Value::as_i64),
            origin: opt_string(headers.get("origin")),
            shadow: opt_string(headers.get("shadow")),
            ignore_result: headers.get("ignore_result").and_then(Value::as_bool),
            id,
            name,
            args,
            kwargs,
            embed,
            eta,
            expires,
            time_limit,
            argsrepr,
            kwargsrepr,
            headers,
        })
    }
}

/// A task to publish, with every option of `apply_async` that travels on the wire.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    pub name: String,
    pub id: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub queue: String,
    pub priority: u8,
    pub eta: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub retries: u32,
    /// `(hard, soft)` in seconds, as numbers (Python sends ints as ints).
    pub time_limit: (Option<Value>, Option<Value>),
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    pub group: Option<String>,
    pub group_index: Option<i64>,
    pub shadow: Option<String>,
    pub ignore_result: Option<bool>,
    pub origin: String,
    /// The client's oid (Python puts its app oid here; the Redis backend does not use it).
    pub reply_to: String,
    pub embed: Embed,
    /// Extra headers merged at the top level, after Celery's own.
    pub extra_headers: Map<String, Value>,
    pub stamps: Map<String, Value>,
}

impl TaskRequest {
    /// A request with a fresh id, for the `celery` queue.
    pub fn new(name: impl Into<String>) -> TaskRequest {
        let id = uuid::Uuid::new_v4().to_string();
        TaskRequest {
            name: name.into(),
            args: Vec::new(),
            kwargs: Map::new(),
            queue: "celery".into(),
            priority: 0,
            eta: None,
            expires: None,
            retries: 0,
            time_limit: (None, None),
            root_id: None,
            parent_id: None,
            group: None,
            group_index: None,
            shadow: None,
            ignore_result: None,
            origin: default_origin(),
            reply_to: uuid::Uuid::new_v4().to_string(),
            embed: Embed::default(),
            extra_headers: Map::new(),
            stamps: Map::new(),
            id,
        }
    }

    /// Protocol v2 headers in Python's order.
    pub fn headers(&self) -> Map<String, Value> {
        let opt_time =
            |t: &Option<DateTime<Utc>>| t.map(|t| json!(isoformat(t))).unwrap_or(Value::Null);
        let mut h = Map::new();
        h.insert("lang".into(), json!("py"));
        h.insert("task".into(), json!(self.name));
        h.insert("id".into(), json!(self.id));
        h.insert("shadow".into(), json!(self.shadow));
        h.insert("eta".into(), opt_time(&self.eta));
        h.insert("expires".into(), opt_time(&self.expires));
        h.insert("group".into(), json!(self.group));
        h.insert("group_index".into(), json!(self.group_index));
        h.insert("retries".into(), json!(self.retries));
        h.insert(
            "timelimit".into(),
            json!([
                self.time_limit.0.clone().unwrap_or(Value::Null),
                self.time_limit.1.clone().unwrap_or(Value::Null)
            ]),
        );
        h.insert(
            "root_id".into(),
            json!(self.root_id.as_deref().unwrap_or(&self.id)),
        );
        h.insert("parent_id".into(), json!(self.parent_id));
        h.insert(
            "argsrepr".into(),
            json!(truncate(repr_args(&self.args), REPR_MAXLEN)),
        );
        h.insert(
            "kwargsrepr".into(),
            json!(truncate(repr_kwargs(&self.kwargs), REPR_MAXLEN)),
        );
        h.insert("origin".into(), json!(self.origin));
        h.insert("ignore_result".into(), json!(self.ignore_result));
        h.insert("replaced_task_nesting".into(), json!(0));
        h.insert("stamped_headers".into(), Value::Null);
        h.insert("stamps".into(), Value::Object(self.stamps.clone()));
        for (k, v) in &self.extra_headers {
            h.insert(k.clone(), v.clone());
        }
        h
    }

    /// The v2 body `[args, kwargs, embed]` as Python serialises it.
    pub fn body(&self) -> Vec<u8> {
        to_py_json(&json!([self.args, self.kwargs, self.embed.to_value()]))
    }

    /// The envelope to LPUSH on the queue's priority list (anonymous exchange, routing key = queue).
    pub fn envelope(&self) -> Envelope {
        let mut env = Envelope::new(self.body(), self.headers(), "", &self.queue);
        env.leading_properties
            .insert("correlation_id".into(), json!(self.id));
        env.leading_properties
            .insert("reply_to".into(), json!(self.reply_to));
        env.priority = self.priority.min(9);
        if let Some(exp) = self.expires {
            let ms = (exp - Utc::now()).num_milliseconds().max(0) as u64;
            env.expiration_ms = Some(ms);
        }
        env
    }
}

/// `gen<pid>@<host>`, Celery's node name for a client process.
pub fn default_origin() -> String {
    format!("gen{}@{}", std::process::id(), crate::hostname())
}

/// A signature (`celery.canvas.Signature` as a dict): what link, link_error, chain and chord carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub task: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub options: Map<String, Value>,
    pub immutable: bool,
}

impl Signature {
    pub fn new(task: impl Into<String>) -> Signature {
        Signature {
            task: task.into(),
            args: Vec::new(),
            kwargs: Map::new(),
            options: Map::new(),
            immutable: false,
        }
    }

    /// Read a signature dict; `None` when it has no task name.
    pub fn from_value(v: &Value) -> Option<Signature> {
        let task = v.get("task")?.as_str()?.to_string();
        Some(Signature {
            task,
            args: v
                .get("args")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            kwargs: v
                .get("kwargs")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            options: v
                .get("options")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            immutable: v.get("immutable").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    pub fn to_value(&self) -> Value {
        json!({
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "subtask_type": null,
            "immutable": self.immutable,
        })
    }

    /// Turn the signature into a request the way Celery applies a callback or the next link of a chain:
    /// the parent's result is prepended to the args unless the signature is immutable.
    pub fn to_request(&self, parent_result: Option<&Value>, default_queue: &str) -> TaskRequest {
        let mut req = TaskRequest::new(self.task.clone());
        if let Some(id) = self.options.get("task_id").and_then(Value::as_str) {
            req.id = id.to_string();
        }
        req.args = self.args.clone();
        if let (Some(r), false) = (parent_result, self.immutable) {
            req.args.insert(0, r.clone());
        }
        req.kwargs = self.kwargs.clone();
        req.queue = self
            .options
            .get("queue")
            .and_then(Value::as_str)
            .unwrap_or(default_queue)
            .to_string();
        if let Some(p) = self.options.get("priority").and_then(Value::as_i64) {
            req.priority = crate::keys::clamp_priority(p);
        }
        if let Some(r) = self.options.get("reply_to").and_then(Value::as_str) {
            req.reply_to = r.to_string();
        }
        req.group = self
            .options
            .get("group_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        req.group_index = self.options.get("group_index").and_then(Value::as_i64);
        if let Some(link) = self.options.get("link") {
            req.embed.callbacks = as_sig_list(link);
        }
        if let Some(link) = self.options.get("link_error") {
            req.embed.errbacks = as_sig_list(link);
        }
        if let Some(chord) = self.options.get("chord").filter(|c| !c.is_null()) {
            req.embed.chord = Some(chord.clone());
        }
        req
    }
}

fn as_sig_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(raw: &str) -> Message {
        Message::decode(raw.as_bytes(), true).expect("envelope")
    }

    #[test]
    fn v1_message_is_converted_like_hybrid_to_proto2() {
        let body = r#"{"task": "tasks.add", "id": "99990000-1", "args": [7, 8], "kwargs": {}, "group": null, "retries": 0, "eta": "2026-11-22T05:42:42.796980+00:00", "expires": null, "utc": true, "callbacks": null, "errbacks": null, "timelimit": [null, null], "taskset": "g1", "chord": null}"#;
        let raw = json!({"body": body, "content-type": "application/json", "content-encoding": "utf-8", "headers": {},
            "properties": {"delivery_tag": "t", "body_encoding": "utf-8", "delivery_info": {"exchange": "", "routing_key": "celery"}}});
        let t = TaskMessage::from_message(&msg(&raw.to_string())).unwrap();
        assert_eq!(
            (t.protocol, t.name.as_str(), t.args.clone()),
            (1, "tasks.add", vec![json!(7), json!(8)])
        );
        assert_eq!(
            t.eta.map(isoformat).as_deref(),
            Some("2026-11-22T05:42:42.796980+00:00")
        );
        assert_eq!(t.group.as_deref(), Some("g1"));
        assert_eq!(t.argsrepr, "(7, 8)");
    }

    #[test]
    fn bad_eta_is_an_invalid_task() {
        let mut req = TaskRequest::new("celeriac.add");
        req.extra_headers
            .insert("eta".into(), json!("next tuesday"));
        let raw = String::from_utf8(req.envelope().encode()).unwrap();
        let err = TaskMessage::from_message(&msg(&raw)).unwrap_err();
        assert!(
            matches!(err, InvalidTask::BadTime { field: "eta", .. }),
            "{err}"
        );
    }

    #[test]
    fn message_without_task_name_is_unknown() {
        let raw = json!({"body": "e30=", "content-type": "application/json", "headers": {},
            "properties": {"delivery_tag": "t", "body_encoding": "base64"}});
        assert!(matches!(
            TaskMessage::from_message(&msg(&raw.to_string())),
            Err(InvalidTask::NoTaskName)
        ));
    }

    #[test]
    fn chain_signature_prepends_parent_result() {
        let sig = Signature::from_value(&json!({"task": "tasks.add", "args": [4], "kwargs": {},
            "options": {"task_id": "abc", "queue": "longtail"}, "subtask_type": null, "immutable": false}))
        .unwrap();
        let req = sig.to_request(Some(&json!(5)), "celery");
        assert_eq!(
            (req.id.as_str(), req.queue.as_str(), req.args.clone()),
            ("abc", "longtail", vec![json!(5), json!(4)])
        );
        let mut imm = sig.clone();
        imm.immutable = true;
        assert_eq!(
            imm.to_request(Some(&json!(5)), "celery").args,
            vec![json!(4)]
        );
    }
}
