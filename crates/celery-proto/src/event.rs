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
}
