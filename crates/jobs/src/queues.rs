//! The queues the cluster knows and their depth per Redis priority bucket: the coordinator's Prometheus gauges and
//! the API's `GET /api/v1/cluster/queues` both read them from here, so there is one definition of "known queue".
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

    /// The depth of every known queue, read now (one pipelined `LLEN` per bucket of each queue), and its unacked count.
    pub async fn queue_depths(&self) -> Result<Vec<QueueDepth>, JobError> {
        let unacked = self.broker.unacked_per_queue().await?;
        let mut out = Vec::new();
        for name in self.known_queues() {
            let lens = self.broker.queue_bucket_lens(&name).await?;
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
