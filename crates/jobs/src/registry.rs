//! The live worker registry: what the workers' own Celery events say (heartbeats: `active`, `processed`,
//! `loadavg`, `freq`), what `inspect active_queues` / `stats` / `active` answer, and what workers registered.
//! It works the same for Rust and Python workers, since both speak Celery.
//!
//! Liveness: for workers that send heartbeats, a heartbeat within `2 x freq` (Flower's rule); for workers started
//! without heartbeats, an inspect reply within the inspect window; a `worker-offline` event newer than both makes a
//! worker offline at once.

use celeriac_control::{ClusterState, Event};
use celery_proto::event::EventKind;
use routing::{Capabilities, LiveWorker, WorkerConfig};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

use crate::store::Registration;

/// What inspect told us about one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InspectInfo {
    pub queues: Vec<String>,
    pub concurrency: Option<u32>,
    pub active: Option<u32>,
    pub last_reply: f64,
    pub sw_ident: Option<String>,
}

pub struct WorkerRegistry {
    pub cluster: ClusterState,
    pub inspect: BTreeMap<String, InspectInfo>,
    pub registrations: BTreeMap<String, Registration>,
    offline_at: BTreeMap<String, f64>,
    /// Local time of the last event from each node (any kind).
    heard: BTreeMap<String, f64>,
    /// Nodes that send worker heartbeats: for them the heartbeat rule alone decides liveness.
    beating: BTreeSet<String>,
    /// How long an inspect reply counts as a sign of life.
    pub inspect_window: f64,
}

/// One row of `GET /api/v1/workers`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    pub node: String,
    pub alive: bool,
    pub seen_ago: Option<f64>,
    pub registered: bool,
    pub config_entries: Vec<String>,
    pub queues: Vec<String>,
    pub active: u32,
    pub processed: u64,
    pub concurrency: Option<u32>,
    pub loadavg: Vec<f64>,
    pub freq: Option<f64>,
    pub sw_ident: Option<String>,
    pub sw_ver: Option<String>,
    pub capabilities: Capabilities,
    pub load: f64,
    /// Free capacity in [0, 1] (1 - load); 0 when offline.
    pub routing_weight: f64,
    pub heartbeats: bool,
}

impl WorkerRegistry {
    pub fn new(inspect_window: f64) -> WorkerRegistry {
        WorkerRegistry {
            cluster: ClusterState::new(10_000),
            inspect: BTreeMap::new(),
            registrations: BTreeMap::new(),
            offline_at: BTreeMap::new(),
            heard: BTreeMap::new(),
            beating: BTreeSet::new(),
            inspect_window,
        }
    }

    pub fn apply_event(&mut self, ev: &Event) {
        let kind = ev.kind();
        // Any event but `task-sent` (which the client sends) is a sign of life, unknown types included.
        if !ev.hostname().is_empty() && kind != Some(EventKind::TaskSent) {
            let t = self.heard.entry(ev.hostname().to_string()).or_default();
            *t = t.max(ev.received_at);
        }
        match kind {
            Some(EventKind::WorkerOffline) => {
                self.offline_at
                    .insert(ev.hostname().to_string(), ev.received_at);
            }
            Some(EventKind::WorkerOnline | EventKind::WorkerHeartbeat) => {
                self.offline_at.remove(ev.hostname());
                self.beating.insert(ev.hostname().to_string());
            }
            _ => {}
        }
        self.cluster.apply(ev);
    }

    /// Record `inspect active_queues` replies (`{node: [QueueDict]}`).
    pub fn apply_active_queues(&mut self, replies: &BTreeMap<String, Value>, now: f64) {
        for (node, v) in replies {
            let info = self.inspect.entry(node.clone()).or_default();
            if let Value::Array(qs) = v {
                info.queues = qs
                    .iter()
                    .filter_map(|q| q.get("name").and_then(Value::as_str))
                    .filter(|n| !n.ends_with(".dq2"))
                    .map(str::to_string)
                    .collect();
            }
            info.last_reply = info.last_reply.max(now);
        }
    }

    /// Record `inspect stats` replies (`pool.max-concurrency`, and the software from `pool.implementation`, so
    /// workers that send no events are still told apart: `celeriac.*` is a Rust worker, `celery.*` Python Celery).
    pub fn apply_stats(&mut self, replies: &BTreeMap<String, Value>, now: f64) {
        for (node, v) in replies {
            let info = self.inspect.entry(node.clone()).or_default();
            let implementation = v
                .get("pool")
                .and_then(|p| p.get("implementation"))
                .and_then(Value::as_str);
            match implementation {
                Some(i) if i.starts_with("celeriac") => info.sw_ident = Some("rs-celeriac".into()),
                Some(i) if i.starts_with("celery.") => info.sw_ident = Some("py-celery".into()),
                _ => {}
            }
            if let Some(c) = v
                .get("pool")
                .and_then(|p| p.get("max-concurrency"))
                .and_then(Value::as_u64)
            {
                info.concurrency = Some(c as u32);
            }
            info.last_reply = info.last_reply.max(now);
        }
    }

