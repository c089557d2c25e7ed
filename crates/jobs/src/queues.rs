//! The queues the cluster knows and their depth per Redis priority bucket: the coordinator's Prometheus gauges and
//! the API's `GET /api/v1/cluster/queues` both read them from here, so there is one definition of "known queue".
//!
//! [`Jobs::dead_letters`] reads the newest entries of the workers' dead-letter store (`keys::DEAD_LETTERS`,
//! through [`crate::DeadLetters`]).
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
    /// The workers' dead-letter store (`keys::DEAD_LETTERS`).
    pub fn dead_letter_store(&self) -> crate::DeadLetters {
        crate::DeadLetters::new(
            &crate::Connections {
                transport: self.transport.clone(),
                broker_redis: self.broker_redis.clone(),
            },
            celery_proto::keys::DEAD_LETTERS,
        )
    }

    /// How many dead letters the workers kept, and the newest `limit` of them (see [`crate::DeadLetters::list`]).
    pub async fn dead_letters(
        &self,
        limit: usize,
    ) -> Result<(u64, Vec<crate::DeadLetter>), JobError> {
        let store = self.dead_letter_store();
        if limit == 0 {
            return Ok((store.count().await?, Vec::new()));
        }
        store.list(0, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
