//! Dead letters as something to work with (`docs/dead-letters.md`): list, show, replay, drop and purge the
//! messages workers (and the coordinator) could not process. One implementation, used by the `celeriac
//! dead-letters` command and the API's admin routes.
//!
//! On Redis the store is `broker::dead_letters`' hash and sorted set (ids, atomic scripts); entries a worker
//! older than that pushed to the plain list are adopted into it first, keeping their written time. On RabbitMQ the
//! store is a durable queue: the entries are taken (held unacknowledged, so a crash gives them back), read, and
//! then acknowledged (dropped, or replayed after the republish was confirmed) or given back; ids live in the
//! records the worker wrote, and one pass sees at most [`AMQP_SCAN_MAX`] entries.

use base64::Engine as _;
use broker::Broker;
use broker::dead_letters::StoredDeadLetter;
use celery_proto::{Message, kombu_redis};
use serde::Serialize;
use std::time::Duration;
use transport::{Requeue, SharedTransport};

use crate::{Connections, JobError};

/// At most this many RabbitMQ dead letters are read in one operation.
pub const AMQP_SCAN_MAX: usize = 10_000;
/// Old-list entries adopted per operation (the rest on the next one).
const ADOPT_BATCH: usize = 1_000;

/// One dead letter as its record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Stable id (`show`, `replay`, `drop` take it).
    pub id: String,
    pub reason: String,
    /// The queue the message was taken from (where `replay` sends it).
    pub queue: Option<String>,
    /// The worker (or `celeriac-coordinator`) that kept it.
    pub node: Option<String>,
    /// When it was kept (ISO 8601 UTC, as the worker wrote it).
    pub time: Option<String>,
    /// The message as received, as text (lossy when the bytes are not UTF-8).
    pub message: String,
    /// The exact bytes, base64, when they are not UTF-8 (`message` is then lossy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_base64: Option<String>,
    /// Size of the original message in bytes.
    pub size: usize,
}

impl DeadLetter {
    /// Read one stored record under `id`; a record that is not the JSON object a worker writes is still shown,
    /// whole, with the reason saying so.
    pub fn parse(id: &str, raw: &[u8]) -> DeadLetter {
        let text =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        match serde_json::from_slice::<serde_json::Value>(raw) {
            Ok(v) if v.is_object() && v.get("reason").is_some() => {
                let message = text(&v, "message").unwrap_or_default();
                let message_base64 = text(&v, "message_base64");
                let size = message_base64
                    .as_deref()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .map_or(message.len(), |b| b.len());
                DeadLetter {
                    id: text(&v, "id").unwrap_or_else(|| id.to_string()),
                    reason: text(&v, "reason").unwrap_or_else(|| v["reason"].to_string()),
                    queue: text(&v, "queue"),
                    node: text(&v, "node"),
                    time: text(&v, "time"),
                    size,
                    message,
                    message_base64,
                }
            }
            _ => DeadLetter {
                id: id.to_string(),
                reason: "unreadable dead-letter record (not a worker's JSON record)".into(),
                queue: None,
                node: None,
                time: None,
                size: raw.len(),
                message: String::from_utf8_lossy(raw).into_owned(),
                message_base64: std::str::from_utf8(raw)
                    .is_err()
                    .then(|| base64::engine::general_purpose::STANDARD.encode(raw)),
            },
        }
    }

    /// The original message bytes.
    pub fn original(&self) -> Vec<u8> {
        self.message_base64
            .as_deref()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_else(|| self.message.as_bytes().to_vec())
    }

    /// When it was kept, as Unix milliseconds (from `time`), if readable.
    pub fn time_ms(&self) -> Option<i64> {
        let t = self.time.as_deref()?;
        let parsed = chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&chrono::Utc))
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                    .map(|n| n.and_utc())
            })
            .ok()?;
        Some(parsed.timestamp_millis())
    }
}

