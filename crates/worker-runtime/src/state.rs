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

use crate::task::{StopReason, StopSignal};

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

/// One request this worker holds, keyed by its delivery tag (a retry republished with the same task id is a
/// different delivery, so ids may repeat; tags do not).
struct Tracked {
    info: RequestInfo,
    phase: Phase,
    stop: Arc<StopSignal>,
    /// The message was settled (acked, requeued or restored): it is no longer ours to renew or give back.
    settled: bool,
    /// Delivery order, so messages are given back in the order they came.
    seq: u64,
}

/// The one table of requests and their lifecycle: phase, settlement and stop signal. Remote control, the lease
/// loop, shutdown and metrics read it; only the executor moves a request through it.
#[derive(Default)]
pub struct Requests {
    by_tag: Mutex<HashMap<String, Tracked>>,
    next_seq: AtomicU64,
}

impl Requests {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tracked>> {
        self.by_tag.lock().expect("requests")
    }

    /// A number for the next message taken from the broker (delivery order).
    pub fn next_delivery(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Start tracking a received request (phase Reserved); `seq` is its [`Requests::next_delivery`] number.
    pub fn track(&self, tag: &str, seq: u64, info: RequestInfo, stop: Arc<StopSignal>) {
        self.lock().insert(
            tag.to_string(),
            Tracked {
                info,
                phase: Phase::Reserved,
                stop,
                settled: false,
                seq,
            },
        );
    }

    /// Forget a request (its handler finished).
    pub fn untrack(&self, tag: &str) {
        self.lock().remove(tag);
    }

    /// Move a request to `phase` and update its info.
    pub fn set_phase(&self, tag: &str, phase: Phase, f: impl FnOnce(&mut RequestInfo)) {
        if let Some(t) = self.lock().get_mut(tag) {
            t.phase = phase;
            f(&mut t.info);
        }
    }

    /// Claim the right to settle a message: true once per tag (or for a tag not tracked), so a message is never
    /// acked or requeued twice (by its handler and by a shutdown giving messages back).
    pub fn claim_settlement(&self, tag: &str) -> bool {
        match self.lock().get_mut(tag) {
            Some(t) if t.settled => false,
            Some(t) => {
                t.settled = true;
                true
            }
            None => true,
        }
    }

    /// Note an early ack for `inspect active` (`acknowledged: true`).
    pub fn mark_acknowledged(&self, tag: &str) {
        if let Some(t) = self.lock().get_mut(tag) {
            t.info.acknowledged = true;
        }
    }

    /// Delivery tags of messages held unsettled (their leases are renewed).
    pub fn held_tags(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, t)| !t.settled)
            .map(|(tag, _)| tag.clone())
            .collect()
    }

    /// How many messages are held unsettled.
    pub fn held_count(&self) -> usize {
        self.lock().values().filter(|t| !t.settled).count()
    }

    /// Claim every unsettled message in these phases (for giving them back): their tags, newest first, so that
    /// restoring each to the front of its queue puts them back in the order they were delivered (kombu restores
    /// its delivered messages last-in first-out for the same reason).
    pub fn claim_in(&self, phases: &[Phase]) -> Vec<String> {
        let mut reqs = self.lock();
        let mut claimed: Vec<(u64, String)> = reqs
            .iter_mut()
            .filter(|(_, t)| !t.settled && phases.contains(&t.phase))
            .map(|(tag, t)| {
                t.settled = true;
                (t.seq, tag.clone())
            })
            .collect();
        claimed.sort_by_key(|c| std::cmp::Reverse(c.0));
        claimed.into_iter().map(|(_, tag)| tag).collect()
    }

    /// Tell every tracked request to stop.
    pub fn stop_all(&self, reason: StopReason) {
        for t in self.lock().values() {
            t.stop.stop(reason);
        }
    }

    pub fn count(&self, phase: Phase) -> usize {
        self.lock().values().filter(|t| t.phase == phase).count()
    }

    /// Phase and stop signal of every request with this task id.
    pub fn by_id(&self, id: &str) -> Vec<(Phase, Arc<StopSignal>)> {
        self.lock()
            .values()
            .filter(|t| t.info.id == id)
            .map(|t| (t.phase, t.stop.clone()))
            .collect()
    }

    /// Id, phase and stop signal of the requests whose info matches.
    pub fn matching(
        &self,
        pred: impl Fn(&RequestInfo) -> bool,
    ) -> Vec<(String, Phase, Arc<StopSignal>)> {
        self.lock()
            .values()
            .filter(|t| pred(&t.info))
            .map(|t| (t.info.id.clone(), t.phase, t.stop.clone()))
            .collect()
    }

    /// When a running request with this task id started (for the run time in metrics).
    pub fn started_at(&self, id: &str) -> Option<f64> {
        self.lock()
            .values()
            .filter(|t| t.info.id == id)
            .find_map(|t| t.info.time_start)
    }

    /// Apply `f` to the info of every request in `phase`.
    pub fn map_in<T>(&self, phase: Phase, f: impl Fn(&RequestInfo) -> T) -> Vec<T> {
        self.lock()
            .values()
            .filter(|t| t.phase == phase)
            .map(|t| f(&t.info))
            .collect()
    }

    /// Apply `f` to the info of every request whose id is in `ids`, with its phase.
    pub fn map_ids<T>(&self, ids: &[String], f: impl Fn(Phase, &RequestInfo) -> T) -> Vec<T> {
        self.lock()
            .values()
            .filter(|t| ids.contains(&t.info.id))
            .map(|t| f(t.phase, &t.info))
            .collect()
    }
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
    pub requests: Requests,
    revoked: Mutex<RevokedSet>,
    totals: Mutex<HashMap<String, u64>>,
    processed: AtomicU64,
    task_events: AtomicBool,
    queues: Mutex<Vec<String>>,
    /// Per-task overrides set by `rate_limit` (None = disabled) and `time_limit` ((soft, hard)).
    rate_limits: Mutex<HashMap<String, Option<String>>>,
    time_limits: Mutex<HashMap<String, TimeLimits>>,
    /// Set to true by the `shutdown` control command; the binary turns it into a warm shutdown.
    shutdown_request: tokio::sync::watch::Sender<bool>,
}

