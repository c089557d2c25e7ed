//! The event receiver: what `celery events` and Flower do. It subscribes `celeryev.<uuid>` to the `celeryev` topic
//! exchange with binding key `#` (on Redis: an informational binding with kombu 5.7's deadline entry and
//! `PSUBSCRIBE /{db}.celeryev/*`), and yields every event of every message, splitting `task.multi` list bodies.
//! Unreadable messages are logged, counted and skipped.

use celery_proto::Message;
use celery_proto::event::{EventKind, events_of};
use celery_proto::keys::EVENT_EXCHANGE;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::time::Duration;
use transport::{Binding, SharedTransport, Subscription};

use crate::client::ControlError;

/// kombu 5.7 gives the receiver's binding a deadline one hour ahead.
const RECEIVER_BINDING_TTL: Duration = Duration::from_millis(3_600_000);

/// One decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The routing key of the message that carried it (`worker.heartbeat`, `task.multi`, ...).
    pub routing_key: String,
    /// The event body exactly as sent (`hostname`, `clock`, `timestamp`, `type`, ...).
    pub body: Map<String, Value>,
    /// Local time (unix seconds) when it was received, like Celery's `local_received`.
    pub received_at: f64,
}

impl Event {
    /// Build an event from a body (used by tests and by anything replaying stored events).
    pub fn new(body: Map<String, Value>, received_at: f64) -> Event {
        let routing_key = body
            .get("type")
            .and_then(Value::as_str)
            .map(celery_proto::event::routing_key)
            .unwrap_or_default();
        Event {
            routing_key,
            body,
            received_at,
        }
    }

    /// The event's `type` string as sent, e.g. `worker-heartbeat` or `task-succeeded` (empty if missing).
    pub fn event_type(&self) -> &str {
        self.str("type").unwrap_or("")
    }

    /// The kind of event; `None` for a missing `type` or one Celery does not define (e.g. an app's custom
    /// `task-progress`), for which [`Event::event_type`] still has the string.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(self.event_type())
    }

    /// The sender's node name (empty if missing).
    pub fn hostname(&self) -> &str {
        self.str("hostname").unwrap_or("")
    }

    /// The task id of a task event.
    pub fn uuid(&self) -> Option<&str> {
        self.str("uuid")
    }

    /// The sender's timestamp (unix seconds), or the receive time if missing.
    pub fn timestamp(&self) -> f64 {
        self.body
            .get("timestamp")
            .and_then(Value::as_f64)
            .unwrap_or(self.received_at)
    }

    /// A worker event's heartbeat interval in seconds (`freq`).
    pub fn freq(&self) -> Option<f64> {
        self.body.get("freq").and_then(Value::as_f64)
    }

    /// A worker event's number of running tasks (`active`).
    pub fn active(&self) -> Option<u64> {
        self.body.get("active").and_then(Value::as_u64)
    }

    /// A worker event's number of tasks run so far (`processed`).
    pub fn processed(&self) -> Option<u64> {
        self.body.get("processed").and_then(Value::as_u64)
    }

    /// A worker event's load averages (`loadavg`; non-numbers left out), if it has a list.
    pub fn loadavg(&self) -> Option<Vec<f64>> {
        match self.body.get("loadavg") {
            Some(Value::Array(l)) => Some(l.iter().filter_map(Value::as_f64).collect()),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.body.get(key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }
}

/// A live event subscription.
pub struct EventReceiver {
    transport: SharedTransport,
    subscription: Subscription,
    pending: VecDeque<Event>,
    binding: Binding,
    bad: u64,
}

impl EventReceiver {
    /// Subscribe to every event on the transport (on Redis: the broker's database).
    pub async fn new(transport: &SharedTransport) -> Result<EventReceiver, ControlError> {
        let queue = format!("{EVENT_EXCHANGE}.{}", uuid::Uuid::new_v4());
        let binding = Binding::new(EVENT_EXCHANGE, "#", &queue, RECEIVER_BINDING_TTL);
        let subscription = transport.subscribe(&binding).await?;
        Ok(EventReceiver {
            transport: transport.clone(),
            subscription,
            pending: VecDeque::new(),
            binding,
            bad: 0,
        })
    }

    /// The next event, or `None` once the subscription connection is lost.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            let msg = self.subscription.next().await?;
            let received_at = transport::now_f64();
            let decoded = msg
                .message
                .map_err(|e| e.to_string())
                .and_then(events_of_message);
            match decoded {
                Ok((rk, events)) => self.pending.extend(events.into_iter().map(|body| Event {
                    routing_key: rk.clone(),
                    body,
                    received_at,
                })),
                Err(why) => {
                    self.bad += 1;
                    tracing::warn!(routing_key = %msg.routing_key, bytes = msg.raw.len(), why, "dropping unreadable event message");
                }
            }
        }
    }

    /// How many unreadable messages were dropped so far.
    pub fn bad_messages(&self) -> u64 {
        self.bad
    }

    /// Remove this receiver's binding (the subscription closes when the receiver is dropped).
    pub async fn close(self) {
        if let Err(e) = self.transport.unbind(&self.binding).await {
            tracing::warn!(error = %e, "could not remove the event receiver binding");
        }
    }
}

