//! A cluster state model fed by events, like Celery's `events.state.State` as Flower uses it: per worker the
//! last heartbeat, `freq`, `active`, `processed`, `loadavg` and software fields, with Flower's liveness rule
//! (a heartbeat within `2 * freq`), and a bounded map of recent tasks with their latest state.

use celery_proto::event::EventKind;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::receiver::Event;

/// What is known about one worker.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerView {
    pub hostname: String,
    /// Seen alive and not announced offline since.
    pub online: bool,
    /// Local time of the last worker event, or the timestamp of its last task event.
    pub last_heartbeat: Option<f64>,
    /// Heartbeat interval in seconds the worker announced (2.0 by default).
    pub freq: f64,
    pub active: u64,
    pub processed: u64,
    pub loadavg: Vec<f64>,
    pub sw_ident: Option<String>,
    pub sw_ver: Option<String>,
    pub sw_sys: Option<String>,
    pub pid: Option<u64>,
    pub clock: u64,
    /// Counts of task event types this worker sent (`task-received`, `task-succeeded`, ...).
    pub task_events: BTreeMap<String, u64>,
}

impl WorkerView {
    /// Flower's rule: online and the last heartbeat is younger than twice the announced interval.
    pub fn alive(&self, now: f64) -> bool {
        let freq = if self.freq > 0.0 { self.freq } else { 2.0 };
        self.online && self.last_heartbeat.is_some_and(|t| now < t + 2.0 * freq)
    }
}

/// The latest known state of a task.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskView {
    pub uuid: String,
    pub name: Option<String>,
    /// Celery state: RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED, REJECTED (PENDING for task-sent).
    pub state: String,
    pub worker: Option<String>,
    pub args: Option<String>,
    pub kwargs: Option<String>,
    pub result: Option<String>,
    pub exception: Option<String>,
    pub traceback: Option<String>,
    pub runtime: Option<f64>,
    pub timestamp: f64,
}

fn precedence(state: &str) -> u8 {
    match state {
        "PENDING" => 0,
        "RECEIVED" => 1,
        "STARTED" => 2,
        "RETRY" => 3,
        _ => 4,
    }
}

/// Workers and recent tasks, updated with [`ClusterState::apply`].
#[derive(Debug, Clone)]
pub struct ClusterState {
    pub workers: BTreeMap<String, WorkerView>,
    pub tasks: HashMap<String, TaskView>,
    order: VecDeque<String>,
    max_tasks: usize,
    pub events_seen: u64,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState::new(10_000)
    }
}

impl ClusterState {
    /// A state keeping at most `max_tasks` tasks (the oldest are forgotten first).
    pub fn new(max_tasks: usize) -> ClusterState {
        ClusterState {
            workers: BTreeMap::new(),
            tasks: HashMap::new(),
            order: VecDeque::new(),
            max_tasks: max_tasks.max(1),
            events_seen: 0,
        }
    }

    /// Apply one event. Every event counts in `events_seen`; worker events update their worker, task events their
    /// task (and the sending worker's liveness and counters). A `type` Celery does not define (`kind()` is `None`)
    /// updates a worker's fields if it is a `worker-*` one, and is otherwise only counted.
    pub fn apply(&mut self, ev: &Event) {
        self.events_seen += 1;
        let host = ev.hostname();
        if host.is_empty() {
            return;
        }
        let Some(kind) = ev.kind() else {
            // Celery's own `worker-*` types are all known; an unknown one still carries worker fields.
            if ev.event_type().starts_with("worker-") {
                self.apply_worker_event(ev, None, host);
            }
            return;
        };
        let Some(state) = kind.task_state() else {
            self.apply_worker_event(ev, Some(kind), host);
            return;
        };
        let sent = kind == EventKind::TaskSent;
        if !sent {
            let ts = ev.timestamp();
            let w = self.worker_mut(host);
            w.online = true;
            w.last_heartbeat = Some(w.last_heartbeat.map_or(ts, |t| t.max(ts)));
            *w.task_events.entry(kind.as_str().to_string()).or_default() += 1;
        }
        let Some(uuid) = ev.uuid() else { return };
        if !self.tasks.contains_key(uuid) {
            self.order.push_back(uuid.to_string());
            while self.order.len() > self.max_tasks {
                if let Some(old) = self.order.pop_front() {
                    self.tasks.remove(&old);
                }
            }
        }
        let t = self.tasks.entry(uuid.to_string()).or_default();
        t.uuid = uuid.to_string();
        if t.state.is_empty() || precedence(state) >= precedence(&t.state) {
            t.state = state.to_string();
            t.timestamp = ev.timestamp();
        }
        if !sent {
            t.worker = Some(host.to_string());
        }
        let s = |k: &str| ev.str(k).map(str::to_string);
        if let Some(n) = s("name") {
            t.name = Some(n);
        }
        if let Some(a) = s("args") {
            t.args = Some(a);
        }
        if let Some(k) = s("kwargs") {
            t.kwargs = Some(k);
        }
        if let Some(r) = s("result") {
            t.result = Some(r);
        }
        if let Some(e) = s("exception") {
            t.exception = Some(e);
        }
        if let Some(tb) = s("traceback") {
            t.traceback = Some(tb);
        }
        if let Some(r) = ev.get("runtime").and_then(Value::as_f64) {
            t.runtime = Some(r);
        }
    }

