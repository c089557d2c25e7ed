//! The queues the cluster knows and their depth per Redis priority bucket: the coordinator's Prometheus gauges and
//! the API's `GET /api/v1/cluster/queues` both read them from here, so there is one definition of "known queue".
//!
//! [`Jobs::dead_letters`] reads the newest entries of the workers' dead-letter store (`keys::DEAD_LETTERS`).
//!
//! Known queues are the shared queues the config names (workers' queues, the default queue, the routing table's
//! queues, the profiles' queues) plus the direct (`<node>.dq2`) queue of every node the registry has seen.

use serde::Serialize;
use std::collections::BTreeSet;

use crate::{JobError, Jobs};

/// One queue's depth: messages waiting in each kombu priority bucket (`PRIORITY_STEPS`: 0, 3, 6, 9) and in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    pub name: String,
    /// `true` for a worker's direct queue (`<node>.dq2`).
    pub direct: bool,
    /// `(priority step, waiting messages)`, in `PRIORITY_STEPS` order.
    pub buckets: Vec<(u8, u64)>,
    pub total: u64,
    /// Messages taken from it by consumers and not yet acknowledged (kombu's `unacked`).
    pub unacked: u64,
}

/// One unprocessable message a worker kept, as its record says (`reason`, `queue`, `node`, `time`, `message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub reason: String,
    pub queue: Option<String>,
    pub node: Option<String>,
    /// When the worker kept it (ISO 8601, as written).
    pub time: Option<String>,
    /// The message as received (lossy UTF-8 of its bytes).
    pub message: String,
    /// Length of `message` in bytes.
    pub size: usize,
}

impl DeadLetter {
    /// Read one stored record; a record that is not the JSON object a worker writes is still shown, whole, with
    /// the reason saying so.
    pub fn parse(raw: &[u8]) -> DeadLetter {
        let text =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        match serde_json::from_slice::<serde_json::Value>(raw) {
            Ok(v) if v.is_object() && v.get("reason").is_some() => {
                let message = text(&v, "message").unwrap_or_default();
                DeadLetter {
                    reason: text(&v, "reason").unwrap_or_else(|| v["reason"].to_string()),
                    queue: text(&v, "queue"),
                    node: text(&v, "node"),
                    time: text(&v, "time"),
                    size: message.len(),
                    message,
                }
            }
            _ => {
                let message = String::from_utf8_lossy(raw).into_owned();
                DeadLetter {
                    reason: "unreadable dead-letter record (not a worker's JSON record)".into(),
                    queue: None,
                    node: None,
                    time: None,
                    size: message.len(),
                    message,
                }
            }
        }
    }
}

/// The shared queues `config` names.
pub fn config_queues(config: &routing::WorkerConfig) -> BTreeSet<String> {
    let mut queues: BTreeSet<String> = config
        .workers
        .iter()
        .flat_map(|w| w.queues.iter().map(|q| q.name.clone()))
        .collect();
    queues.insert(config.routing.default_queue.clone());
    queues.extend(config.routing.queues.keys().cloned());
    queues.extend(
        config
            .profiles
            .values()
            .flat_map(|p| p.queues.iter().cloned()),
    );
    queues
}

impl Jobs {
    /// The config's shared queues and every known node's direct queue.
    pub fn known_queues(&self) -> BTreeSet<String> {
        let mut queues = config_queues(&self.config.get());
        let nodes = self.registry.lock().expect("registry").nodes();
        queues.extend(
            nodes
                .iter()
                .map(|n| celery_proto::keys::worker_direct_queue(n)),
        );
        queues
    }

    /// The depth of every known queue, read now. On Redis: one pipelined `LLEN` per bucket of each queue, and its
    /// unacked count. On RabbitMQ: the ready messages of each queue that exists (a passive declare), in one bucket;
    /// RabbitMQ tells unacknowledged counts only through its management API, so `unacked` is 0 there.
    pub async fn queue_depths(&self) -> Result<Vec<QueueDepth>, JobError> {
        let Some(redis) = &self.broker_redis else {
            let mut out = Vec::new();
            for name in self.known_queues() {
                if let Some(n) = self.transport.queue_len(&name).await? {
                    out.push(QueueDepth {
                        direct: name.ends_with(".dq2"),
                        buckets: vec![(0, n)],
                        total: n,
                        unacked: 0,
                        name,
                    });
                }
            }
            return Ok(out);
        };
        let unacked = redis.unacked_per_queue().await?;
        let mut out = Vec::new();
        for name in self.known_queues() {
            let lens = redis.queue_bucket_lens(&name).await?;
            let buckets: Vec<(u8, u64)> = celery_proto::kombu_redis::PRIORITY_STEPS
                .iter()
                .copied()
                .zip(lens)
                .collect();
            out.push(QueueDepth {
                unacked: unacked.get(&name).copied().unwrap_or(0),
                direct: name.ends_with(".dq2"),
                total: buckets.iter().map(|(_, n)| n).sum(),
                buckets,
                name,
            });
        }
        Ok(out)
    }
}

impl Jobs {
    /// How many dead letters the workers kept, and the newest `limit` of them. On RabbitMQ they wait in the durable
    /// queue of that name, which is counted but not read here (reading would take them out): use RabbitMQ's tools.
    pub async fn dead_letters(&self, limit: usize) -> Result<(u64, Vec<DeadLetter>), JobError> {
        let Some(redis) = &self.broker_redis else {
            let count = self
                .transport
                .queue_len(celery_proto::keys::DEAD_LETTERS)
                .await?
                .unwrap_or(0);
            return Ok((count, Vec::new()));
        };
        let (count, raw) = redis
            .list_head(celery_proto::keys::DEAD_LETTERS, limit)
            .await?;
        Ok((count, raw.iter().map(|r| DeadLetter::parse(r)).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_records_are_read_and_foreign_ones_kept_whole() {
        let d = DeadLetter::parse(
            br#"{"reason": "undecodable message: not JSON", "queue": "celery", "node": "w@h", "time": "2026-12-04T05:00:00", "message": "{oops"}"#,
        );
        assert_eq!(d.reason, "undecodable message: not JSON");
        assert_eq!(d.queue.as_deref(), Some("celery"));
        assert_eq!(d.node.as_deref(), Some("w@h"));
        assert_eq!((d.message.as_str(), d.size), ("{oops", 5));
        let odd = DeadLetter::parse(b"\xffplain");
        assert!(odd.reason.starts_with("unreadable"), "{odd:?}");
        assert_eq!(odd.message, "\u{fffd}plain");
        assert!(odd.queue.is_none());
    }

    #[test]
    fn the_sample_config_names_its_shared_queues() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../worker-config.yaml");
        let config = jobs_config(&path);
        let q = config_queues(&config);
        assert!(q.contains(&config.routing.default_queue), "{q:?}");
        assert!(q.contains("snowshoe"), "{q:?}");
    }

    fn jobs_config(path: &std::path::Path) -> std::sync::Arc<routing::WorkerConfig> {
        crate::ConfigHandle::load(path)
            .expect("sample config")
            .get()
    }
}
