//! Prometheus metrics of the coordinator (the `prometheus` crate, as the worker uses): queue depth per queue and
//! priority bucket, workers online, routing decisions by strategy and outcome, re-routes, config reloads, and the
//! dead letters the workers kept, and leadership among several coordinators (`is_leader`, `leader_term`,
//! `leader_changes_total`). `deploy/prometheus/alerts.yml` alerts on them.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub decisions: IntCounterVec,
    pub workers_online: IntGauge,
    pub workers_known: IntGauge,
    pub queue_depth: IntGaugeVec,
    pub reroutes: IntCounter,
    pub config_reloads: IntCounterVec,
    pub dead_letters: IntGauge,
    /// 1 while this coordinator holds the leader lease (it alone re-routes), else 0.
    pub is_leader: IntGauge,
    /// The last fencing term this coordinator saw (grows at every takeover).
    pub leader_term: IntGauge,
    /// Times this coordinator gained or lost leadership.
    pub leader_changes: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("celeriac_coordinator".into()), None)
            .expect("metrics registry");
        let decisions = IntCounterVec::new(
            Opts::new(
                "routing_decisions_total",
                "Routing decisions by strategy and outcome",
            ),
            &["strategy", "outcome"],
        )
        .expect("metric");
        let workers_online = IntGauge::new("workers_online", "Workers alive now").expect("metric");
        let workers_known =
            IntGauge::new("workers_known", "Workers seen or registered").expect("metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "queue_depth",
                "Messages waiting per queue and priority bucket",
            ),
            &["queue", "bucket"],
        )
        .expect("metric");
        let reroutes = IntCounter::new(
            "reroutes_total",
            "Jobs moved out of an offline worker's .dq2 queue",
        )
        .expect("metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "config_reloads_total",
                "worker-config.yaml reloads by result",
            ),
            &["result"],
        )
        .expect("metric");
        let dead_letters = IntGauge::new(
            "dead_letters",
            "Messages the workers could not use and kept in celeriac:dead_letter (read at scrape time)",
        )
        .expect("metric");
        let is_leader = IntGauge::new(
            "is_leader",
            "1 while this coordinator holds the leader lease and re-routes offline workers' jobs",
        )
        .expect("metric");
        let leader_term = IntGauge::new(
            "leader_term",
            "The coordinator lease's fencing term last seen (grows at every takeover)",
        )
        .expect("metric");
        let leader_changes = IntCounter::new(
            "leader_changes_total",
            "Times this coordinator gained or lost the leader lease",
        )
        .expect("metric");
        for m in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(workers_online.clone()),
            Box::new(workers_known.clone()),
            Box::new(queue_depth.clone()),
            Box::new(reroutes.clone()),
            Box::new(config_reloads.clone()),
            Box::new(dead_letters.clone()),
            Box::new(is_leader.clone()),
            Box::new(leader_term.clone()),
            Box::new(leader_changes.clone()),
        ] {
            registry.register(m).expect("register metric");
        }
        Metrics {
            registry,
            decisions,
            workers_online,
            workers_known,
            queue_depth,
            reroutes,
            config_reloads,
            dead_letters,
            is_leader,
            leader_term,
            leader_changes,
        }
    }

    /// The worker gauges after an inspect round.
    pub fn set_workers(&self, online: usize, known: usize) {
        self.workers_online.set(online as i64);
        self.workers_known.set(known as i64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
