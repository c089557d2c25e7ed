//! Celery events: bodies with the common head (`hostname, utcoffset, pid, clock`, fields, `timestamp`, `type`)
//! and the envelope published on `/{db}.celeryev/<routing key>`.

use serde_json::{Map, Value, json};

use crate::envelope::Envelope;
use crate::keys::EVENT_EXCHANGE;

/// Build an event body in Celery's field order.
pub fn event_body(
    event_type: &str,
    hostname: &str,
    pid: u32,
    clock: u64,
    fields: Map<String, Value>,
    timestamp: f64,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("hostname".into(), json!(hostname));
    m.insert("utcoffset".into(), json!(0.0));
    m.insert("pid".into(), json!(pid));
    m.insert("clock".into(), json!(clock));
    for (k, v) in fields {
        m.insert(k, v);
    }
    m.insert("timestamp".into(), json!(timestamp));
    m.insert("type".into(), json!(event_type));
    m
}

/// The routing key of an event type: `task-succeeded` -> `task.succeeded`.
pub fn routing_key(event_type: &str) -> String {
    event_type.replace('-', ".")
}

/// The envelope for one event or a `task.multi` batch (`body` is an object or a list).
pub fn event_envelope(hostname: &str, routing_key: &str, body: &Value) -> Envelope {
    let mut headers = Map::new();
    headers.insert("hostname".into(), json!(hostname));
    let mut env = Envelope::new(
        crate::json::to_py_json(body),
        headers,
        EVENT_EXCHANGE,
        routing_key,
    );
    env.delivery_mode = 1;
    env
}

/// Split a received event body into events (a `task.multi` list or a single object).
pub fn events_of(body: Value) -> Vec<Map<String, Value>> {
    match body {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect(),
        Value::Object(m) => vec![m],
        _ => Vec::new(),
    }
}

