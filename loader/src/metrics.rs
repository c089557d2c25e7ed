//! Prometheus metrics of `cowrie-loader delta --all` (the `prometheus` crate, like the worker and the coordinator),
//! served on `--metrics-port` by a tiny HTTP responder on tokio (`GET /metrics`; anything else is 404).
//!
//! A K3s CronJob cannot be scraped, so the alerts read the `loader_runs` table through celeriac-api instead
//! (docs/monitoring.md); these series are for a long-running `--every` loader (Compose, a workstation).

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::status::Stats;

/// The loader's metrics (one set per process).
#[derive(Clone)]
pub struct LoaderMetrics {
    registry: Registry,
    runs: IntCounterVec,
    events: IntCounterVec,
    dead_letters: IntCounterVec,
    last_success: GaugeVec,
    duration: HistogramVec,
}

impl Default for LoaderMetrics {
    fn default() -> Self {
        LoaderMetrics::new()
    }
}

impl LoaderMetrics {
    pub fn new() -> LoaderMetrics {
        let registry = Registry::new();
        let runs = IntCounterVec::new(
            Opts::new(
                "celeriac_loader_runs_total",
                "Loader runs per sensor and outcome (ok: everything read was stored; failed: anything else)",
            ),
            &["sensor", "outcome"],
        )
        .expect("metric");
        let events = IntCounterVec::new(
            Opts::new(
                "celeriac_loader_events_loaded_total",
                "Events inserted into raw_events per sensor",
            ),
            &["sensor"],
        )
        .expect("metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "celeriac_loader_dead_letters_total",
                "Records stored in dead_letter_events per sensor",
            ),
            &["sensor"],
        )
        .expect("metric");
        let last_success = GaugeVec::new(
            Opts::new(
                "celeriac_loader_last_success_timestamp_seconds",
                "Unix time when the sensor's last successful run ended (this process only)",
            ),
            &["sensor"],
        )
        .expect("metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "celeriac_loader_run_duration_seconds",
                "How long one sensor's run took",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
            ]),
            &["sensor"],
        )
        .expect("metric");
        for m in [
            Box::new(runs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events.clone()),
            Box::new(dead_letters.clone()),
            Box::new(last_success.clone()),
            Box::new(duration.clone()),
        ] {
            registry.register(m).expect("register metric");
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        LoaderMetrics {
            registry,
            runs,
            events,
            dead_letters,
            last_success,
            duration,
        }
    }

    /// Creates the sensor's series at zero, so rates and alerts see it before its first run ends.
    pub fn touch(&self, sensor: &str) {
        for outcome in ["ok", "failed"] {
            self.runs.with_label_values(&[sensor, outcome]);
        }
        self.events.with_label_values(&[sensor]);
        self.dead_letters.with_label_values(&[sensor]);
    }

    /// Counts one finished run of one sensor.
    pub fn observe(&self, stats: &Stats, ok: bool, elapsed: Duration) {
        let s = stats.sensor.as_str();
        let outcome = if ok { "ok" } else { "failed" };
        self.runs.with_label_values(&[s, outcome]).inc();
        self.events
            .with_label_values(&[s])
            .inc_by(stats.events_inserted);
        self.dead_letters
            .with_label_values(&[s])
            .inc_by(stats.dead_letters_inserted);
        self.duration
            .with_label_values(&[s])
            .observe(elapsed.as_secs_f64());
        if ok {
            self.last_success
                .with_label_values(&[s])
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Binds `0.0.0.0:port` (0 picks a free port) and serves `GET /metrics` until the runtime ends.
    /// Returns the bound address.
    pub async fn serve(&self, port: u16) -> std::io::Result<std::net::SocketAddr> {
        let listener = TcpListener::bind(("0.0.0.0", port)).await?;
        let addr = listener.local_addr()?;
        let metrics = self.clone();
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
                let m = metrics.clone();
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
                            ("200 OK", "text/plain; version=0.0.4", m.render())
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
}
