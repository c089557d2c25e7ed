//! Helpers for the runtime tests: a worker running on a [`MemoryBroker`] under paused tokio time, probe tasks whose
//! behaviour the test controls (a gate to release them, a log of when they started and what stopped them), an event
//! recorder on the `celeryev` exchange, and a polling `until` that advances virtual time.

#![allow(dead_code)]

use celery_proto::TaskRequest;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use transport::memory::MemoryBroker;
use transport::{Binding, SharedBackend, SharedTransport, Transport};
use worker_runtime::state::{Phase, WorkerState};
use worker_runtime::task::StopReason;
use worker_runtime::{RuntimeConfig, Shutdown, Task, TaskError, TaskRegistry, Worker};

pub const NODE: &str = "w1@test";
pub const QUEUE: &str = "celery";
pub const DEAD_LETTERS: &str = "celeriac:dead_letter";

/// The test configuration: no mingle, no gossip, heartbeats far apart.
pub fn config() -> RuntimeConfig {
    let mut c = RuntimeConfig::new("memory://", NODE);
    c.without_mingle = true;
    c.without_gossip = true;
    c.heartbeat_interval = 3600.0;
    c
}

/// Poll `cond` every 10 ms of virtual time; panic with `what` if it is not true within `timeout`.
pub async fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A shared, append-only list.
#[derive(Clone)]
pub struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Log<T> {
    pub fn new() -> Log<T> {
        Log(Arc::new(Mutex::new(Vec::new())))
    }

    pub fn push(&self, v: T) {
        self.0.lock().unwrap().push(v);
    }

    pub fn all(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl<T: Clone> Default for Log<T> {
    fn default() -> Self {
        Log::new()
    }
}

/// A latch: tasks wait on it until the test opens it.
#[derive(Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(watch::channel(false).0))
    }

    pub fn open(&self) {
        self.0.send_replace(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// One start of a probe task body.
#[derive(Clone, Debug)]
pub struct Start {
    pub id: String,
    pub retries: u32,
    pub at: Instant,
}

/// Controllable task bodies and what they saw.
#[derive(Clone)]
pub struct Probe {
    pub gate: Gate,
    pub started: Log<Start>,
    pub stopped: Log<(String, StopReason)>,
}

impl Probe {
    pub fn new() -> Probe {
        Probe {
            gate: Gate::new(),
            started: Log::new(),
            stopped: Log::new(),
        }
    }

    fn note_start(&self, ctx: &worker_runtime::TaskContext) {
        self.started.push(Start {
            id: ctx.id.clone(),
            retries: ctx.retries,
            at: Instant::now(),
        });
    }

    /// Ids of the bodies started so far, in start order.
    pub fn started_ids(&self) -> Vec<String> {
        self.started.all().into_iter().map(|s| s.id).collect()
    }

    pub fn has_started(&self, id: &str) -> bool {
        self.started.all().iter().any(|s| s.id == id)
    }

    pub fn start_of(&self, id: &str) -> Option<Instant> {
        self.started.all().iter().find(|s| s.id == id).map(|s| s.at)
    }

    /// Waits for the gate or its stop signal; stopped, it records why and fails the way `check_stop` says.
    /// Returns `"released"` when the gate opens.
    pub fn block(&self, name: &str) -> Task {
        let p = self.clone();
        Task::new(name, &[], move |ctx, (): ()| {
            let p = p.clone();
            async move {
                p.note_start(&ctx);
                tokio::select! {
                    _ = p.gate.wait() => Ok(json!("released")),
                    _ = ctx.stop.wait() => {
                        if let Some(r) = ctx.stop.reason() {
                            p.stopped.push((ctx.id.clone(), r));
                        }
                        ctx.check_stop().map(|_| Value::Null)
                    }
                }
            }
        })
    }

    /// Waits for the gate and ignores its stop signal.
    pub fn stubborn(&self, name: &str) -> Task {
        let p = self.clone();
        Task::new(name, &[], move |ctx, (): ()| {
            let p = p.clone();
            async move {
                p.note_start(&ctx);
                p.gate.wait().await;
                Ok(json!("released"))
            }
        })
    }

    /// Records its start and returns its argument at once.
    pub fn record(&self, name: &str) -> Task {
        let p = self.clone();
        Task::new(name, &["x=null"], move |ctx, (x,): (Value,)| {
            let p = p.clone();
            async move {
                p.note_start(&ctx);
                Ok(x)
            }
        })
    }

    /// Asks to be retried in `countdown` seconds, at most `max_retries` times.
    pub fn retrying(&self, name: &str, countdown: f64, max_retries: u32) -> Task {
        let p = self.clone();
        Task::new(name, &[], move |ctx, (): ()| {
            let p = p.clone();
            async move {
                p.note_start(&ctx);
                Err::<Value, _>(TaskError::Retry {
                    countdown: Some(countdown),
                    exc: Some(celery_proto::ExceptionInfo::builtin(
                        "ValueError",
                        format!("try #{}", ctx.retries),
                    )),
                    max_retries: Some(max_retries),
                })
            }
        })
    }

    /// The built-in tasks plus `t.block`, `t.stubborn`, `t.record`.
    pub fn registry(&self) -> TaskRegistry {
        let mut reg = worker_runtime::default_registry();
        reg.register(self.block("t.block"));
        reg.register(self.stubborn("t.stubborn"));
        reg.register(self.record("t.record"));
        reg
    }
}

impl Default for Probe {
    fn default() -> Self {
        Probe::new()
    }
}

/// A worker running on its own task.
pub struct Running {
    pub broker: MemoryBroker,
    pub state: Arc<WorkerState>,
    shutdown: watch::Sender<Shutdown>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn start(config: RuntimeConfig, registry: TaskRegistry) -> Running {
        Running::start_on(MemoryBroker::new(), config, registry)
    }

    pub fn start_on(
        broker: MemoryBroker,
        config: RuntimeConfig,
        registry: TaskRegistry,
    ) -> Running {
        let (tx, rx) = watch::channel(Shutdown::Running);
        let transport: SharedTransport = Arc::new(broker.clone());
        let backend: SharedBackend = Arc::new(broker.clone());
        let worker = Worker::new(config, registry, transport, backend, rx);
        let state = worker.state();
        let handle = tokio::spawn(worker.run());
        Running {
            broker,
            state,
            shutdown: tx,
            handle: Some(handle),
        }
    }

    pub fn transport(&self) -> SharedTransport {
        Arc::new(self.broker.clone())
    }

    pub async fn publish(&self, req: &TaskRequest) {
        self.broker
            .publish(&req.queue, &req.envelope())
            .await
            .expect("publish");
    }

    pub fn result(&self, id: &str) -> Option<Value> {
        self.broker.result(id)
    }

    pub fn status(&self, id: &str) -> Option<String> {
        self.result(id)
            .and_then(|m| m["status"].as_str().map(str::to_string))
    }

    /// Wait (up to a minute of virtual time) for `id` to have `status` stored; its meta.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        until(
            &format!("{id} stored as {status}"),
            Duration::from_secs(60),
            || self.status(id).as_deref() == Some(status),
        )
        .await;
        self.result(id).unwrap()
    }

    /// The phase of the (first) request with this id.
    pub fn phase(&self, id: &str) -> Option<Phase> {
        self.state.requests.by_id(id).first().map(|(p, _)| *p)
    }

    pub fn signal(&self, s: Shutdown) {
        self.shutdown.send_replace(s);
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Wait (up to a minute of virtual time) for `run()` to return; its result.
    pub async fn join(&mut self) -> anyhow::Result<()> {
        let handle = self.handle.take().expect("joined twice");
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("worker did not stop within a minute")
            .expect("worker task panicked")
    }

    /// Warm shutdown, and check `run()` returned cleanly.
    pub async fn stop(mut self) {
        self.signal(Shutdown::Warm);
        self.join().await.expect("worker run() failed");
    }
}

/// Everything broadcast on the `celeryev` exchange, one event dict per entry (`task.multi` lists are flattened).
#[derive(Clone)]
pub struct Events(Log<Value>);

impl Events {
    /// Subscribe before the worker starts so nothing is missed.
    pub async fn subscribe(broker: &MemoryBroker) -> Events {
        let binding = Binding::new("celeryev", "#", "celeryev.test", Duration::from_secs(60));
        let mut sub = broker.subscribe(&binding).await.expect("subscribe");
        let log = Log::new();
        let out = log.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let Ok(body) = m.message.and_then(|m| m.json_body()) else {
                    continue;
                };
                match body {
                    Value::Array(items) => items.into_iter().for_each(|e| out.push(e)),
                    other => out.push(other),
                }
            }
        });
        Events(log)
    }

    pub fn all(&self) -> Vec<Value> {
        self.0.all()
    }

    /// Event types about task `id`, in order.
    pub fn types_for(&self, id: &str) -> Vec<String> {
        self.for_task(id)
            .iter()
            .filter_map(|e| e["type"].as_str().map(str::to_string))
            .collect()
    }

    pub fn for_task(&self, id: &str) -> Vec<Value> {
        self.all().into_iter().filter(|e| e["uuid"] == id).collect()
    }

    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }
}

/// `(exc_type, first exc_message)` of a stored failure or revocation.
pub fn exception(meta: &Value) -> (String, String) {
    (
        meta["result"]["exc_type"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        meta["result"]["exc_message"][0]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// A request for `name` with these positional arguments.
pub fn request(name: &str, args: Vec<Value>) -> TaskRequest {
    let mut r = TaskRequest::new(name);
    r.args = args;
    r
}
