//! `GET /api/v1/cluster/workers`, `GET /api/v1/cluster/queues`, `GET /api/v1/cluster/stream`,
//! and `GET /api/v1/routing/explain`: the live worker registry (Rust and Python workers alike), the known queues'
//! depths per Redis priority bucket with the dead-letter count, both as a server-sent event stream, and the routing
//! decision a job would get (the dead letters themselves are `dead_letters.rs`). All read
//! the shared `jobs::Jobs` that the API's cluster watch keeps current, so they answer what the coordinator's own
//! endpoints answer.

use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse, get};
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::params::Query;

/// One worker of the live registry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterWorker {
    /// Celery node name (`name@host`).
    pub node: String,
    /// Online by heartbeat (within 2 x freq) or, for workers without heartbeats, by a recent inspect reply.
    pub alive: bool,
    /// Seconds since the last sign of life.
    pub seen_ago: Option<f64>,
    /// `rust` (celeriac-worker), `python` (Celery) or `unknown`, from `sw_ident`.
    pub implementation: String,
    /// The worker's software identity (`rs-celeriac` for celeriac-worker, `py-celery` for Celery).
    pub sw_ident: Option<String>,
    pub sw_ver: Option<String>,
    /// Queues it consumes (without its direct `.dq2` queue).
    pub queues: Vec<String>,
    /// Tasks running now.
    pub active: u32,
    /// Tasks it processed since it started.
    pub processed: u64,
    pub concurrency: Option<u32>,
    /// 1, 5 and 15 minute load averages from its heartbeats.
    pub loadavg: Vec<f64>,
    /// Heartbeat interval in seconds, when it sends heartbeats.
    pub freq: Option<f64>,
    pub heartbeats: bool,
    /// Registered with a token at the coordinator.
    pub registered: bool,
    /// `worker-config.yaml` entries that match it.
    pub config_entries: Vec<String>,
    /// Capabilities (config merged over what it registered).
    #[schema(value_type = Object)]
    pub capabilities: Value,
    /// active / concurrency (or load average / cores).
    pub load: f64,
    /// Free capacity in [0, 1] used by load-aware routing; 0 when offline.
    pub routing_weight: f64,
}

/// The live registry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterWorkers {
    pub workers: Vec<ClusterWorker>,
}

/// Messages waiting in one kombu priority bucket.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueBucket {
    /// kombu's priority step (0, 3, 6 or 9).
    pub priority: u8,
    pub messages: u64,
}

/// One known queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterQueue {
    pub name: String,
    /// A worker's direct queue (`<node>.dq2`).
    pub direct: bool,
    pub buckets: Vec<QueueBucket>,
    /// Messages waiting in all buckets.
    pub total: u64,
    /// Messages consumers have taken from it and not yet acknowledged (running, reserved or scheduled).
    pub unacked: u64,
}

/// The config's shared queues and every known worker's direct queue, with their depths now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterQueues {
    pub queues: Vec<ClusterQueue>,
    /// Unprocessable messages the workers kept (`celeriac:dead_letter`); listed by `GET /api/v1/cluster/dead-letters`.
    pub dead_letters: u64,
}

/// A routing decision, as the coordinator's `/api/v1/routing/explain` gives it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoutingExplain {
    /// `{strategy, queue, outcome, candidates, notes}` from the shared routing code.
    #[schema(value_type = Object)]
    pub decision: Value,
}

/// `rust`, `python` or `unknown` from a Celery `sw_ident`.
pub fn implementation(sw_ident: Option<&str>) -> &'static str {
    match sw_ident {
        Some(s) if s.starts_with("rs-celeriac") || s.starts_with("celeriac") => "rust",
        Some(s) if s.starts_with("py-celery") => "python",
        _ => "unknown",
    }
}

/// The live worker registry: Rust and Python workers, online or recently seen.
#[utoipa::path(get, path = "/api/v1/cluster/workers", tag = "cluster",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Workers", body = ClusterWorkers),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis has not been reached yet", body = ErrorBody),
    ))]
#[get("/cluster/workers")]
pub async fn workers(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    Ok(HttpResponse::Ok().json(worker_list(&state)?))
}

