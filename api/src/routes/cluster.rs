//! `GET /api/v1/cluster/workers`, `GET /api/v1/cluster/queues` and `GET /api/v1/routing/explain`: the live worker
//! registry (Rust and Python workers alike), the known queues' depths per Redis priority bucket, and the routing
//! decision a job would get. All three read the shared `jobs::Jobs` that the API's cluster watch keeps current, so
//! they answer what the coordinator's own endpoints answer.

use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse, get};
use serde::Serialize;
use serde_json::Value;
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
    let jobs = state.jobs()?;
    let config = jobs.config.get();
    let rows = jobs
        .registry
        .lock()
        .expect("registry")
        .rows(&config, broker::now_f64());
    let workers = rows
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
    Ok(HttpResponse::Ok().json(ClusterWorkers { workers }))
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
    let depths = state.jobs()?.queue_depths().await?;
    let queues = depths
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
    Ok(HttpResponse::Ok().json(ClusterQueues { queues }))
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
