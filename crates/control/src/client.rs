//! The remote-control client: kombu's `Mailbox` broadcast and reply collection over Redis.
//!
//! Wire sequence (celery-wire.md 6.2 and 11): bind `<oid>.reply.celery.pidbox` (SADD plus kombu 5.7's deadline),
//! `PUBLISH /{db}.celery.pidbox <request>`, `BRPOP` the reply queue's four lists until `timeout` passes with no
//! reply or `limit` replies arrived, then SREM the binding and DEL the lists (always, also on errors).

use broker::{Broker, BrokerError};
use celery_proto::control::ControlRequest;
use celery_proto::keys::{self, PIDBOX_EXCHANGE, REPLY_EXCHANGE};
use celery_proto::{LamportClock, Message};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `celery inspect`'s default: one second of silence ends the collection.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// kombu 5.7 gives reply-queue bindings a deadline one hour ahead.
const REPLY_BINDING_TTL_MS: u64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("control arguments must be a JSON object, got {0}")]
    BadArguments(String),
}

/// A remote-control client. Cheap to share behind an `Arc`; concurrent broadcasts use separate reply queues.
pub struct ControlClient {
    broker: Broker,
    clock: Arc<LamportClock>,
    idle: Mutex<Vec<broker::fanout::BlockingConn>>,
}

impl ControlClient {
    pub fn new(broker: Broker) -> ControlClient {
        ControlClient {
            broker,
            clock: Arc::new(LamportClock::new()),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// This client's Lamport clock (forwarded on every request, adjusted by reply clocks).
    pub fn clock(&self) -> &LamportClock {
        &self.clock
    }

    /// Broadcast `method` with `arguments` (a JSON object) to all workers, or to the nodes in `destination`.
    /// With `reply`, collect `(node, value)` answers until `timeout` passes without a new one or `limit` answers
    /// arrived (`limit` defaults to the number of destinations, as in Celery). Without `reply`, returns at once.
    pub async fn broadcast(
        &self,
        method: &str,
        arguments: Value,
        destination: Option<Vec<String>>,
        reply: bool,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Value)>, ControlError> {
        let arguments = match arguments {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => return Err(ControlError::BadArguments(other.to_string())),
        };
        let mut request = ControlRequest::new(method, arguments);
        request.destination = destination;
        self.send(request, reply, timeout, limit).await
    }

    /// Send a fully built request (use this for `pattern`/`matcher` addressing).
    pub async fn send(
        &self,
        mut request: ControlRequest,
        reply: bool,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Value)>, ControlError> {
        let channel = keys::fanout_channel(self.broker.db(), PIDBOX_EXCHANGE, "");
        let expires = broker::now_f64() + timeout.as_secs_f64();
        if !reply {
            request.ticket = None;
            request.reply_to = None;
            let env = request.envelope(self.clock.forward(), expires);
            self.broker.publish_fanout(&channel, &env.encode()).await?;
            return Ok(Vec::new());
        }
        let limit = limit.or_else(|| request.destination.as_ref().map(Vec::len));
        let oid = uuid::Uuid::new_v4().to_string();
        let ticket = uuid::Uuid::new_v4().to_string();
        let queue = keys::reply_queue(&oid);
        request.ticket = Some(ticket.clone());
        request.reply_to = Some(oid.clone());
        self.broker
            .bind_expiring(REPLY_EXCHANGE, &oid, &queue, REPLY_BINDING_TTL_MS)
            .await?;
        let collected = self
            .publish_and_collect(&request, &channel, expires, &queue, &ticket, timeout, limit)
            .await;
        let cleanup = self
            .broker
            .unbind_and_delete(REPLY_EXCHANGE, &oid, &queue)
            .await;
        let replies = collected?;
        cleanup?;
        Ok(replies)
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_and_collect(
        &self,
        request: &ControlRequest,
        channel: &str,
        expires: f64,
        queue: &str,
        ticket: &str,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Value)>, ControlError> {
        let mut conn = self.take_conn().await?;
        let env = request.envelope(self.clock.forward(), expires);
        self.broker.publish_fanout(channel, &env.encode()).await?;
        let reply_keys = keys::queue_keys(queue).to_vec();
        let wait = timeout.as_secs_f64().max(0.01);
        let mut replies = Vec::new();
        loop {
            if limit.is_some_and(|l| replies.len() >= l) {
                break;
            }
            let got = match self.broker.brpop_raw(&mut conn, &reply_keys, wait).await {
                Ok(g) => g,
                Err(e) => return Err(e.into()),
            };
            let Some((_, raw)) = got else { break };
            match decode_reply(&raw, ticket) {
                Some((clock, pairs)) => {
                    if let Some(c) = clock {
                        self.clock.adjust(c);
                    }
                    replies.extend(pairs);
                }
                None => tracing::warn!(
                    bytes = raw.len(),
                    "ignoring a reply that is not for this request or not readable"
                ),
            }
        }
        self.idle.lock().expect("idle connections").push(conn);
        Ok(replies)
    }

    async fn take_conn(&self) -> Result<broker::fanout::BlockingConn, ControlError> {
        let pooled = self.idle.lock().expect("idle connections").pop();
        match pooled {
            Some(c) => Ok(c),
            None => Ok(self.broker.blocking_connection().await?),
        }
    }

    /// An inspect call: broadcast with reply and merge answers into `{node: value}` (Celery's `flatten_reply`).
    pub async fn inspect(
        &self,
        method: &str,
        arguments: Value,
        destination: Option<Vec<String>>,
        timeout: Duration,
    ) -> Result<BTreeMap<String, Value>, ControlError> {
        let replies = self
            .broadcast(method, arguments, destination, true, timeout, None)
            .await?;
        Ok(replies.into_iter().collect())
    }

    /// `inspect ping`: the nodes that answered, with their `{"ok": "pong"}`.
    pub async fn ping(
        &self,
        destination: Option<Vec<String>>,
        timeout: Duration,
    ) -> Result<BTreeMap<String, Value>, ControlError> {
        self.inspect("ping", Value::Object(Map::new()), destination, timeout)
            .await
    }
}

/// `(node, value)` pairs of one or more replies.
pub type Replies = Vec<(String, Value)>;

/// Decode one reply envelope: `(headers.clock, [(node, value)])` if its ticket matches.
fn decode_reply(raw: &[u8], ticket: &str) -> Option<(Option<u64>, Replies)> {
    let msg = Message::decode(raw, false).ok()?;
    if msg.headers.get("ticket").and_then(Value::as_str) != Some(ticket) {
        return None;
    }
    let clock = msg.headers.get("clock").and_then(Value::as_u64);
    match msg.json_body().ok()? {
        Value::Object(m) => Some((clock, m.into_iter().collect())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_captured_ping_reply() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/celery-wire/c-remote-control/c01-inspect-ping.reply.raw"
        ))
        .expect("fixture");
        let (clock, pairs) =
            decode_reply(&raw, "2e948d08-accd-44f0-a4f8-7ccf75ceb304").expect("reply");
        assert_eq!(clock, Some(3));
        assert_eq!(
            pairs,
            vec![("w1@vm".to_string(), serde_json::json!({"ok": "pong"}))]
        );
        assert!(decode_reply(&raw, "another-ticket").is_none());
        assert!(decode_reply(b"garbage", "x").is_none());
    }
}