impl WorkerState {
    pub fn new(hostname: &str, queues: Vec<String>, task_events: bool) -> WorkerState {
        WorkerState {
            hostname: hostname.to_string(),
            clock: LamportClock::new(),
            started: Instant::now(),
            requests: Requests::default(),
            revoked: Mutex::new(RevokedSet::default()),
            totals: Mutex::new(HashMap::new()),
            processed: AtomicU64::new(0),
            task_events: AtomicBool::new(task_events),
            queues: Mutex::new(queues),
            rate_limits: Mutex::new(HashMap::new()),
            time_limits: Mutex::new(HashMap::new()),
            shutdown_request: tokio::sync::watch::channel(false).0,
        }
    }

    /// Ask for a warm shutdown (remote control `shutdown`).
    pub fn request_shutdown(&self) {
        self.shutdown_request.send_replace(true);
    }

    /// Resolves to true once a shutdown was requested by remote control.
    pub fn shutdown_requests(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown_request.subscribe()
    }

    pub fn active_count(&self) -> usize {
        self.requests.count(Phase::Active)
    }

    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.lock().expect("revoked").contains(id)
    }

    pub fn revoke(&self, id: &str) {
        let mono = self.started.elapsed().as_secs_f64() + 1.0;
        self.revoked.lock().expect("revoked").insert(id, mono);
    }

    /// Revoked ids, oldest first.
    pub fn revoked_ids(&self) -> Vec<String> {
        self.revoked.lock().expect("revoked").ids()
    }

    /// Revoked ids in mingle's `{id: [monotonic float, id]}` form.
    pub fn revoked_for_mingle(&self) -> Map<String, Value> {
        self.revoked.lock().expect("revoked").as_mingle()
    }

    /// Add a peer's revoked id (mingle); true when it was new.
    pub fn adopt_revoked(&self, id: &str, monotonic: f64) -> bool {
        let mut set = self.revoked.lock().expect("revoked");
        let new = !set.contains(id);
        set.insert(id, monotonic);
        new
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

    /// Tasks run, by name (`inspect stats` "total").
    pub fn totals(&self) -> std::collections::BTreeMap<String, u64> {
        self.totals
            .lock()
            .expect("totals")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    pub fn task_events(&self) -> bool {
        self.task_events.load(Ordering::Relaxed)
    }

    /// Turn task events on or off; returns the previous setting.
    pub fn set_task_events(&self, on: bool) -> bool {
        self.task_events.swap(on, Ordering::Relaxed)
    }

    /// The queues consumed, in order.
    pub fn queues(&self) -> Vec<String> {
        self.queues.lock().expect("queues").clone()
    }

    /// Start consuming from a queue; false when already consuming from it.
    pub fn add_queue(&self, queue: &str) -> bool {
        let mut qs = self.queues.lock().expect("queues");
        if qs.iter().any(|q| q == queue) {
            return false;
        }
        qs.push(queue.to_string());
        true
    }

    pub fn consumes(&self, queue: &str) -> bool {
        self.queues
            .lock()
            .expect("queues")
            .iter()
            .any(|q| q == queue)
    }

    pub fn remove_queue(&self, queue: &str) {
        self.queues.lock().expect("queues").retain(|q| q != queue);
    }

    /// The rate limit override of a task: `None` = no override, `Some(None)` = disabled.
    pub fn rate_limit_override(&self, task: &str) -> Option<Option<String>> {
        self.rate_limits
            .lock()
            .expect("rate limits")
            .get(task)
            .cloned()
    }

    pub fn set_rate_limit(&self, task: &str, limit: Option<String>) {
        self.rate_limits
            .lock()
            .expect("rate limits")
            .insert(task.to_string(), limit);
    }

    pub fn time_limit_override(&self, task: &str) -> Option<TimeLimits> {
        self.time_limits
            .lock()
            .expect("time limits")
            .get(task)
            .copied()
    }

    pub fn set_time_limits(&self, task: &str, limits: TimeLimits) {
        self.time_limits
            .lock()
            .expect("time limits")
            .insert(task.to_string(), limits);
    }

    /// Requests in a phase, as Celery's info dicts.
    pub fn requests_in(&self, phase: Phase, safe: bool) -> Vec<Value> {
        self.requests
            .map_in(phase, |info| info.to_value(&self.hostname, safe))
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