/// Every kind of event Celery sends, with its `type` string, routing key and (for task events) the state it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    TaskSent,
    TaskReceived,
    TaskStarted,
    TaskSucceeded,
    TaskFailed,
    TaskRetried,
    TaskRejected,
    TaskRevoked,
    WorkerOnline,
    WorkerHeartbeat,
    WorkerOffline,
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::TaskSent,
        EventKind::TaskReceived,
        EventKind::TaskStarted,
        EventKind::TaskSucceeded,
        EventKind::TaskFailed,
        EventKind::TaskRetried,
        EventKind::TaskRejected,
        EventKind::TaskRevoked,
        EventKind::WorkerOnline,
        EventKind::WorkerHeartbeat,
        EventKind::WorkerOffline,
    ];

    /// The event's `type` field (`task-succeeded`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TaskSent => "task-sent",
            EventKind::TaskReceived => "task-received",
            EventKind::TaskStarted => "task-started",
            EventKind::TaskSucceeded => "task-succeeded",
            EventKind::TaskFailed => "task-failed",
            EventKind::TaskRetried => "task-retried",
            EventKind::TaskRejected => "task-rejected",
            EventKind::TaskRevoked => "task-revoked",
            EventKind::WorkerOnline => "worker-online",
            EventKind::WorkerHeartbeat => "worker-heartbeat",
            EventKind::WorkerOffline => "worker-offline",
        }
    }

    /// The kind of a `type` string; `None` for types Celery does not define.
    pub fn parse(event_type: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == event_type)
    }

    /// The routing key it is published with (`task.succeeded`).
    pub fn routing_key(self) -> String {
        routing_key(self.as_str())
    }

    /// The task state a task event means (Flower's and `celery events`' mapping); `None` for worker events.
    pub fn task_state(self) -> Option<&'static str> {
        Some(match self {
            EventKind::TaskSent => "PENDING",
            EventKind::TaskReceived => "RECEIVED",
            EventKind::TaskStarted => "STARTED",
            EventKind::TaskSucceeded => "SUCCESS",
            EventKind::TaskFailed => "FAILURE",
            EventKind::TaskRetried => "RETRY",
            EventKind::TaskRejected => "REJECTED",
            EventKind::TaskRevoked => "REVOKED",
            _ => return None,
        })
    }

    /// True for the events that end a task's run on a worker (its run time is known then).
    pub fn ends_run(self) -> bool {
        matches!(
            self,
            EventKind::TaskSucceeded | EventKind::TaskFailed | EventKind::TaskRevoked
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task event as a worker sends it: the fields Celery's worker puts in each, in Celery's order.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Received {
        name: String,
        args: String,
        kwargs: String,
        root_id: Option<String>,
        parent_id: Option<String>,
        retries: u32,
        eta: Option<String>,
        expires: Option<String>,
    },
    Started,
    Succeeded {
        result: String,
        runtime: f64,
    },
    Failed {
        exception: String,
        traceback: Option<String>,
    },
    Retried {
        exception: String,
        traceback: String,
    },
    Rejected {
        requeue: bool,
    },
    Revoked {
        terminated: bool,
        signum: Option<i32>,
        expired: bool,
    },
}

impl TaskEvent {
    pub fn kind(&self) -> EventKind {
        match self {
            TaskEvent::Received { .. } => EventKind::TaskReceived,
            TaskEvent::Started => EventKind::TaskStarted,
            TaskEvent::Succeeded { .. } => EventKind::TaskSucceeded,
            TaskEvent::Failed { .. } => EventKind::TaskFailed,
            TaskEvent::Retried { .. } => EventKind::TaskRetried,
            TaskEvent::Rejected { .. } => EventKind::TaskRejected,
            TaskEvent::Revoked { .. } => EventKind::TaskRevoked,
        }
    }

    /// The run time it reports, for events that carry one.
    pub fn runtime(&self) -> Option<f64> {
        match self {
            TaskEvent::Succeeded { runtime, .. } => Some(*runtime),
            _ => None,
        }
    }

    /// The event's own fields (after `uuid`), as Celery's worker writes them.
    pub fn fields(&self) -> Map<String, Value> {
        let v = match self {
            TaskEvent::Received {
                name,
                args,
                kwargs,
                root_id,
                parent_id,
                retries,
                eta,
                expires,
            } => json!({
                "name": name, "args": args, "kwargs": kwargs, "root_id": root_id, "parent_id": parent_id,
                "retries": retries, "eta": eta, "expires": expires,
            }),
            TaskEvent::Started => json!({}),
            TaskEvent::Succeeded { result, runtime } => {
                json!({"result": result, "runtime": runtime})
            }
            TaskEvent::Failed {
                exception,
                traceback,
            } => json!({"exception": exception, "traceback": traceback}),
            TaskEvent::Retried {
                exception,
                traceback,
            } => json!({"exception": exception, "traceback": traceback}),
            TaskEvent::Rejected { requeue } => json!({"requeue": requeue}),
            TaskEvent::Revoked {
                terminated,
                signum,
                expired,
            } => json!({"terminated": terminated, "signum": signum, "expired": expired}),
        };
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_tail_order() {
        let mut f = Map::new();
        f.insert("uuid".into(), json!("x"));
        let b = event_body("task-started", "w@h", 7, 3, f, 1.5);
        let keys: Vec<&str> = b.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "hostname",
                "utcoffset",
                "pid",
                "clock",
                "uuid",
                "timestamp",
                "type"
            ]
        );
        assert_eq!(routing_key("task-succeeded"), "task.succeeded");
        assert_eq!(events_of(json!([{"type": "a"}, 3, {"type": "b"}])).len(), 2);
    }

    #[test]
    fn kinds_round_trip_and_map_to_states() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("task-exploded"), None);
        assert_eq!(EventKind::TaskSucceeded.routing_key(), "task.succeeded");
        assert_eq!(EventKind::TaskRetried.task_state(), Some("RETRY"));
        assert_eq!(EventKind::WorkerOnline.task_state(), None);
        let received = TaskEvent::Received {
            name: "t".into(),
            args: "()".into(),
            kwargs: "{}".into(),
            root_id: None,
            parent_id: None,
            retries: 0,
            eta: None,
            expires: None,
        };
        let keys: Vec<String> = received.fields().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "name",
                "args",
                "kwargs",
                "root_id",
                "parent_id",
                "retries",
                "eta",
                "expires"
            ]
        );
        let revoked = TaskEvent::Revoked {
            terminated: true,
            signum: Some(15),
            expired: false,
        };
        assert_eq!(revoked.fields()["signum"], 15);
        assert_eq!(revoked.kind(), EventKind::TaskRevoked);
    }
}