/// The registry's rows now.
fn worker_list(state: &AppState) -> Result<ClusterWorkers, ApiError> {
    let jobs = state.jobs()?;
    let config = jobs.config.get();
    let rows = jobs
        .registry
        .lock()
        .expect("registry")
        .rows(&config, broker::now_f64());
    let list = rows
        .into_iter()
        .map(|r| ClusterWorker {
            implementation: implementation(r.sw_ident.as_deref()).to_string(),
            capabilities: serde_json::to_value(&r.capabilities).unwrap_or(Value::Null),
            node: r.node,
            alive: r.alive,
            seen_ago: r.seen_ago,
            sw_ident: r.sw_ident,
            sw_ver: r.sw_ver,
            queues: r.queues,
            active: r.active,
            processed: r.processed,
            concurrency: r.concurrency,
            loadavg: r.loadavg,
            freq: r.freq,
            heartbeats: r.heartbeats,
            registered: r.registered,
            config_entries: r.config_entries,
            load: r.load,
            routing_weight: r.routing_weight,
        })
        .collect();
    Ok(ClusterWorkers { workers: list })
}

/// Known queues (the config's shared queues and every known worker's `.dq2`) with their depth per Redis priority
/// bucket, read now.
#[utoipa::path(get, path = "/api/v1/cluster/queues", tag = "cluster",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Queues", body = ClusterQueues),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    ))]
#[get("/cluster/queues")]
pub async fn queues(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    Ok(HttpResponse::Ok().json(queue_list(&state).await?))
}

/// Every known queue's depth and the dead-letter count, read now.
async fn queue_list(state: &AppState) -> Result<ClusterQueues, ApiError> {
    let jobs = state.jobs()?;
    let depths = jobs.queue_depths().await?;
    let (dead, _) = jobs.dead_letters(0).await?;
    let rows = depths
        .into_iter()
        .map(|q| ClusterQueue {
            buckets: q
                .buckets
                .into_iter()
                .map(|(priority, messages)| QueueBucket { priority, messages })
                .collect(),
            name: q.name,
            direct: q.direct,
            total: q.total,
            unacked: q.unacked,
        })
        .collect();
    Ok(ClusterQueues {
        queues: rows,
        dead_letters: dead,
    })
}

/// How often the stream looks at the registry and the queues.
const STREAM_TICK: Duration = Duration::from_secs(1);
/// Workers are sent again after this long even when nothing but their `seen_ago` changed.
const STREAM_REFRESH: Duration = Duration::from_secs(10);
/// A comment line keeps idle proxies from closing the stream.
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Server-sent events for the cluster view: `event: workers` (a `ClusterWorkers`) and `event: queues` (a
/// `ClusterQueues`) at once, then whenever they change (looked at every second: a worker going offline is noticed
/// within a second of its heartbeat deadline), workers at least every 10 s; `event: error` with `{message}` when
/// Redis cannot be read (the stream goes on); `: keep-alive` comments every 15 s in between.
#[utoipa::path(get, path = "/api/v1/cluster/stream", tag = "cluster",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "An event stream of `workers`, `queues` and `error` events (the schema is that of one event)", body = crate::model::ClusterEvent, content_type = "text/event-stream"),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis has not been reached yet", body = ErrorBody),
    ))]
#[get("/cluster/stream")]
pub async fn stream(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Query::parse(req.query_string(), &[])?;
    state.jobs()?;
    let watch = ClusterWatch {
        open: super::jobs::StreamGauge::new(state.clone().into_inner()),
        state,
        last_workers: None,
        last_queues: None,
        last_sent: Instant::now(),
        first: true,
    };
    let frames = futures_util::stream::unfold(watch, |mut w| async move {
        let frame = w.next_frame().await;
        Some((Ok::<_, actix_web::Error>(Bytes::from(frame)), w))
    });
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(frames))
}

/// One open cluster stream: what it sent last, to send only changes.
struct ClusterWatch {
    state: Data<AppState>,
    #[allow(dead_code)] // held for its Drop: counts the open stream
    open: super::jobs::StreamGauge,
    /// The workers as last sent, without `seen_ago` (which changes every second).
    last_workers: Option<Value>,
    last_queues: Option<String>,
    last_sent: Instant,
    first: bool,
}

