//! The event dispatcher: worker-online/heartbeat/offline always, task events when enabled (`-E` or
//! `enable_events`), published like Celery on Redis: `PUBLISH /{db}.celeryev/<routing key>`.
//!
//! Like a Celery worker with an event loop, task events are buffered and published as `task.multi` lists: a
//! background publisher sends whatever is waiting (up to 24 events) in one message as soon as it is free, so
//! nothing waits for a timer. Worker events go through the same queue, each on its own routing key, after the
//! task events queued before them; their senders wait until they are on the wire (so `worker-offline` is).

use celery_proto::event::{EventKind, TaskEvent, event_body, event_envelope};
use celery_proto::keys::EVENT_EXCHANGE;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use transport::{SharedTransport, now_f64};

use crate::state::WorkerState;

pub const SW_IDENT: &str = "rs-celeriac";

/// Celery flushes its task-event buffer at 24 events.
const MULTI_MAX: usize = 24;

enum Out {
    Task(Map<String, Value>),
    Worker(String, Map<String, Value>, oneshot::Sender<()>),
}

/// The worker's event sink: typed task and worker events in, Celery's event messages out (cheap to clone).
#[derive(Clone)]
pub struct EventSink {
    transport: SharedTransport,
    state: Arc<WorkerState>,
    pid: u32,
    tx: Option<mpsc::UnboundedSender<Out>>,
}

impl EventSink {
    /// Create the sink; inside a tokio runtime it starts the background publisher, elsewhere every event is
    /// published directly.
    pub fn new(transport: SharedTransport, state: Arc<WorkerState>) -> EventSink {
        let tx = tokio::runtime::Handle::try_current().ok().map(|h| {
            let (tx, rx) = mpsc::unbounded_channel();
            h.spawn(publisher(transport.clone(), state.hostname.clone(), rx));
            tx
        });
        EventSink {
            transport,
            state,
            pid: std::process::id(),
            tx,
        }
    }

    fn body(&self, kind: EventKind, fields: Map<String, Value>) -> Map<String, Value> {
        let clock = self.state.clock.forward();
        event_body(
            kind.as_str(),
            &self.state.hostname,
            self.pid,
            clock,
            fields,
            now_f64(),
        )
    }

    async fn publish(&self, kind: EventKind, fields: Map<String, Value>) {
        let body = self.body(kind, fields);
        let rk = kind.routing_key();
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Out::Worker(rk.clone(), body.clone(), done)).is_ok() {
                let _ = wait.await;
                return;
            }
        }
        publish_one(
            &*self.transport,
            &self.state.hostname,
            &rk,
            &Value::Object(body),
        )
        .await;
    }

    /// A task event of task `name`, sent only while task events are enabled (counted in the metrics always).
    pub async fn task(&self, name: &str, uuid: &str, event: TaskEvent) {
        self.count(name, uuid, &event);
        if !self.state.task_events() {
            return;
        }
        let kind = event.kind();
        let mut m = Map::new();
        m.insert("uuid".into(), json!(uuid));
        m.extend(event.fields());
        let body = self.body(kind, m);
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::error::SendError(Out::Task(body))) = tx.send(Out::Task(body)) {
                    publish_one(
                        &*self.transport,
                        &self.state.hostname,
                        "task.multi",
                        &json!([body]),
                    )
                    .await;
                }
            }
            None => {
                let rk = kind.routing_key();
                publish_one(
                    &*self.transport,
                    &self.state.hostname,
                    &rk,
                    &Value::Object(body),
                )
                .await;
            }
        }
    }

    /// Feed the Prometheus counters (every task outcome passes here, with or without task events). The run time of
    /// an end without one of its own (failed, revoked) is measured from the request's start, looked up only then.
    fn count(&self, name: &str, uuid: &str, event: &TaskEvent) {
        let kind = event.kind();
        let runtime = event.runtime().or_else(|| {
            kind.ends_run()
                .then(|| self.state.requests.started_at(uuid))
                .flatten()
                .map(|t| now_f64() - t)
        });
        crate::metrics::on_task_event(kind, name, runtime);
    }

    /// worker-online / worker-heartbeat / worker-offline with the real numbers.
    pub async fn worker(&self, kind: EventKind, freq: f64) {
        let mut m = Map::new();
        m.insert("freq".into(), json!(freq));
        m.insert("active".into(), json!(self.state.active_count()));
        m.insert("processed".into(), json!(self.state.processed()));
        m.insert("loadavg".into(), json!(loadavg()));
        m.insert("sw_ident".into(), json!(SW_IDENT));
        m.insert("sw_ver".into(), json!(env!("CARGO_PKG_VERSION")));
        m.insert("sw_sys".into(), json!(sw_sys()));
        self.publish(kind, m).await;
    }

    /// The reply to the `heartbeat` control command: a heartbeat with only the software fields.
    pub async fn heartbeat_wakeup(&self) {
        let mut m = Map::new();
        m.insert("freq".into(), json!(5.0));
        m.insert("sw_ident".into(), json!(SW_IDENT));
        m.insert("sw_ver".into(), json!(env!("CARGO_PKG_VERSION")));
        m.insert("sw_sys".into(), json!(sw_sys()));
        self.publish(EventKind::WorkerHeartbeat, m).await;
    }
}

/// `platform.system()`.
pub fn sw_sys() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        other => other,
    }
}

/// The 1, 5 and 15 minute load averages, rounded up to two decimals like Celery.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (i, v) in text.split_whitespace().take(3).enumerate() {
        let f: f64 = v.parse().unwrap_or(0.0);
        out[i] = (f * 100.0).ceil() / 100.0;
    }
    out
}

async fn publish_one(transport: &dyn transport::Transport, hostname: &str, rk: &str, body: &Value) {
    let env = event_envelope(hostname, rk, body);
    if let Err(e) = transport.broadcast(EVENT_EXCHANGE, rk, &env).await {
        transport.note_error(&e);
        tracing::warn!(routing_key = rk, error = %e, "could not publish event");
    }
}

/// The background publisher: task events waiting together go out as one `task.multi` list.
async fn publisher(
    transport: SharedTransport,
    hostname: String,
    mut rx: mpsc::UnboundedReceiver<Out>,
) {
    let mut batch: Vec<Value> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Out::Task(m) => {
                    batch.push(Value::Object(m));
                    if batch.len() >= MULTI_MAX {
                        flush(&*transport, &hostname, &mut batch).await;
                    }
                }
                Out::Worker(rk, m, done) => {
                    flush(&*transport, &hostname, &mut batch).await;
                    publish_one(&*transport, &hostname, &rk, &Value::Object(m)).await;
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        flush(&*transport, &hostname, &mut batch).await;
    }
}

async fn flush(transport: &dyn transport::Transport, hostname: &str, batch: &mut Vec<Value>) {
    if batch.is_empty() {
        return;
    }
    let body = Value::Array(std::mem::take(batch));
    publish_one(transport, hostname, "task.multi", &body).await;
}