/// What happened to one id of a `replay` or `drop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub id: String,
    /// `replayed`, `dropped`, `not_found`, or `failed`.
    pub outcome: &'static str,
    /// The queue it was replayed to, or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Outcome {
    fn new(id: &str, outcome: &'static str, detail: Option<String>) -> Outcome {
        Outcome {
            id: id.to_string(),
            outcome,
            detail,
        }
    }
}

/// What to do with one entry of a RabbitMQ pass.
enum Action {
    Keep,
    Drop,
    Replay,
}

/// The dead-letter store `name` (the workers' `celeriac:dead_letter` unless they were told otherwise).
#[derive(Clone)]
pub struct DeadLetters {
    transport: SharedTransport,
    redis: Option<Broker>,
    name: String,
}

impl DeadLetters {
    pub fn new(conns: &Connections, name: &str) -> DeadLetters {
        DeadLetters {
            transport: conns.transport.clone(),
            redis: conns.broker_redis.clone(),
            name: name.to_string(),
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Move the entries of the old plain list into the id store (a batch per call), keeping their time.
    async fn adopt_old(&self, redis: &Broker) -> Result<(), JobError> {
        let old = redis.old_dead_letters(&self.name, ADOPT_BATCH).await?;
        if old.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        for raw in old {
            let (id, record) = transport::dead_letter_with_id(&raw);
            let kept = DeadLetter::parse(&id, &record).time_ms().unwrap_or(now);
            redis
                .adopt_old_dead_letter(&self.name, &raw, &id, kept, &record)
                .await?;
        }
        Ok(())
    }

    /// How many entries there are, and `limit` of them from `offset`, newest first. On RabbitMQ `offset` and
    /// `limit` apply to the first [`AMQP_SCAN_MAX`] in queue order (oldest first).
    pub async fn list(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<DeadLetter>), JobError> {
        if let Some(redis) = &self.redis {
            self.adopt_old(redis).await?;
            let (total, page) = redis.dead_letter_page(&self.name, offset, limit).await?;
            let old = redis.old_dead_letters_len(&self.name).await?;
            return Ok((total + old, page.iter().map(parse_stored).collect()));
        }
        let mut seen = Vec::new();
        let (total, _) = self
            .amqp_pass(|d| {
                seen.push(d.clone());
                Action::Keep
            })
            .await?;
        seen.reverse();
        Ok((total, seen.into_iter().skip(offset).take(limit).collect()))
    }

    /// How many entries there are (cheap: no records are read).
    pub async fn count(&self) -> Result<u64, JobError> {
        if let Some(redis) = &self.redis {
            let (n, _) = redis.dead_letter_page(&self.name, 0, 0).await?;
            return Ok(n + redis.old_dead_letters_len(&self.name).await?);
        }
        Ok(self.transport.queue_len(&self.name).await?.unwrap_or(0))
    }

    /// One entry by id.
    pub async fn show(&self, id: &str) -> Result<Option<DeadLetter>, JobError> {
        if let Some(redis) = &self.redis {
            self.adopt_old(redis).await?;
            return Ok(redis
                .dead_letter_get(&self.name, id)
                .await?
                .as_ref()
                .map(parse_stored));
        }
        let mut found = None;
        self.amqp_pass(|d| {
            if d.id == id {
                found = Some(d.clone());
            }
            Action::Keep
        })
        .await?;
        Ok(found)
    }

    /// Republish each entry's original message, unchanged, to the queue it came from, and remove the entry. On
    /// Redis push and removal are one script (an id is replayed once even by two callers at the same time).
    pub async fn replay(&self, ids: &[String]) -> Result<Vec<Outcome>, JobError> {
        if let Some(redis) = &self.redis {
            self.adopt_old(redis).await?;
            let mut out = Vec::new();
            for id in ids {
                let Some(stored) = redis.dead_letter_get(&self.name, id).await? else {
                    out.push(Outcome::new(id, "not_found", None));
                    continue;
                };
                let d = parse_stored(&stored);
                let Some(queue) = d.queue.clone().filter(|q| !q.is_empty()) else {
                    out.push(Outcome::new(
                        id,
                        "failed",
                        Some("the record names no queue to replay to".into()),
                    ));
                    continue;
                };
                let original = d.original();
                // The same priority bucket kombu would have pushed it to (0 when unreadable).
                let priority = Message::decode(&original, false)
                    .map(|m| m.priority)
                    .unwrap_or(0);
                let key = kombu_redis::queue_key(&queue, priority);
                if redis
                    .replay_dead_letter(&self.name, id, &key, &original)
                    .await?
                {
                    out.push(Outcome::new(id, "replayed", Some(queue)));
                } else {
                    out.push(Outcome::new(id, "not_found", None));
                }
            }
            return Ok(out);
        }
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let (_, done) = self
            .amqp_pass(|d| {
                if wanted.contains(d.id.as_str()) {
                    Action::Replay
                } else {
                    Action::Keep
                }
            })
            .await?;
        Ok(ids
            .iter()
            .map(|id| {
                done.iter()
                    .find(|o| &o.id == id)
                    .cloned()
                    .unwrap_or_else(|| Outcome::new(id, "not_found", None))
            })
            .collect())
    }

    /// Remove entries by id.
    pub async fn drop_ids(&self, ids: &[String]) -> Result<Vec<Outcome>, JobError> {
        if let Some(redis) = &self.redis {
            self.adopt_old(redis).await?;
            let flags = redis.drop_dead_letters(&self.name, ids).await?;
            return Ok(ids
                .iter()
                .zip(flags)
                .map(|(id, gone)| {
                    Outcome::new(id, if gone { "dropped" } else { "not_found" }, None)
                })
                .collect());
        }
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut dropped = Vec::new();
        self.amqp_pass(|d| {
            if wanted.contains(d.id.as_str()) {
                dropped.push(d.id.clone());
                Action::Drop
            } else {
                Action::Keep
            }
        })
        .await?;
        Ok(ids
            .iter()
            .map(|id| {
                let gone = dropped.contains(id);
                Outcome::new(id, if gone { "dropped" } else { "not_found" }, None)
            })
            .collect())
    }

    /// Remove every entry older than `age`; returns how many.
    pub async fn purge_older_than(&self, age: Duration) -> Result<u64, JobError> {
        if let Some(redis) = &self.redis {
            // Drain the old list into the store first, so old entries are judged by their written time.
            while redis.old_dead_letters_len(&self.name).await? > 0 {
                self.adopt_old(redis).await?;
            }
            let (_, too_old) = redis
                .trim_dead_letters(&self.name, 0, Some(age.max(Duration::from_millis(1))))
                .await?;
            return Ok(too_old);
        }
        let cutoff = chrono::Utc::now().timestamp_millis() - age.as_millis() as i64;
        let mut n = 0;
        self.amqp_pass(|d| match d.time_ms() {
            Some(t) if t < cutoff => {
                n += 1;
                Action::Drop
            }
            _ => Action::Keep,
        })
        .await?;
        Ok(n)
    }
}

impl DeadLetters {
    /// One pass over the RabbitMQ dead-letter queue: take what waits (up to [`AMQP_SCAN_MAX`], held
    /// unacknowledged), decide for each, then settle: replayed entries are republished (confirmed) before they are
    /// acknowledged, dropped ones are acknowledged, the rest are given back (RabbitMQ puts them back in place).
    /// Returns how many were seen and the replay outcomes.
    async fn amqp_pass(
        &self,
        mut decide: impl FnMut(&DeadLetter) -> Action,
    ) -> Result<(u64, Vec<Outcome>), JobError> {
        let t = &self.transport;
        let waiting = t.queue_len(&self.name).await?.unwrap_or(0) as usize;
        let want = waiting.min(AMQP_SCAN_MAX);
        let queues = [self.name.clone()];
        let mut held = Vec::new();
        while held.len() < want {
            let got = t
                .consume(&queues, want - held.len(), Duration::from_millis(500))
                .await?;
            if got.is_empty() {
                break;
            }
            held.extend(got);
        }
        let mut outcomes = Vec::new();
        let mut first_error = None;
        let seen = held.len() as u64;
        for d in held {
            let Some(tag) = d.tag.clone() else { continue };
            let record = d
                .message
                .as_ref()
                .map(|m| m.body.clone())
                .unwrap_or_default();
            let entry = DeadLetter::parse(&tag, &record);
            let settle = match decide(&entry) {
                Action::Keep => None,
                Action::Drop => Some(()),
                Action::Replay => match self.amqp_republish(&entry).await {
                    Ok(queue) => {
                        outcomes.push(Outcome::new(&entry.id, "replayed", Some(queue)));
                        Some(())
                    }
                    Err(why) => {
                        outcomes.push(Outcome::new(&entry.id, "failed", Some(why)));
                        None
                    }
                },
            };
            let r = match settle {
                Some(()) => t.ack(&tag).await,
                None => t.requeue(&tag, Requeue::Front).await.map(|_| ()),
            };
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = t.consume(&[], 0, Duration::ZERO).await {
            tracing::warn!(error = %e, "could not stop consuming {}", self.name);
        }
        if let Some(e) = first_error {
            return Err(e.into());
        }
        Ok((seen.max(waiting as u64), outcomes))
    }

    /// Publish a RabbitMQ dead letter's original message to its queue: body, headers and properties as received.
    async fn amqp_republish(&self, d: &DeadLetter) -> Result<String, String> {
        let queue = d
            .queue
            .clone()
            .filter(|q| !q.is_empty())
            .ok_or("the record names no queue to replay to")?;
        let msg = Message::decode(&d.original(), false)
            .map_err(|e| format!("the kept message is not a readable envelope: {e}"))?;
        let mut env = celery_proto::kombu_amqp::envelope_of(&msg);
        env.routing_key = queue.clone();
        self.transport
            .publish(&queue, &env)
            .await
            .map_err(|e| e.to_string())?;
        Ok(queue)
    }
}

fn parse_stored(s: &StoredDeadLetter) -> DeadLetter {
    DeadLetter::parse(&s.id, &s.record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_and_foreign_ones_kept_whole() {
        let d = DeadLetter::parse(
            "fallback",
            br#"{"id": "a1", "reason": "undecodable message: not JSON", "queue": "celery", "node": "w@h", "time": "2026-12-04T05:00:00.250000", "message": "{oops"}"#,
        );
        assert_eq!(d.id, "a1");
        assert_eq!(d.reason, "undecodable message: not JSON");
        assert_eq!(d.queue.as_deref(), Some("celery"));
        assert_eq!(d.node.as_deref(), Some("w@h"));
        assert_eq!((d.message.as_str(), d.size), ("{oops", 5));
        assert_eq!(d.original(), b"{oops");
        assert_eq!(d.time_ms(), Some(1_796_360_400_250));
        let odd = DeadLetter::parse("x", b"\xffplain");
        assert!(odd.reason.starts_with("unreadable"), "{odd:?}");
        assert_eq!(
            (odd.id.as_str(), odd.message.as_str()),
            ("x", "\u{fffd}plain")
        );
        assert!(odd.queue.is_none());
    }

    #[test]
    fn non_utf8_messages_keep_their_exact_bytes() {
        let d = DeadLetter::parse(
            "b",
            br#"{"reason": "r", "queue": "q", "message": "\ufffd!", "message_base64": "/yE="}"#,
        );
        assert_eq!(d.original(), b"\xff!");
        assert_eq!(d.size, 2);
    }
}
