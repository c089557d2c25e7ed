//! The worker's settings, filled from the command line (see `main.rs`) and passed inward as one struct.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub broker_url: String,
    pub result_backend: String,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub node_name: String,
    pub task_events: bool,
    pub prefetch_multiplier: usize,
    /// Seconds before an unacked message of a dead consumer is restored (kombu's visibility_timeout).
    pub visibility_timeout: f64,
    pub heartbeat_interval: f64,
    /// Seconds results are kept (Celery's result_expires); 0 keeps them forever.
    pub result_expires: u64,
    pub result_extended: bool,
    pub track_started: bool,
    /// Acknowledge every task after it ran instead of when it starts (Celery's `task_acks_late`).
    pub acks_late: bool,
    pub without_mingle: bool,
    pub without_gossip: bool,
    /// Where undecodable or invalid messages are kept (a Redis list); nothing is dropped silently.
    pub dead_letter_key: String,
    /// How many dead letters the store keeps and for how long; the oldest are dropped (logged and counted).
    pub dead_letter_bounds: transport::DeadLetterBounds,
    /// Serve Prometheus metrics on this port (None = off).
    pub metrics_port: Option<u16>,
    /// At most this many tasks waiting for their ETA are held outside the prefetch budget. Beyond it an ETA task
    /// keeps its prefetch slot, so once every slot holds one the worker takes nothing more and the rest waits in
    /// the broker, not in memory (Celery has no such bound).
    pub eta_hold_max: usize,
    /// A result whose encoded meta is larger than this is not stored; the task's result becomes a `ValueError`
    /// saying so, which Python re-raises (0 = no limit).
    pub result_max_bytes: usize,
    /// A remote-control reply whose JSON is larger than this is not sent; the client gets an `{"error": ...}` reply
    /// saying so instead (0 = no limit).
    pub pidbox_reply_max_bytes: usize,
    /// OpenTelemetry spans and W3C trace context in task headers ([`crate::otel`]), through the global tracer
    /// provider the binary installs; off: no spans, no headers.
    pub tracing: bool,
}

impl RuntimeConfig {
    pub fn new(broker_url: &str, node_name: &str) -> RuntimeConfig {
        RuntimeConfig {
            broker_url: broker_url.to_string(),
            result_backend: broker_url.to_string(),
            queues: vec!["celery".to_string()],
            concurrency: 4,
            node_name: node_name.to_string(),
            task_events: false,
            prefetch_multiplier: 4,
            visibility_timeout: 3600.0,
            heartbeat_interval: 2.0,
            result_expires: 86_400,
            result_extended: false,
            track_started: false,
            acks_late: false,
            without_mingle: false,
            without_gossip: false,
            dead_letter_key: celery_proto::keys::DEAD_LETTERS.to_string(),
            dead_letter_bounds: transport::DeadLetterBounds::default(),
            metrics_port: None,
            eta_hold_max: 10_000,
            result_max_bytes: 64 << 20,
            pidbox_reply_max_bytes: 16 << 20,
            tracing: false,
        }
    }

    pub fn prefetch_count(&self) -> usize {
        (self.concurrency * self.prefetch_multiplier).max(1)
    }

    /// How often held messages' leases are renewed and expired ones restored.
    pub fn restore_interval(&self) -> Duration {
        Duration::from_secs_f64((self.visibility_timeout / 4.0).clamp(0.5, 30.0))
    }
}

/// Expand `%h`, `%n`, `%d` in a node name; a name without `@` gets `@<host>`.
pub fn expand_node_name(pattern: &str, host: &str) -> String {
    let (short, domain) = host.split_once('.').unwrap_or((host, ""));
    let name_part = pattern.split('@').next().unwrap_or("celery");
    let expanded = pattern
        .replace("%h", host)
        .replace("%n", short)
        .replace("%d", domain);
    let expanded = expanded.replace("%n", name_part);
    if expanded.contains('@') {
        expanded
    } else {
        format!("{expanded}@{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_like_celery() {
        assert_eq!(
            expand_node_name("w1@%h", "vm.example.org"),
            "w1@vm.example.org"
        );
        assert_eq!(expand_node_name("w1@%n", "vm.example.org"), "w1@vm");
        assert_eq!(expand_node_name("w1", "vm"), "w1@vm");
        assert_eq!(expand_node_name("x@%d", "vm.example.org"), "x@example.org");
    }
}
