//! Prometheus metrics of the API (the `prometheus` crate, like the worker and the coordinator): requests by route
//! and status, latency per route, replica fallbacks, rate-limit rejections and limiter failures, job submissions; and,
//! computed from PostgreSQL at scrape time, each sensor's newest event and loader health ([`render_sensor_health`]).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub replica_up: IntGauge,
    pub replica_fallbacks: IntCounter,
    pub rate_limited: IntCounterVec,
    pub limiter_errors: IntCounterVec,
    pub jobs_submitted: IntCounterVec,
    pub sse_streams: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("celeriac_api".into()), None).expect("metrics registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer, by route (streams: until the headers)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .expect("metric");
        let replica_up = IntGauge::new(
            "db_replica_up",
            "1 while reads go to the read replica, 0 while they fall back to the primary (or no replica is set)",
        )
        .expect("metric");
        let replica_fallbacks = IntCounter::new(
            "db_replica_fallbacks_total",
            "Reads answered by the primary because the replica was down",
        )
        .expect("metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limit_rejections_total",
                "Requests refused with 429, by route class",
            ),
            &["class"],
        )
        .expect("metric");
        let limiter_errors = IntCounterVec::new(
            Opts::new(
                "rate_limiter_errors_total",
                "Rate-limit checks that could not reach Redis, by route class and what was done (open/closed)",
            ),
            &["class", "action"],
        )
        .expect("metric");
        let jobs_submitted = IntCounterVec::new(
            Opts::new(
                "jobs_submitted_total",
                "Analyses submitted, by kind and routing outcome",
            ),
            &["kind", "outcome"],
        )
        .expect("metric");
        let sse_streams =
            IntGauge::new("sse_streams", "Job progress streams open now").expect("metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(replica_up.clone()),
            Box::new(replica_fallbacks.clone()),
            Box::new(rate_limited.clone()),
            Box::new(limiter_errors.clone()),
            Box::new(jobs_submitted.clone()),
            Box::new(sse_streams.clone()),
        ] {
            registry.register(m).expect("register metric");
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        Metrics {
            registry,
            requests,
            latency,
            replica_up,
            replica_fallbacks,
            rate_limited,
            limiter_errors,
            jobs_submitted,
            sse_streams,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encode metrics");
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The per-sensor gauges read from PostgreSQL at scrape time (`store::loader_runs::sensor_health`), without the
/// `celeriac_api_` prefix because they describe sensors and loaders, not the API:
/// `celeriac_sensor_last_event_timestamp_seconds`, `celeriac_loader_last_success_timestamp_seconds` (the same name
/// as the `--every` loader's own series: alerts take `max by (sensor)`, docs/monitoring.md) and
/// `celeriac_loader_last_run_failed`. A sensor without an event (or without a successful run) has no sample.
pub fn render_sensor_health(rows: &[store::loader_runs::SensorHealth]) -> String {
    use prometheus::GaugeVec;
    let registry = Registry::new();
    let gauge = |name: &str, help: &str| {
        let g = GaugeVec::new(Opts::new(name, help), &["sensor"]).expect("metric");
        registry
            .register(Box::new(g.clone()))
            .expect("register metric");
        g
    };
    let last_event = gauge(
        "celeriac_sensor_last_event_timestamp_seconds",
        "Unix time of the newest event stored for the sensor (from PostgreSQL)",
    );
    let last_success = gauge(
        "celeriac_loader_last_success_timestamp_seconds",
        "Unix time when the sensor's newest successful loader run ended (from loader_runs)",
    );
    let last_failed = gauge(
        "celeriac_loader_last_run_failed",
        "1 when the sensor's newest loader run failed, else 0 (from loader_runs)",
    );
    let secs = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
    for r in rows {
        let l = [r.sensor.as_str()];
        if let Some(t) = r.last_event_at {
            last_event.with_label_values(&l).set(secs(t));
        }
        if let Some(t) = r.last_success_at {
            last_success.with_label_values(&l).set(secs(t));
        }
        if let Some(f) = r.last_run_failed {
            last_failed
                .with_label_values(&l)
                .set(if f { 1.0 } else { 0.0 });
        }
    }
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("encode metrics");
    String::from_utf8(buf).unwrap_or_default()
}
