//! The remote-control client: kombu's `Mailbox` broadcast and reply collection, over any [`Transport`].
//!
//! Sequence (celery-wire.md 6.2 and 11): bind the reply queue `<oid>.reply.celery.pidbox` to `reply.celery.pidbox`
//! with routing key `<oid>` (kombu 5.7's one-hour expiry), broadcast the request on `celery.pidbox`, pop the reply
//! queue until `timeout` passes with no reply or `limit` replies arrived, then unbind and delete the reply queue
//! (always, also on errors). On Redis this is SADD plus the deadline entry, `PUBLISH /{db}.celery.pidbox`, `BRPOP`
//! on the reply queue's four lists, SREM and DEL.

use celery_proto::command::ControlCommand;
use celery_proto::control::ControlRequest;
use celery_proto::keys::{self, PIDBOX_EXCHANGE, REPLY_EXCHANGE};
use celery_proto::{LamportClock, Message};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use transport::{Binding, SharedTransport, TransportError};

/// `celery inspect`'s default: one second of silence ends the collection.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Replies larger than this (the envelope as stored in the broker) are refused unless a client says otherwise; the
/// worker's own bound (`--pidbox-reply-max-bytes`) has the same default.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 16 << 20;

/// kombu 5.7 gives reply-queue bindings a deadline one hour ahead.
const REPLY_BINDING_TTL: Duration = Duration::from_millis(3_600_000);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("control arguments must be a JSON object, got {0}")]
    BadArguments(String),
    /// One or more replies were larger than the client accepts; their bodies were not parsed. The replies that fit are
    /// kept in `replies`.
    #[error(
        "refused {refused} control repl{} larger than {limit} bytes (the largest was {largest} bytes); {} other repl{} received",
        if *.refused == 1 { "y" } else { "ies" },
        .replies.len(),
        if .replies.len() == 1 { "y" } else { "ies" }
    )]
    ReplyTooLarge {
        refused: usize,
        largest: usize,
        limit: usize,
        replies: Vec<(String, Value)>,
    },
}

/// A remote-control client. Cheap to share behind an `Arc`; concurrent broadcasts use separate reply queues.
pub struct ControlClient {
    transport: SharedTransport,
    clock: Arc<LamportClock>,
    max_reply_bytes: usize,
}

