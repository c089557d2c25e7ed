//! The event dispatcher: worker-online/heartbeat/offline always, task events when enabled (`-E` or
//! `enable_events`), published like Celery on Redis: `PUBLISH /{db}.celeryev/<routing key>`.

use broker::Broker;
use celery_proto::event::{event_body, event_envelope, routing_key};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::state::WorkerState;

pub const SW_IDENT: &str = "rs-celeriac";

#[derive(Clone)]
pub struct Events {
    broker: Broker,
    state: Arc<WorkerState>,
    pid: u32,
}

impl Events {
    pub fn new(broker: Broker, state: Arc<WorkerState>) -> Events {
        Events {
            broker,
            state,
            pid: std::process::id(),
        }
    }

    fn channel(&self, rk: &str) -> String {
        celery_proto::keys::fanout_channel(self.broker.db(), celery_proto::keys::EVENT_EXCHANGE, rk)
    }

    async fn publish(&self, event_type: &str, fields: Map<String, Value>) {
        let clock = self.state.clock.forward();
        let body = event_body(
            event_type,
            &self.state.hostname,
            self.pid,
            clock,
            fields,
            broker::now_f64(),
        );
        let rk = routing_key(event_type);
        let env = event_envelope(&self.state.hostname, &rk, &Value::Object(body));
        if let Err(e) = self
            .broker
            .publish_fanout(&self.channel(&rk), &env.encode())
            .await
        {
            tracing::warn!(event = event_type, error = %e, "could not publish event");
        }
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
        self.publish(event_type, m).await;
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