    /// A worker event (`kind` is `None` for a `worker-*` type Celery does not define: fields only).
    fn apply_worker_event(&mut self, ev: &Event, kind: Option<EventKind>, host: &str) {
        let w = self.worker_mut(host);
        let num = |k: &str| ev.get(k).and_then(Value::as_u64);
        if let Some(f) = ev.freq() {
            w.freq = f;
        }
        if let Some(a) = ev.active() {
            w.active = a;
        }
        if let Some(p) = ev.processed() {
            w.processed = p;
        }
        if let Some(l) = ev.loadavg() {
            w.loadavg = l;
        }
        for (key, slot) in [
            ("sw_ident", &mut w.sw_ident),
            ("sw_ver", &mut w.sw_ver),
            ("sw_sys", &mut w.sw_sys),
        ] {
            if let Some(s) = ev.str(key) {
                *slot = Some(s.to_string());
            }
        }
        if let Some(p) = num("pid") {
            w.pid = Some(p);
        }
        if let Some(c) = num("clock") {
            w.clock = w.clock.max(c);
        }
        match kind {
            Some(EventKind::WorkerOffline) => {
                w.online = false;
                w.last_heartbeat = None;
            }
            Some(EventKind::WorkerOnline | EventKind::WorkerHeartbeat) => {
                w.online = true;
                w.last_heartbeat = Some(ev.received_at);
            }
            _ => {}
        }
    }

    fn worker_mut(&mut self, host: &str) -> &mut WorkerView {
        self.workers
            .entry(host.to_string())
            .or_insert_with(|| WorkerView {
                hostname: host.to_string(),
                freq: 2.0,
                ..WorkerView::default()
            })
    }

    /// Names of the workers alive at `now` (unix seconds).
    pub fn alive_workers(&self, now: f64) -> Vec<&WorkerView> {
        self.workers.values().filter(|w| w.alive(now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(body: Value, at: f64) -> Event {
        Event::new(body.as_object().unwrap().clone(), at)
    }

    #[test]
    fn heartbeats_make_a_worker_alive_and_offline_ends_it() {
        let mut s = ClusterState::default();
        s.apply(&ev(
            json!({"hostname": "w@h", "type": "worker-online", "freq": 2.0, "active": 0, "processed": 0, "loadavg": [0.1, 0.2, 0.3], "sw_ident": "rs-celeriac", "timestamp": 100.0}),
            100.0,
        ));
        assert!(s.workers["w@h"].alive(101.0));
        assert!(!s.workers["w@h"].alive(104.5), "older than 2*freq");
        s.apply(&ev(
            json!({"hostname": "w@h", "type": "worker-heartbeat", "freq": 2.0, "active": 3, "processed": 7, "timestamp": 104.0}),
            104.0,
        ));
        let w = &s.workers["w@h"];
        assert_eq!((w.active, w.processed), (3, 7));
        assert_eq!(w.sw_ident.as_deref(), Some("rs-celeriac"));
        assert!(w.alive(105.0));
        s.apply(&ev(
            json!({"hostname": "w@h", "type": "worker-offline", "timestamp": 105.0}),
            105.0,
        ));
        assert!(!s.workers["w@h"].alive(105.1));
    }

    #[test]
    fn task_states_do_not_go_backwards() {
        let mut s = ClusterState::new(2);
        s.apply(&ev(
            json!({"hostname": "w@h", "type": "task-succeeded", "uuid": "a", "result": "5", "runtime": 0.5, "timestamp": 2.0}),
            2.0,
        ));
        s.apply(&ev(
            json!({"hostname": "w@h", "type": "task-received", "uuid": "a", "name": "t.add", "args": "(2, 3)", "kwargs": "{}", "timestamp": 1.0}),
            2.1,
        ));
        let t = &s.tasks["a"];
        assert_eq!(t.state, "SUCCESS");
        assert_eq!(t.name.as_deref(), Some("t.add"));
        assert_eq!(t.runtime, Some(0.5));
        s.apply(&ev(
            json!({"hostname": "w@h", "type": "task-received", "uuid": "b", "timestamp": 3.0}),
            3.0,
        ));
        s.apply(&ev(
            json!({"hostname": "w@h", "type": "task-received", "uuid": "c", "timestamp": 3.0}),
            3.0,
        ));
        assert!(!s.tasks.contains_key("a"), "bounded: oldest task forgotten");
        assert_eq!(s.workers["w@h"].task_events["task-received"], 3);
    }

    #[test]
    fn unknown_event_types_are_counted_and_otherwise_ignored() {
        let mut s = ClusterState::default();
        let progress = ev(
            json!({"hostname": "w@h", "type": "task-progress", "uuid": "a", "name": "t.add", "timestamp": 1.0}),
            1.0,
        );
        assert_eq!(progress.kind(), None);
        s.apply(&progress);
        assert_eq!(s.events_seen, 1);
        assert!(
            s.tasks.is_empty() && s.workers.is_empty(),
            "no task state, no worker"
        );
        let custom = ev(
            json!({"hostname": "w@h", "type": "worker-custom", "freq": 5.0, "active": 2, "timestamp": 2.0}),
            2.0,
        );
        assert_eq!(custom.kind(), None);
        s.apply(&custom);
        let w = &s.workers["w@h"];
        assert_eq!(
            (w.freq, w.active),
            (5.0, 2),
            "an unknown worker-* event still updates the fields"
        );
        assert!(
            !w.online && w.last_heartbeat.is_none(),
            "but is no sign of life"
        );
        assert!(w.task_events.is_empty());
        assert_eq!(s.events_seen, 2);
    }
}