/// Decode an event message into its routing key and event bodies (`task.multi` lists give several).
pub fn decode_events(raw: &[u8]) -> Result<(String, Vec<Map<String, Value>>), String> {
    events_of_message(Message::decode(raw, false).map_err(|e| e.to_string())?)
}

/// The routing key and event bodies of a decoded event message (`task.multi` lists give several).
fn events_of_message(msg: Message) -> Result<(String, Vec<Map<String, Value>>), String> {
    let body = msg.json_body().map_err(|e| e.to_string())?;
    let events: Vec<Map<String, Value>> = events_of(body)
        .into_iter()
        .filter(|e| e.get("type").and_then(Value::as_str).is_some())
        .collect();
    if events.is_empty() {
        return Err("no event with a `type` in the body".into());
    }
    Ok((msg.routing_key, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../../shared/fixtures/celery-wire/d-events/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture")
    }

    #[test]
    fn splits_task_multi_and_reads_worker_events() {
        let (rk, evs) = decode_events(&fixture(
            "event-task.multi-task-received+task-started+task-succeeded.raw",
        ))
        .expect("decodes");
        assert_eq!(rk, "task.multi");
        let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["task-received", "task-started", "task-succeeded"]);
        let (rk, evs) = decode_events(&fixture("event-worker-heartbeat.raw")).expect("decodes");
        assert_eq!(rk, "worker.heartbeat");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0]["hostname"], "w1@vm");
        assert!(decode_events(b"{not json").is_err());
    }

    #[tokio::test]
    async fn receives_over_any_transport_splitting_batches_and_counting_garbage() {
        use celery_proto::event::event_envelope;
        use serde_json::json;
        use transport::Transport;
        let mem = transport::memory::MemoryBroker::new();
        let shared: SharedTransport = std::sync::Arc::new(mem.clone());
        let mut rx = EventReceiver::new(&shared).await.unwrap();
        let garbage = event_envelope("w@h", "task.multi", &json!({"no": "type"}));
        mem.broadcast(EVENT_EXCHANGE, "task.multi", &garbage)
            .await
            .unwrap();
        let batch = json!([
            {"type": "task-received", "hostname": "w@h"},
            {"type": "task-started", "hostname": "w@h"},
        ]);
        let env = event_envelope("w@h", "task.multi", &batch);
        mem.broadcast(EVENT_EXCHANGE, "task.multi", &env)
            .await
            .unwrap();
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let ev = rx.next().await.unwrap();
            assert_eq!(ev.routing_key, "task.multi");
            kinds.push(ev.event_type().to_string());
        }
        assert_eq!(kinds, ["task-received", "task-started"]);
        assert_eq!(rx.bad_messages(), 1);
        rx.close().await;
    }
}
