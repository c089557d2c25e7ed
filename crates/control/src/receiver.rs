//! The event receiver: what `celery events` and Flower do on Redis. It binds `celeryev.<uuid>` with routing key
//! `#` (informational; kombu 5.7 deadline entry), `PSUBSCRIBE /{db}.celeryev/*`, and yields every event of
//! every message, splitting `task.multi` list bodies. Unreadable messages are logged, counted and skipped.

use broker::Broker;
use broker::fanout::PatternStream;
use celery_proto::Message;
use celery_proto::event::events_of;
use celery_proto::keys::{self, EVENT_EXCHANGE};
use serde_json::{Map, Value};
use std::collections::VecDeque;

use crate::client::ControlError;

const RECEIVER_BINDING_TTL_MS: u64 = 3_600_000;

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

    /// The event type, e.g. `worker-heartbeat` or `task-succeeded` (empty if missing).
    pub fn kind(&self) -> &str {
        self.str("type").unwrap_or("")
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

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.body.get(key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }
}

/// A live event subscription.
pub struct EventReceiver {
    broker: Broker,
    stream: PatternStream,
    pending: VecDeque<Event>,
    queue: String,
    bad: u64,
}

impl EventReceiver {
    /// Subscribe to every event on the broker's database.
    pub async fn new(broker: &Broker) -> Result<EventReceiver, ControlError> {
        let queue = format!("{EVENT_EXCHANGE}.{}", uuid::Uuid::new_v4());
        broker
            .bind_expiring(EVENT_EXCHANGE, "#", &queue, RECEIVER_BINDING_TTL_MS)
            .await?;
        let pattern = keys::fanout_channel(broker.db(), EVENT_EXCHANGE, "*");
        let stream = broker.psubscribe(&[pattern]).await?;
        Ok(EventReceiver {
            broker: broker.clone(),
            stream,
            pending: VecDeque::new(),
            queue,
            bad: 0,
        })
    }

    /// The next event, or `None` once the subscription connection is lost.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            let msg = self.stream.next().await?;
            let received_at = broker::now_f64();
            match decode_events(&msg.payload) {
                Ok((rk, events)) => self.pending.extend(events.into_iter().map(|body| Event {
                    routing_key: rk.clone(),
                    body,
                    received_at,
                })),
                Err(why) => {
                    self.bad += 1;
                    tracing::warn!(channel = %msg.channel, bytes = msg.payload.len(), why, "dropping unreadable event message");
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
        if let Err(e) = self
            .broker
            .unbind_and_delete(EVENT_EXCHANGE, "#", &self.queue)
            .await
        {
            tracing::warn!(error = %e, "could not remove the event receiver binding");
        }
    }
}

/// Decode an event message into its routing key and event bodies (`task.multi` lists give several).
pub fn decode_events(raw: &[u8]) -> Result<(String, Vec<Map<String, Value>>), String> {
    let msg = Message::decode(raw, false).map_err(|e| e.to_string())?;
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
}