    /// Record `inspect active` replies (the number of running tasks).
    pub fn apply_active(&mut self, replies: &BTreeMap<String, Value>, now: f64) {
        for (node, v) in replies {
            let info = self.inspect.entry(node.clone()).or_default();
            if let Value::Array(a) = v {
                info.active = Some(a.len() as u32);
            }
            info.last_reply = info.last_reply.max(now);
        }
    }

    pub fn set_registrations(&mut self, regs: Vec<Registration>) {
        self.registrations = regs.into_iter().map(|r| (r.node.clone(), r)).collect();
    }

    /// Every node seen in any way.
    pub fn nodes(&self) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = self.cluster.workers.keys().cloned().collect();
        s.extend(self.inspect.keys().cloned());
        s.extend(self.registrations.keys().cloned());
        s
    }

    /// Last sign of life (heartbeat or inspect reply), as local time.
    fn last_seen(&self, node: &str) -> Option<f64> {
        let hb = self.heard.get(node).copied();
        let ir = self
            .inspect
            .get(node)
            .map(|i| i.last_reply)
            .filter(|t| *t > 0.0);
        match (hb, ir) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn alive(&self, node: &str, now: f64) -> bool {
        let Some(last) = self.last_seen(node) else {
            return false;
        };
        if self.offline_at.get(node).is_some_and(|t| *t >= last) {
            return false;
        }
        let by_heartbeat = self.cluster.workers.get(node).is_some_and(|w| w.alive(now));
        if self.beating.contains(node) {
            // It announced a heartbeat interval: missing 2 x freq of them is offline, whatever inspect said.
            return by_heartbeat;
        }
        let by_inspect = self
            .inspect
            .get(node)
            .is_some_and(|i| i.last_reply > 0.0 && now - i.last_reply <= self.inspect_window);
        by_heartbeat || by_inspect
    }

    /// Nodes that were seen alive once and are not alive now.
    pub fn offline_nodes(&self, now: f64) -> Vec<String> {
        self.nodes()
            .into_iter()
            .filter(|n| self.last_seen(n).is_some() && !self.alive(n, now))
            .collect()
    }

    /// The routing snapshot.
    pub fn snapshot(&self, now: f64) -> Vec<LiveWorker> {
        self.nodes()
            .into_iter()
            .map(|node| {
                let ev = self.cluster.workers.get(&node);
                let ins = self.inspect.get(&node);
                let reg = self.registrations.get(&node);
                let heartbeats = ev.is_some_and(|w| w.last_heartbeat.is_some());
                let active = if heartbeats {
                    ev.map(|w| w.active as u32).unwrap_or(0)
                } else {
                    ins.and_then(|i| i.active).unwrap_or(0)
                };
                let queues = match ins {
                    Some(i) if !i.queues.is_empty() => i.queues.clone(),
                    _ => reg.map(|r| r.queues.clone()).unwrap_or_default(),
                };
                LiveWorker {
                    alive: self.alive(&node, now),
                    seen_ago: self
                        .last_seen(&node)
                        .map(|t| ((now - t).max(0.0) * 10.0).round() / 10.0),
                    active,
                    concurrency: ins
                        .and_then(|i| i.concurrency)
                        .or(reg.and_then(|r| r.concurrency)),
                    loadavg: ev.and_then(|w| w.loadavg.first().copied()),
                    queues,
                    registered: reg.is_some(),
                    detected: reg.map(|r| r.capabilities.clone()).unwrap_or_default(),
                    node,
                }
            })
            .collect()
    }

    /// Flower-like rows with capabilities (config merged over registration) and routing weight.
    pub fn rows(&self, config: &WorkerConfig, now: f64) -> Vec<WorkerRow> {
        self.snapshot(now)
            .into_iter()
            .map(|lw| {
                let specs: Vec<_> = config.specs_for(&lw.node).collect();
                let mut caps = lw.detected.clone();
                let mut concurrency = lw.concurrency;
                for s in specs.iter().rev() {
                    caps = s.capabilities.merged_with(&caps);
                    concurrency = concurrency.or(s.concurrency);
                }
                let with_slots = LiveWorker {
                    concurrency,
                    ..lw.clone()
                };
                let load = routing::decide::load_of(&with_slots, &caps);
                let ev = self.cluster.workers.get(&lw.node);
                WorkerRow {
                    config_entries: specs.iter().map(|s| s.name.clone()).collect(),
                    alive: lw.alive,
                    seen_ago: lw.seen_ago,
                    registered: lw.registered,
                    queues: lw.queues.clone(),
                    active: lw.active,
                    processed: ev.map(|w| w.processed).unwrap_or(0),
                    concurrency,
                    loadavg: ev.map(|w| w.loadavg.clone()).unwrap_or_default(),
                    freq: ev.filter(|w| w.last_heartbeat.is_some()).map(|w| w.freq),
                    sw_ident: ev
                        .and_then(|w| w.sw_ident.clone())
                        .or_else(|| self.inspect.get(&lw.node).and_then(|i| i.sw_ident.clone())),
                    sw_ver: ev.and_then(|w| w.sw_ver.clone()),
                    capabilities: caps,
                    load: (load * 1000.0).round() / 1000.0,
                    routing_weight: if lw.alive {
                        ((1.0 - load).clamp(0.0, 1.0) * 1000.0).round() / 1000.0
                    } else {
                        0.0
                    },
                    heartbeats: ev.is_some_and(|w| w.last_heartbeat.is_some()),
                    node: lw.node,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, node: &str, at: f64, freq: f64) -> Event {
        let body = json!({"hostname": node, "freq": freq, "active": 1, "processed": 3,
                          "loadavg": [0.5, 0.4, 0.3], "timestamp": at, "type": kind});
        Event::new(body.as_object().unwrap().clone(), at)
    }

    #[test]
    fn inspect_stats_tell_rust_and_python_workers_apart() {
        let mut r = WorkerRegistry::new(5.0);
        let replies: BTreeMap<String, Value> = [
            ("rs@h".to_string(), json!({"pool": {"implementation": "celeriac.worker:TokioPool", "max-concurrency": 2}})),
            ("py@h".to_string(), json!({"pool": {"implementation": "celery.concurrency.prefork:TaskPool", "max-concurrency": 4}})),
        ]
        .into_iter()
        .collect();
        r.apply_stats(&replies, 10.0);
        assert_eq!(r.inspect["rs@h"].sw_ident.as_deref(), Some("rs-celeriac"));
        assert_eq!(r.inspect["py@h"].sw_ident.as_deref(), Some("py-celery"));
        assert_eq!(r.inspect["py@h"].concurrency, Some(4));
    }

    #[test]
    fn heartbeats_keep_a_worker_alive_for_two_freq() {
        let mut r = WorkerRegistry::new(5.0);
        r.apply_event(&event("worker-heartbeat", "w@h", 100.0, 2.0));
        assert!(r.alive("w@h", 103.9));
        assert!(
            !r.alive("w@h", 104.1),
            "2 x freq without a heartbeat is offline"
        );
        assert_eq!(r.offline_nodes(104.1), vec!["w@h".to_string()]);
        let snap = r.snapshot(101.0);
        assert_eq!(snap[0].active, 1);
        assert_eq!(snap[0].loadavg, Some(0.5));
    }

    #[test]
    fn inspect_replies_do_not_keep_a_silent_heartbeat_worker_alive() {
        let mut r = WorkerRegistry::new(30.0);
        r.apply_event(&event("worker-heartbeat", "w@h", 100.0, 1.0));
        r.apply_stats(&[("w@h".to_string(), json!({}))].into(), 100.5);
        assert!(r.alive("w@h", 101.5));
        assert!(
            !r.alive("w@h", 102.6),
            "missed heartbeats decide, not the inspect window"
        );
    }

    #[test]
    fn worker_offline_event_is_immediate_and_a_new_heartbeat_revives() {
        let mut r = WorkerRegistry::new(5.0);
        r.apply_event(&event("worker-online", "w@h", 100.0, 2.0));
        r.apply_event(&event("worker-offline", "w@h", 101.0, 2.0));
        assert!(!r.alive("w@h", 101.1));
        assert_eq!(r.offline_nodes(101.1), vec!["w@h".to_string()]);
        r.apply_event(&event("worker-heartbeat", "w@h", 102.0, 2.0));
        assert!(r.alive("w@h", 102.5));
    }

    #[test]
    fn inspect_replies_count_for_workers_without_heartbeats() {
        let mut r = WorkerRegistry::new(5.0);
        let queues = json!([{"name": "celery"}, {"name": "w@h.dq2"}]);
        r.apply_active_queues(&[("w@h".to_string(), queues)].into(), 50.0);
        r.apply_stats(
            &[("w@h".to_string(), json!({"pool": {"max-concurrency": 3}}))].into(),
            50.0,
        );
        r.apply_active(&[("w@h".to_string(), json!([{}, {}]))].into(), 50.0);
        assert!(r.alive("w@h", 54.0));
        assert!(!r.alive("w@h", 56.0));
        let w = &r.snapshot(51.0)[0];
        assert_eq!(
            w.queues,
            vec!["celery".to_string()],
            "the .dq2 is not a shared queue"
        );
        assert_eq!((w.concurrency, w.active), (Some(3), 2));
    }

    #[test]
    fn never_seen_is_not_offline() {
        let mut r = WorkerRegistry::new(5.0);
        r.set_registrations(vec![Registration {
            node: "reg@h".into(),
            queues: vec!["q".into()],
            capabilities: Capabilities::default(),
            concurrency: Some(2),
            token_id: "t".into(),
            registered_at: 1.0,
        }]);
        assert!(!r.alive("reg@h", 10.0));
        assert!(
            r.offline_nodes(10.0).is_empty(),
            "a registered worker never seen alive has no .dq2 to rescue"
        );
        let w = &r.snapshot(10.0)[0];
        assert!(w.registered && !w.alive && w.seen_ago.is_none());
        assert_eq!(w.queues, vec!["q".to_string()]);
    }
}
