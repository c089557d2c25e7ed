//! What the worker knows about itself and its requests: reserved, scheduled (ETA) and active requests,
//! revoked ids, per-task totals, runtime overrides (rate and time limits), and the queues it consumes.
//! Remote control (`inspect`, `control`) reads and changes this; the executor keeps it current.

use celery_proto::LamportClock;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::task::StopSignal;

/// (soft, hard) seconds.
pub type TimeLimits = (Option<f64>, Option<f64>);

/// A request as `inspect active/reserved/scheduled/query_task` shows it (Celery's `Request.info()`).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub id: String,
    pub name: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub argsrepr: String,
    pub kwargsrepr: String,
    pub exchange: String,
    pub routing_key: String,
    pub priority: u8,
    pub redelivered: bool,
    pub time_start: Option<f64>,
    pub acknowledged: bool,
    pub eta: Option<DateTime<Utc>>,
    pub stamps: Map<String, Value>,
}

impl RequestInfo {
    /// Celery's `Request.info(safe)`: with `safe`, args and kwargs are repr strings.
    pub fn to_value(&self, hostname: &str, safe: bool) -> Value {
        let (args, kwargs) = if safe {
            (json!(self.argsrepr), json!(self.kwargsrepr))
        } else {
            (json!(self.args), json!(self.kwargs))
        };
        json!({
            "id": self.id,
            "name": self.name,
            "args": args,
            "kwargs": kwargs,
            "type": self.name,
            "hostname": hostname,
            "time_start": self.time_start,
            "acknowledged": self.acknowledged,
            "delivery_info": {
                "exchange": self.exchange,
                "routing_key": self.routing_key,
                "priority": self.priority,
                "redelivered": self.redelivered,
            },
            "worker_pid": if self.time_start.is_some() { json!(std::process::id()) } else { Value::Null },
        })
    }
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Reserved,
    Scheduled,
    Active,
}

pub struct Tracked {
    pub info: RequestInfo,
    pub phase: Phase,
    pub stop: Arc<StopSignal>,
}

/// Celery's `LimitedSet` of revoked ids: bounded, entries expire.
#[derive(Debug, Default)]
pub struct RevokedSet {
    order: VecDeque<(String, Instant)>,
    ids: HashMap<String, f64>,
}

impl RevokedSet {
    pub const MAX: usize = 50_000;
    pub const EXPIRES_SECS: u64 = 10_800;

    pub fn insert(&mut self, id: &str, monotonic: f64) {
        self.purge();
        if self.ids.insert(id.to_string(), monotonic).is_none() {
            self.order.push_back((id.to_string(), Instant::now()));
        }
        while self.order.len() > Self::MAX {
            if let Some((old, _)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    fn purge(&mut self) {
        while let Some((id, at)) = self.order.front() {
            if at.elapsed().as_secs() < Self::EXPIRES_SECS {
                break;
            }
            self.ids.remove(id);
            self.order.pop_front();
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.order.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Mingle's `{id: [monotonic float, id]}` form.
    pub fn as_mingle(&self) -> Map<String, Value> {
        self.ids
            .iter()
            .map(|(id, t)| (id.clone(), json!([*t, id])))
            .collect()
    }
}

/// State shared by the consumer, the executor, the heartbeat and remote control.
pub struct WorkerState {
    pub hostname: String,
    pub clock: LamportClock,
    pub started: Instant,
    pub requests: Mutex<HashMap<String, Tracked>>,
    pub revoked: Mutex<RevokedSet>,
    pub totals: Mutex<HashMap<String, u64>>,
    pub processed: AtomicU64,
    pub task_events: AtomicBool,
    pub queues: Mutex<Vec<String>>,
    /// Per-task overrides set by `rate_limit` (None = disabled) and `time_limit` ((soft, hard)).
    pub rate_limits: Mutex<HashMap<String, Option<String>>>,
    pub time_limits: Mutex<HashMap<String, TimeLimits>>,
    /// Delivery tags this worker holds unacked (their leases are renewed; restored on shutdown).
    pub held: Mutex<HashMap<String, Phase>>,
    /// Set to true by the `shutdown` control command; `main.rs` turns it into a warm shutdown.
    pub shutdown_request: tokio::sync::watch::Sender<bool>,
}

impl WorkerState {
    pub fn new(hostname: &str, queues: Vec<String>, task_events: bool) -> WorkerState {
        WorkerState {
            hostname: hostname.to_string(),
            clock: LamportClock::new(),
            started: Instant::now(),
            requests: Mutex::new(HashMap::new()),
            revoked: Mutex::new(RevokedSet::default()),
            totals: Mutex::new(HashMap::new()),
            processed: AtomicU64::new(0),
            task_events: AtomicBool::new(task_events),
            queues: Mutex::new(queues),
            rate_limits: Mutex::new(HashMap::new()),
            time_limits: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            shutdown_request: tokio::sync::watch::channel(false).0,
        }
    }

    /// Ask for a warm shutdown (remote control `shutdown`).
    pub fn request_shutdown(&self) {
        self.shutdown_request.send_replace(true);
    }

    pub fn active_count(&self) -> usize {
        self.requests
            .lock()
            .expect("requests")
            .values()
            .filter(|t| t.phase == Phase::Active)
            .count()
    }

    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.lock().expect("revoked").contains(id)
    }

    pub fn revoke(&self, id: &str) {
        let mono = self.started.elapsed().as_secs_f64() + 1.0;
        self.revoked.lock().expect("revoked").insert(id, mono);
    }

    pub fn count_task(&self, name: &str) {
        *self
            .totals
            .lock()
            .expect("totals")
            .entry(name.to_string())
            .or_default() += 1;
        self.processed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_phase(&self, id: &str, phase: Phase, f: impl FnOnce(&mut RequestInfo)) {
        if let Some(t) = self.requests.lock().expect("requests").get_mut(id) {
            t.phase = phase;
            f(&mut t.info);
        }
    }

    /// Requests in a phase, as Celery's info dicts.
    pub fn requests_in(&self, phase: Phase, safe: bool) -> Vec<Value> {
        let reqs = self.requests.lock().expect("requests");
        reqs.values()
            .filter(|t| t.phase == phase)
            .map(|t| t.info.to_value(&self.hostname, safe))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_set_is_bounded_and_answers() {
        let mut s = RevokedSet::default();
        s.insert("a", 1.0);
        s.insert("a", 2.0);
        assert!(s.contains("a") && !s.contains("b"));
        assert_eq!(s.ids(), vec!["a".to_string()]);
        let m = s.as_mingle();
        assert!(m["a"][0].is_f64(), "mingle timestamps must be floats");
    }
}
