//! The event dispatcher: worker-online/heartbeat/offline always, task events when enabled (`-E` or
//! `enable_events`), published like Celery on Redis: `PUBLISH /{db}.celeryev/<routing key>`.
//!
//! Like a Celery worker with an event loop, task events are buffered and published as `task.multi` lists: a
//! background publisher sends whatever is waiting (up to 24 events) in one message as soon as it is free, so
//! nothing waits for a timer. Worker events go through the same queue, each on its own routing key, after the
//! task events queued before them; their senders wait until they are on the wire (so `worker-offline` is).

use broker::Broker;
use celery_proto::event::{event_body, event_envelope, routing_key};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};

use crate::state::WorkerState;

pub const SW_IDENT: &str = "rs-celeriac";

/// Celery flushes its task-event buffer at 24 events.
const MULTI_MAX: usize = 24;

enum Out {
    Task(Map<String, Value>),
    Worker(String, Map<String, Value>, oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Events {
    broker: Broker,
    state: Arc<WorkerState>,
    pid: u32,
    tx: Option<mpsc::UnboundedSender<Out>>,
}

impl Events {
    /// Create the dispatcher; inside a tokio runtime it starts the background publisher, elsewhere every event is
    /// published directly.
    pub fn new(broker: Broker, state: Arc<WorkerState>) -> Events {
        let tx = tokio::runtime::Handle::try_current().ok().map(|h| {
            let (tx, rx) = mpsc::unbounded_channel();
            h.spawn(publisher(broker.clone(), state.hostname.clone(), rx));
            tx
        });
        Events {
            broker,
            state,
            pid: std::process::id(),
            tx,
        }
    }

    fn body(&self, event_type: &str, fields: Map<String, Value>) -> Map<String, Value> {
        let clock = self.state.clock.forward();
        event_body(
            event_type,
            &self.state.hostname,
            self.pid,
            clock,
            fields,
            broker::now_f64(),
        )
    }

    async fn publish(&self, event_type: &str, fields: Map<String, Value>) {
        let body = self.body(event_type, fields);
        let rk = routing_key(event_type);
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Out::Worker(rk.clone(), body.clone(), done)).is_ok() {
                let _ = wait.await;
                return;
            }
        }
        publish_one(
            &self.broker,
            &self.state.hostname,
            &rk,
            &Value::Object(body),
        )
        .await;
    }

    /// A task event, sent only while task events are enabled.
    pub async fn task(&self, event_type: &str, uuid: &str, fields: Value) {
        self.count(event_type, uuid, &fields);
        if !self.state.task_events.load(Ordering::Relaxed) {
            return;
        }
        let mut m = Map::new();
        m.insert("uuid".into(), json!(uuid));
        if let Value::Object(f) = fields {
            m.extend(f);
        }
        let body = self.body(event_type, m);
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::error::SendError(Out::Task(body))) = tx.send(Out::Task(body)) {
                    publish_one(
                        &self.broker,
                        &self.state.hostname,
                        "task.multi",
                        &json!([body]),
                    )
                    .await;
                }
            }
            None => {
                let rk = routing_key(event_type);
                publish_one(
                    &self.broker,
                    &self.state.hostname,
                    &rk,
                    &Value::Object(body),
                )
                .await;
            }
        }
    }

    /// Feed the Prometheus counters (every task outcome passes here, with or without task events).
    fn count(&self, event_type: &str, uuid: &str, fields: &Value) {
        let (name, started) = {
            let reqs = self.state.requests.lock().expect("requests");
            match reqs.get(uuid) {
                Some(t) => (t.info.name.clone(), t.info.time_start),
                None => (
                    fields
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string(),
                    None,
                ),
            }
        };
        let finished = matches!(
            event_type,
            "task-succeeded" | "task-failed" | "task-revoked"
        );
        let runtime = fields
            .get("runtime")
            .and_then(Value::as_f64)
            .or_else(|| started.filter(|_| finished).map(|t| broker::now_f64() - t));
        crate::metrics::on_task_event(event_type, &name, runtime);
    }

    /// worker-online / worker-heartbeat / worker-offline with the real numbers.
    pub async fn worker(&self, event_type: &str, freq: f64) {
        let mut m = Map::new();
        m.insert("freq".into(), json!(freq));
        m.insert("active".into(), json!(self.state.active_count()));
        m.insert(
            "processed".into(),
            json!(self.state.processed.load(Ordering::Relaxed)),
        );
        m.insert("loadavg".into(), json!(loadavg()));
        m.insert("sw_ident".into(), json!(SW_IDENT));
        m.insert("sw_ver".into(), json!(env!("CARGO_PKG_VERSION")));
        m.insert("sw_sys".into(), json!(sw_sys()));
        self.publish(event_type, m).await;
    }

    /// The reply to the `heartbeat` control command: a heartbeat with only the software fields.
    pub async fn heartbeat_wakeup(&self) {
        let mut m = Map::new();
        m.insert("freq".into(), json!(5.0));
        m.insert("sw_ident".into(), json!(SW_IDENT));
        m.insert("sw_ver".into(), json!(env!("CARGO_PKG_VERSION")));
        m.insert("sw_sys".into(), json!(sw_sys()));
        self.publish("worker-heartbeat", m).await;
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

async fn publish_one(broker: &Broker, hostname: &str, rk: &str, body: &Value) {
    let channel =
        celery_proto::keys::fanout_channel(broker.db(), celery_proto::keys::EVENT_EXCHANGE, rk);
    let env = event_envelope(hostname, rk, body);
    if let Err(e) = broker.publish_fanout(&channel, &env.encode()).await {
        broker.note_connection_error(&e);
        tracing::warn!(routing_key = rk, error = %e, "could not publish event");
    }
}

/// The background publisher: task events waiting together go out as one `task.multi` list.
async fn publisher(broker: Broker, hostname: String, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut batch: Vec<Value> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Out::Task(m) => {
                    batch.push(Value::Object(m));
                    if batch.len() >= MULTI_MAX {
                        flush(&broker, &hostname, &mut batch).await;
                    }
                }
                Out::Worker(rk, m, done) => {
                    flush(&broker, &hostname, &mut batch).await;
                    publish_one(&broker, &hostname, &rk, &Value::Object(m)).await;
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        flush(&broker, &hostname, &mut batch).await;
    }
}

async fn flush(broker: &Broker, hostname: &str, batch: &mut Vec<Value>) {
    if batch.is_empty() {
        return;
    }
    let body = Value::Array(std::mem::take(batch));
    publish_one(broker, hostname, "task.multi", &body).await;
}