impl ControlClient {
    pub fn new(transport: SharedTransport) -> ControlClient {
        ControlClient {
            transport,
            clock: Arc::new(LamportClock::new()),
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }

    /// Refuse replies larger than `bytes` (0 = no bound): their bodies are not parsed, and the collection ends in
    /// [`ControlError::ReplyTooLarge`] carrying the replies that fit.
    pub fn with_max_reply_bytes(mut self, bytes: usize) -> ControlClient {
        self.max_reply_bytes = bytes;
        self
    }

    pub fn transport(&self) -> &SharedTransport {
        &self.transport
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

    /// Broadcast a typed command (its `method()` and `arguments()`), collecting replies as [`Self::broadcast`] does
    /// when the command has any (`shutdown` and `election` have none: this returns at once, empty).
    pub async fn send_command(
        &self,
        command: &ControlCommand,
        destination: Option<Vec<String>>,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Value)>, ControlError> {
        let mut request = ControlRequest::new(command.method(), command.arguments());
        request.destination = destination;
        self.send(request, command.replies(), timeout, limit).await
    }

    /// Send a fully built request (use this for `pattern`/`matcher` addressing).
    pub async fn send(
        &self,
        mut request: ControlRequest,
        reply: bool,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Value)>, ControlError> {
        let expires = transport::now_f64() + timeout.as_secs_f64();
        if !reply {
            request.ticket = None;
            request.reply_to = None;
            let env = request.envelope(self.clock.forward(), expires);
            self.transport.broadcast(PIDBOX_EXCHANGE, "", &env).await?;
            return Ok(Vec::new());
        }
        let limit = limit.or_else(|| request.destination.as_ref().map(Vec::len));
        let oid = uuid::Uuid::new_v4().to_string();
        let ticket = uuid::Uuid::new_v4().to_string();
        let binding = Binding::new(
            REPLY_EXCHANGE,
            &oid,
            &keys::reply_queue(&oid),
            REPLY_BINDING_TTL,
        );
        request.ticket = Some(ticket.clone());
        request.reply_to = Some(oid.clone());
        self.transport.bind(&binding).await?;
        let collected = self
            .publish_and_collect(&request, expires, &binding.queue, &ticket, timeout, limit)
            .await;
        let cleanup = self.transport.unbind(&binding).await;
        let replies = collected?;
        cleanup?;
        Ok(replies)
    }

    /// Broadcast the request, then pop replies, each pop waiting up to `timeout` (a quiet period, as kombu's
    /// `drain_events(timeout=...)` per reply), until one finds nothing or `limit` replies arrived.
    async fn publish_and_collect(
        &self,
        request: &ControlRequest,
        expires: f64,
        queue: &str,
        ticket: &str,
        timeout: Duration,
        limit: Option<usize>,
    ) -> Result<Vec<(String, Value)>, ControlError> {
        let env = request.envelope(self.clock.forward(), expires);
        self.transport.broadcast(PIDBOX_EXCHANGE, "", &env).await?;
        let wait = timeout.max(Duration::from_millis(10));
        let mut replies = Vec::new();
        let (mut refused, mut largest) = (0, 0);
        loop {
            if limit.is_some_and(|l| replies.len() + refused >= l) {
                break;
            }
            let Some(incoming) = self.transport.pop(queue, wait).await? else {
                break;
            };
            let bytes = incoming.raw.len();
            if self.max_reply_bytes > 0 && bytes > self.max_reply_bytes {
                tracing::error!(
                    bytes,
                    limit = self.max_reply_bytes,
                    "refusing a control reply larger than the limit"
                );
                refused += 1;
                largest = largest.max(bytes);
                continue;
            }
            match incoming.message.ok().and_then(|m| reply_of(&m, ticket)) {
                Some((clock, pairs)) => {
                    if let Some(c) = clock {
                        self.clock.adjust(c);
                    }
                    replies.extend(pairs);
                }
                None => tracing::warn!(
                    bytes = incoming.raw.len(),
                    "ignoring a reply that is not for this request or not readable"
                ),
            }
        }
        if refused > 0 {
            return Err(ControlError::ReplyTooLarge {
                refused,
                largest,
                limit: self.max_reply_bytes,
                replies,
            });
        }
        Ok(replies)
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
#[cfg(test)]
fn decode_reply(raw: &[u8], ticket: &str) -> Option<(Option<u64>, Replies)> {
    reply_of(&Message::decode(raw, false).ok()?, ticket)
}

/// A decoded reply's `(headers.clock, [(node, value)])` if its ticket matches.
fn reply_of(msg: &Message, ticket: &str) -> Option<(Option<u64>, Replies)> {
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
    use celery_proto::control::reply_envelope;
    use serde_json::json;
    use transport::Transport;
    use transport::memory::MemoryBroker;

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

    /// A fake worker on the in-memory transport: answers every request with `{node: {"ok": method}}` under the
    /// request's ticket, after one reply under a foreign ticket; records the reply routing keys it saw.
    async fn fake_worker(
        t: MemoryBroker,
        mut sub: transport::Subscription,
        nodes: Vec<&'static str>,
        oids: Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        while let Some(m) = sub.next().await {
            let req = ControlRequest::from_message(&m.message.unwrap()).unwrap();
            let (Some(ticket), Some(oid)) = (req.ticket.clone(), req.reply_to.clone()) else {
                continue;
            };
            oids.lock().unwrap().push(oid.clone());
            let stray = reply_envelope("stray@x", json!("stray"), "other", &oid, 1);
            t.send_direct(REPLY_EXCHANGE, &oid, &stray).await.unwrap();
            for n in &nodes {
                let env = reply_envelope(n, json!({"ok": req.method}), &ticket, &oid, 7);
                t.send_direct(REPLY_EXCHANGE, &oid, &env).await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn collects_matching_replies_over_any_transport_and_cleans_up() {
        let mem = MemoryBroker::new();
        let mailbox = Binding::new(PIDBOX_EXCHANGE, "", "w.celery.pidbox", REPLY_BINDING_TTL);
        let sub = mem.subscribe(&mailbox).await.unwrap();
        let oids = Arc::default();
        let worker = tokio::spawn(fake_worker(
            mem.clone(),
            sub,
            vec!["a@h", "b@h"],
            Arc::clone(&oids),
        ));
        let client = ControlClient::new(Arc::new(mem.clone()));
        let all = client
            .inspect("ping", json!({}), None, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all["a@h"], json!({"ok": "ping"}));
        assert!(!all.contains_key("stray@x"), "foreign tickets are ignored");
        assert!(client.clock().value() >= 8, "reply clocks adjust ours");
        let one = client
            .broadcast(
                "stats",
                json!({}),
                None,
                true,
                Duration::from_secs(5),
                Some(1),
            )
            .await
            .unwrap();
        assert_eq!(one.len(), 1, "limit ends the collection");
        let dest = client
            .broadcast(
                "clock",
                json!({}),
                Some(vec!["b@h".into()]),
                true,
                Duration::from_secs(5),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            dest.len(),
            1,
            "limit defaults to the number of destinations"
        );
        assert!(matches!(
            client
                .broadcast("x", json!([1]), None, true, Duration::from_millis(10), None)
                .await,
            Err(ControlError::BadArguments(_))
        ));
        mem.fail_next(1);
        assert!(matches!(
            client.ping(None, Duration::from_millis(10)).await,
            Err(ControlError::Transport(_))
        ));
        let fire = client
            .broadcast(
                "heartbeat",
                json!({}),
                None,
                false,
                Duration::from_secs(1),
                None,
            )
            .await
            .unwrap();
        assert!(fire.is_empty());
        let typed = client
            .send_command(
                &ControlCommand::Clock,
                Some(vec!["a@h".into()]),
                Duration::from_secs(5),
                None,
            )
            .await
            .unwrap();
        assert_eq!(typed, vec![("a@h".to_string(), json!({"ok": "clock"}))]);
        let none = client
            .send_command(
                &ControlCommand::Shutdown,
                None,
                Duration::from_secs(5),
                None,
            )
            .await
            .unwrap();
        assert!(none.is_empty(), "shutdown wants no reply");
        worker.abort();
        let oids = oids.lock().unwrap().clone();
        assert_eq!(oids.len(), 4, "one reply queue per broadcast with reply");
        let probe = reply_envelope("late@h", json!(1), "t", "x", 1);
        for oid in &oids {
            assert_eq!(
                mem.send_direct(REPLY_EXCHANGE, oid, &probe).await.unwrap(),
                0,
                "reply queue {oid} unbound"
            );
        }
    }

    #[tokio::test]
    async fn refuses_a_reply_larger_than_its_limit_and_keeps_the_others() {
        let mem = MemoryBroker::new();
        let mailbox = Binding::new(PIDBOX_EXCHANGE, "", "w.celery.pidbox", REPLY_BINDING_TTL);
        let mut sub = mem.subscribe(&mailbox).await.unwrap();
        let t = mem.clone();
        let worker = tokio::spawn(async move {
            let m = sub.next().await.unwrap();
            let req = ControlRequest::from_message(&m.message.unwrap()).unwrap();
            let (ticket, oid) = (req.ticket.unwrap(), req.reply_to.unwrap());
            let small = reply_envelope("small@h", json!({"ok": "pong"}), &ticket, &oid, 1);
            let huge = reply_envelope("huge@h", json!("x".repeat(10_000)), &ticket, &oid, 1);
            t.send_direct(REPLY_EXCHANGE, &oid, &small).await.unwrap();
            t.send_direct(REPLY_EXCHANGE, &oid, &huge).await.unwrap();
        });
        let client = ControlClient::new(Arc::new(mem.clone())).with_max_reply_bytes(4_096);
        let err = client
            .broadcast(
                "ping",
                json!({}),
                None,
                true,
                Duration::from_millis(200),
                None,
            )
            .await
            .expect_err("the huge reply is refused");
        worker.await.unwrap();
        let text = err.to_string();
        assert!(
            text.starts_with("refused 1 control reply larger than 4096 bytes (the largest was 1"),
            "{text}"
        );
        assert!(text.ends_with("; 1 other reply received"), "{text}");
        let ControlError::ReplyTooLarge {
            refused,
            largest,
            limit,
            replies,
        } = err
        else {
            panic!("wrong error: {err}");
        };
        assert_eq!((refused, limit), (1, 4_096));
        assert!(
            largest > 10_000,
            "the refused size is the stored envelope's: {largest}"
        );
        assert_eq!(
            replies,
            vec![("small@h".to_string(), json!({"ok": "pong"}))]
        );
    }
}
