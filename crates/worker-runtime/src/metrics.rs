//! Prometheus metrics of the worker, served on `--metrics-port` by a tiny HTTP responder on tokio
//! (`GET /metrics`; anything else is 404). Counters and histograms are fed by the task-event hook in
//! `events.rs` (which sees every task outcome whether or not task events are enabled); gauges are read from the
//! worker state at scrape time.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use celery_proto::event::EventKind;
use std::sync::Arc;
use transport::SharedTransport;

use crate::state::WorkerState;

/// The worker's metrics (one set per process).
pub struct Metrics {
    pub registry: Registry,
    /// Task outcomes by task name and Celery state (RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED, REJECTED).
    pub tasks: IntCounterVec,
    /// Run time of finished tasks by name.
    pub runtime: HistogramVec,
    pub prefetch_in_use: IntGauge,
    pub active: IntGauge,
    pub broker_reconnects: IntGauge,
    pub task_events_enabled: IntGauge,
    /// Messages this worker dead-lettered.
    pub dead_letters: IntCounter,
    /// Dead letters dropped from the store to stay within its bounds, by reason (`too_many`, `too_old`).
    pub dead_letters_dropped: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let tasks = IntCounterVec::new(
            Opts::new(
                "celeriac_worker_tasks_total",
                "Task events by task name and state",
            ),
            &["task", "state"],
        )
        .expect("metric");
        let runtime = HistogramVec::new(
            HistogramOpts::new(
                "celeriac_worker_task_runtime_seconds",
                "Run time of finished tasks",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0,
            ]),
            &["task"],
        )
        .expect("metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("metric");
        let prefetch_in_use = gauge(
            "celeriac_worker_prefetch_in_use",
            "Messages this worker holds unacknowledged (reserved, scheduled, active)",
        );
        let active = gauge("celeriac_worker_active_tasks", "Tasks running now");
        let broker_reconnects = gauge(
            "celeriac_worker_broker_reconnects_total",
            "Broker connection losses seen since start",
        );
        let task_events_enabled = gauge(
            "celeriac_worker_task_events_enabled",
            "1 when task events are being sent",
        );
        let dead_letters = IntCounter::new(
            "celeriac_worker_dead_letters_total",
            "Messages this worker could not process and kept as dead letters",
        )
        .expect("metric");
        let dead_letters_dropped = IntCounterVec::new(
            Opts::new(
                "celeriac_worker_dead_letters_dropped_total",
                "Dead letters dropped from the store to stay within --dead-letter-max (too_many) or --dead-letter-max-age (too_old)",
            ),
            &["reason"],
        )
        .expect("metric");
        for reason in ["too_many", "too_old"] {
            dead_letters_dropped.with_label_values(&[reason]);
        }
        for c in [
            Box::new(tasks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dead_letters.clone()),
            Box::new(dead_letters_dropped.clone()),
            Box::new(runtime.clone()),
            Box::new(prefetch_in_use.clone()),
            Box::new(active.clone()),
            Box::new(broker_reconnects.clone()),
            Box::new(task_events_enabled.clone()),
        ] {
            registry.register(c).expect("register metric");
        }
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Metrics {
            registry,
            tasks,
            runtime,
            prefetch_in_use,
            active,
            broker_reconnects,
            task_events_enabled,
            dead_letters,
            dead_letters_dropped,
        }
    }
}

/// Count and log dead letters the store dropped to stay within the worker's bounds.
pub fn dead_letters_dropped(
    dropped: &transport::DeadLetterDropped,
    config: &crate::config::RuntimeConfig,
) {
    let m = &*METRICS;
    for (reason, n) in [("too_many", dropped.too_many), ("too_old", dropped.too_old)] {
        if n > 0 {
            m.dead_letters_dropped
                .with_label_values(&[reason])
                .inc_by(n);
        }
    }
    if dropped.too_many + dropped.too_old > 0 {
        tracing::warn!(
            store = %config.dead_letter_key,
            too_many = dropped.too_many,
            too_old = dropped.too_old,
            max_entries = config.dead_letter_bounds.max_entries,
            max_age_secs = config.dead_letter_bounds.max_age.map(|a| a.as_secs()),
            "dropped the oldest dead letters to stay within the bounds"
        );
    }
}

/// Count a task event; `runtime` is observed for finished tasks.
pub fn on_task_event(kind: EventKind, task: &str, runtime: Option<f64>) {
    let Some(state) = kind.task_state() else {
        return;
    };
    METRICS.tasks.with_label_values(&[task, state]).inc();
    if let Some(r) = runtime {
        METRICS.runtime.with_label_values(&[task]).observe(r);
    }
}

/// What the gauges are read from at scrape time.
#[derive(Clone)]
pub struct Sources {
    pub state: Arc<WorkerState>,
    pub transport: SharedTransport,
}

/// The text exposition of all metrics, with gauges refreshed from the worker.
pub fn render(src: &Sources) -> String {
    let m = &*METRICS;
    m.prefetch_in_use
        .set(src.state.requests.held_count() as i64);
    m.active.set(src.state.active_count() as i64);
    m.broker_reconnects.set(src.transport.reconnects() as i64);
    m.task_events_enabled
        .set(i64::from(src.state.task_events()));
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "could not encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Bind `0.0.0.0:port` (port 0 picks a free one) and serve until the task is aborted. Returns the bound address.
pub async fn serve(sources: Sources, port: u16) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let w = sources.clone();
            tokio::spawn(async move {
                let mut head = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let line = String::from_utf8_lossy(&head);
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let path = path.split('?').next().unwrap_or("");
                let (status, ctype, body) =
                    if method == "GET" && (path == "/metrics" || path == "/") {
                        ("200 OK", "text/plain; version=0.0.4", render(&w))
                    } else {
                        ("404 Not Found", "text/plain", "not found\n".to_string())
                    };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(addr)
}