impl ClusterWatch {
    /// The next frame: what changed, or a keep-alive comment after 15 quiet seconds.
    async fn next_frame(&mut self) -> String {
        loop {
            if !self.first {
                tokio::time::sleep(STREAM_TICK).await;
            }
            let first = std::mem::take(&mut self.first);
            let mut out = String::new();
            match worker_list(&self.state) {
                Ok(list) => {
                    let mut key = serde_json::to_value(&list).unwrap_or(Value::Null);
                    if let Some(rows) = key["workers"].as_array_mut() {
                        for r in rows {
                            r["seen_ago"] = Value::Null;
                        }
                    }
                    let stale = self.last_sent.elapsed() >= STREAM_REFRESH;
                    if first || stale || self.last_workers.as_ref() != Some(&key) {
                        out.push_str(&sse("workers", &list));
                        self.last_workers = Some(key);
                    }
                }
                Err(e) => out.push_str(&sse(
                    "error",
                    &serde_json::json!({"message": e.to_string()}),
                )),
            }
            match queue_list(&self.state).await {
                Ok(depths) => {
                    let json = serde_json::to_string(&depths).unwrap_or_default();
                    if first || self.last_queues.as_deref() != Some(json.as_str()) {
                        out.push_str(&format!("event: queues\ndata: {json}\n\n"));
                        self.last_queues = Some(json);
                    }
                }
                Err(e) => out.push_str(&sse(
                    "error",
                    &serde_json::json!({"message": e.to_string()}),
                )),
            }
            if !out.is_empty() {
                self.last_sent = Instant::now();
                return out;
            }
            if self.last_sent.elapsed() >= STREAM_KEEP_ALIVE {
                self.last_sent = Instant::now();
                return ": keep-alive\n\n".to_string();
            }
        }
    }
}

/// One server-sent event.
fn sse(event: &str, data: &impl Serialize) -> String {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    format!("event: {event}\ndata: {json}\n\n")
}

/// Where a job of `task` (optionally sent to `queue`, optionally with `requirements`) would go now, and why each other
/// worker was skipped; nothing is published.
#[utoipa::path(get, path = "/api/v1/routing/explain", tag = "cluster",
    security(("api_key" = []), ("bearer" = [])),
    params(
        ("task" = String, Query, description = "Task name, e.g. cowrieprocessor.workers.longtail_analysis"),
        ("queue" = Option<String>, Query, description = "The queue the job would be sent to (default: the routing table's)"),
        ("requirements" = Option<String>, Query, description = "What the job needs, as JSON: {\"min_memory_gb\": 8, \"min_cpu_cores\": 4, \"min_gpu_memory_gb\": 8, \"accelerator\": [\"cuda\"], \"labels\": [\"fast\"]} (the same object as a submission's requirements)"),
    ),
    responses(
        (status = 200, description = "The decision", body = RoutingExplain),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key lacks statistics:read", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Redis has not been reached yet", body = ErrorBody),
    ))]
#[get("/routing/explain")]
pub async fn explain(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q = Query::parse(req.query_string(), &["task", "queue", "requirements"])?;
    let task = q
        .text("task", 256)?
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::param("task", "a task name is required"))?;
    let queue = q.text("queue", 256)?.filter(|s| !s.trim().is_empty());
    let requirements = match q
        .text("requirements", 2048)?
        .filter(|s| !s.trim().is_empty())
    {
        None => Default::default(),
        Some(text) => {
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| ApiError::param("requirements", format!("not valid JSON: {e}")))?;
            jobs::parse_requirements(Some(&value))
                .map_err(|e| ApiError::param("requirements", e.to_string()))?
        }
    };
    let job = routing::Job {
        task,
        queue,
        requirements,
    };
    let decision = state.jobs()?.decide(&job);
    Ok(HttpResponse::Ok().json(RoutingExplain {
        decision: serde_json::to_value(&decision).unwrap_or(Value::Null),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_and_python_workers_are_told_apart() {
        assert_eq!(implementation(Some("rs-celeriac")), "rust");
        assert_eq!(implementation(Some("py-celery")), "python");
        assert_eq!(implementation(None), "unknown");
    }
}
