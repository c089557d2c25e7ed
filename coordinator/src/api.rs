//! The management API (actix-web, port 8082). [`create_app`] builds the whole application for `run` and for tests.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /api/v1/jobs` | submit (job key or admin key): returns the job id and the routing decision |
//! | `GET /api/v1/jobs/{id}` | state from the Celery result backend, progress, worker, decision |
//! | `GET /api/v1/jobs/{id}/events` | server-sent events of state and progress until a ready state |
//! | `DELETE /api/v1/jobs/{id}?terminate=true` | revoke (job key or admin key; remote control), optionally terminate |
//! | `GET /api/v1/workers` | the registry with capabilities and routing weight |
//! | `POST /api/v1/workers/register` | a worker registers itself with a token |
//! | `GET /api/v1/routing/explain?task=..` | the decision a job would get, without publishing |
//! | `GET/POST /api/v1/admin/tokens`, `POST /api/v1/admin/tokens/{id}/rotate`, `DELETE /api/v1/admin/tokens/{id}` | admin |
//! | `POST /api/v1/admin/config/reload` | admin |
//! | `/healthz`, `/readyz`, `/metrics` | probes and Prometheus |

use ::jobs::{JobUpdate, Registration, TokenCheck, hash_token};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::web::{self, Bytes, Data, Json, Path, Query};
use actix_web::{App, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use routing::{Capabilities, Job};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// The application: routes, JSON/query error mapping through [`ApiError`], shared state.
pub fn create_app(
    state: Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(
            web::JsonConfig::default()
                .limit(1 << 20)
                .error_handler(|e, _| {
                    ApiError::BadRequest(format!("invalid JSON body: {e}")).into()
                }),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiError::BadRequest(format!("invalid query: {e}")).into()),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .service(
            web::scope("/api/v1")
                .route("/jobs", web::post().to(submit_job))
                .route("/jobs/{id}", web::get().to(get_job))
                .route("/jobs/{id}", web::delete().to(revoke_job))
                .route("/jobs/{id}/events", web::get().to(job_events))
                .route("/workers", web::get().to(workers))
                .route("/workers/register", web::post().to(register))
                .route("/routing/explain", web::get().to(explain))
                .route("/admin/tokens", web::post().to(create_token))
                .route("/admin/tokens", web::get().to(list_tokens))
                .route("/admin/tokens/{id}/rotate", web::post().to(rotate_token))
                .route("/admin/tokens/{id}", web::delete().to(revoke_token))
                .route("/admin/config/reload", web::post().to(reload_config)),
        )
        .default_service(web::to(|req: HttpRequest| async move {
            HttpResponse::NotFound().json(json!({
                "code": "route_not_found",
                "message": format!("no route {} {}", req.method(), req.path()),
                "status": 404
            }))
        }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: Data<AppState>) -> Result<HttpResponse> {
    state
        .jobs
        .store
        .broker()
        .ping()
        .await
        .map_err(|e| ApiError::NotReady(format!("Redis: {e}")))?;
    if state.jobs.broker_redis.is_none() {
        // RabbitMQ: a passive declare of the default queue proves the connection works.
        let default_queue = state.jobs.config.get().routing.default_queue.clone();
        state
            .jobs
            .transport
            .queue_len(&default_queue)
            .await
            .map_err(|e| ApiError::NotReady(format!("broker: {e}")))?;
    }
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "config": state.jobs.config.path().display().to_string(),
        "config_reload_error": state.jobs.config.last_error(),
    })))
}

async fn metrics(state: Data<AppState>) -> HttpResponse {
    // Queue depth is measured at scrape time: shared queues named in the config plus every known .dq2.
    if let Ok(depths) = state.jobs.queue_depths().await {
        for q in depths {
            for (step, len) in q.buckets {
                state
                    .metrics
                    .queue_depth
                    .with_label_values(&[q.name.as_str(), &step.to_string()])
                    .set(len as i64);
            }
        }
    }
    if let Ok((count, _)) = state.jobs.dead_letters(0).await {
        state.metrics.dead_letters.set(count as i64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

async fn submit_job(
    _caller: JobCaller,
    state: Data<AppState>,
    body: Json<::jobs::JobRequest>,
) -> Result<HttpResponse> {
    let record = crate::jobs::submit(&state, &body).await?;
    Ok(HttpResponse::Created().json(json!({
        "id": record.id,
        "queue": record.published_to,
        "node": record.node,
        "decision": record.decision,
    })))
}

async fn get_job(state: Data<AppState>, id: Path<String>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.jobs.view(&id).await?))
}

#[derive(Deserialize)]
struct RevokeQuery {
    #[serde(default)]
    terminate: bool,
    #[serde(default)]
    signal: Option<String>,
}

async fn revoke_job(
    _caller: JobCaller,
    state: Data<AppState>,
    id: Path<String>,
    q: Query<RevokeQuery>,
) -> Result<HttpResponse> {
    let id = id.into_inner();
    state
        .jobs
        .revoke(&id, q.terminate, q.signal.as_deref())
        .await?;
    Ok(HttpResponse::Accepted().json(json!({"id": id, "revoked": true, "terminate": q.terminate})))
}

/// Server-sent events: one `state` event now, then one per stored state change, until a ready state; a
/// `: keep-alive` comment when nothing changed for a while.
async fn job_events(state: Data<AppState>, id: Path<String>) -> Result<HttpResponse> {
    let updates = state.jobs.watch(&id).await?;
    let stream = updates.map(|u| {
        Ok::<_, actix_web::Error>(match u {
            JobUpdate::View(v) => Bytes::from(format!(
                "event: state\ndata: {}\n\n",
                serde_json::to_string(&v).expect("a job view serializes")
            )),
            JobUpdate::KeepAlive => Bytes::from_static(b": keep-alive\n\n"),
        })
    });
    Ok(HttpResponse::Ok()
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .streaming(stream))
}

async fn workers(state: Data<AppState>) -> HttpResponse {
    let config = state.jobs.config.get();
    let rows = state
        .jobs
        .registry
        .lock()
        .expect("registry")
        .rows(&config, broker::now_f64());
    HttpResponse::Ok().json(json!({"workers": rows}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    #[serde(default)]
    token: Option<String>,
    node: String,
    #[serde(default)]
    queues: Vec<String>,
    #[serde(default)]
    capabilities: Option<Value>,
    #[serde(default)]
    concurrency: Option<u32>,
}

fn bearer(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|s| s.trim().to_string())
}

async fn register(
    state: Data<AppState>,
    req: HttpRequest,
    body: Json<RegisterBody>,
) -> Result<HttpResponse> {
    let token = body
        .token
        .clone()
        .or_else(|| bearer(&req))
        .ok_or(ApiError::MissingToken)?;
    let rec = match state.jobs.store.check_token(&token).await? {
        TokenCheck::Valid(r) => r,
        TokenCheck::Unknown => return Err(ApiError::InvalidToken),
        TokenCheck::Revoked => return Err(ApiError::TokenRevoked),
        TokenCheck::Expired => return Err(ApiError::TokenExpired),
    };
    let node = body.node.trim();
    if node.is_empty() || !node.contains('@') || node.chars().any(char::is_whitespace) {
        return Err(ApiError::BadRequest(format!(
            "node {node:?} is not a Celery node name (name@host)"
        )));
    }
    let capabilities: Capabilities = match &body.capabilities {
        None | Some(Value::Null) => Capabilities::default(),
        Some(v) => Capabilities::deserialize(v)
            .map_err(|e| ApiError::BadRequest(format!("capabilities: {e}")))?,
    };
    let reg = Registration {
        node: node.to_string(),
        queues: body.queues.clone(),
        capabilities,
        concurrency: body.concurrency.filter(|c| *c > 0),
        token_id: rec.id.clone(),
        registered_at: broker::now_f64(),
    };
    state.jobs.store.put_registration(&reg).await?;
    let regs = state.jobs.store.registrations().await?;
    state
        .jobs
        .registry
        .lock()
        .expect("registry")
        .set_registrations(regs);
    tracing::info!(node, token = %rec.id, "worker registered");
    Ok(HttpResponse::Created().json(json!({"registered": reg})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    task: String,
    #[serde(default)]
    queue: Option<String>,
    /// Requirements as JSON (`{"min_memory_gb": 8}`), or the flat parameters below.
    #[serde(default)]
    requirements: Option<String>,
    #[serde(default)]
    min_memory_gb: Option<f64>,
    #[serde(default)]
    min_cpu_cores: Option<u32>,
    #[serde(default)]
    min_gpu_memory_gb: Option<f64>,
    /// Comma separated.
    #[serde(default)]
    accelerator: Option<String>,
    /// Comma separated.
    #[serde(default)]
    labels: Option<String>,
}

async fn explain(state: Data<AppState>, q: Query<ExplainQuery>) -> Result<HttpResponse> {
    let mut req = match &q.requirements {
        Some(s) => serde_json::from_str::<Value>(s)
            .map_err(|e| ApiError::InvalidRequirements(format!("not JSON: {e}")))?,
        None => json!({}),
    };
    let list = |s: &Option<String>| {
        s.as_ref().map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| json!(x))
                .collect::<Vec<_>>()
        })
    };
    if let Some(obj) = req.as_object_mut() {
        if let Some(v) = q.min_memory_gb {
            obj.insert("min_memory_gb".into(), json!(v));
        }
        if let Some(v) = q.min_cpu_cores {
            obj.insert("min_cpu_cores".into(), json!(v));
        }
        if let Some(v) = q.min_gpu_memory_gb {
            obj.insert("min_gpu_memory_gb".into(), json!(v));
        }
        if let Some(v) = list(&q.accelerator) {
            obj.insert("accelerator".into(), Value::Array(v));
        }
        if let Some(v) = list(&q.labels) {
            obj.insert("labels".into(), Value::Array(v));
        }
    }
    let requirements = ::jobs::parse_requirements(Some(&req))?;
    let job = Job {
        task: q.task.clone(),
        queue: q.queue.clone(),
        requirements,
    };
    // A task the allow-list refuses gets the answer a submission would get.
    state.jobs.check_allowed(&job)?;
    let decision = state.jobs.decide(&job);
    Ok(HttpResponse::Ok().json(json!({"decision": decision})))
}

/// The key a request presents: `Authorization: Bearer <key>`, else the named header.
fn presented_key(req: &HttpRequest, header: &str) -> Option<String> {
    bearer(req).or_else(|| {
        req.headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
    })
}

/// Compare digests so the comparison time does not depend on where the strings differ.
fn same_key(given: &str, key: &str) -> bool {
    hash_token(given) == hash_token(key)
}

/// Admin check: the configured key as `Authorization: Bearer <key>` or `X-Admin-Key`.
fn require_admin(state: &AppState, req: &HttpRequest) -> Result<()> {
    let Some(key) = &state.settings.admin_key else {
        return Err(ApiError::AdminDisabled);
    };
    match presented_key(req, "x-admin-key") {
        None => Err(ApiError::MissingAdminKey),
        Some(g) if same_key(&g, key) => Ok(()),
        Some(_) => Err(ApiError::InvalidAdminKey),
    }
}

/// Proof that the request presented the job key or the admin key ([`require_job_key`]). Taken as a handler's first
/// argument, it is checked before the body is read, so a caller without a key learns nothing about the body rules.
pub struct JobCaller;

impl actix_web::FromRequest for JobCaller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<JobCaller>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(match req.app_data::<Data<AppState>>() {
            Some(state) => require_job_key(state, req).map(|()| JobCaller),
            None => Err(ApiError::Internal("no application state".into())),
        })
    }
}

/// Job submission and revocation: the job key or the admin key, as `Authorization: Bearer <key>` or `X-Job-Key`
/// (`X-Admin-Key` is read too). With neither key configured, jobs cannot be submitted over HTTP at all.
fn require_job_key(state: &AppState, req: &HttpRequest) -> Result<()> {
    let keys: Vec<&String> = [&state.settings.job_key, &state.settings.admin_key]
        .into_iter()
        .flatten()
        .collect();
    if keys.is_empty() {
        return Err(ApiError::JobsDisabled);
    }
    let given = presented_key(req, "x-job-key").or_else(|| presented_key(req, "x-admin-key"));
    match given {
        None => Err(ApiError::MissingJobKey),
        // Both digests are always computed, so the time does not tell which key matched.
        Some(g) if keys.iter().fold(false, |ok, k| same_key(&g, k) | ok) => Ok(()),
        Some(_) => Err(ApiError::InvalidJobKey),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    /// Lifetime in seconds (default 30 days).
    #[serde(default)]
    ttl_secs: Option<u64>,
}

async fn create_token(
    state: Data<AppState>,
    req: HttpRequest,
    body: Json<CreateToken>,
) -> Result<HttpResponse> {
    require_admin(&state, &req)?;
    let ttl = body.ttl_secs.unwrap_or(30 * 86_400);
    if ttl == 0 || ttl > 366 * 86_400 {
        return Err(ApiError::BadRequest(format!(
            "ttl_secs {ttl} is out of range 1 to {}",
            366 * 86_400
        )));
    }
    let issued = state
        .jobs
        .store
        .create_token(body.name.trim(), ttl, None)
        .await?;
    Ok(HttpResponse::Created().json(issued))
}

async fn list_tokens(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse> {
    require_admin(&state, &req)?;
    let now = broker::now_f64();
    let tokens: Vec<Value> = state
        .jobs
        .store
        .tokens()
        .await?
        .into_iter()
        .map(|t| {
            json!({"id": t.id, "name": t.name, "created_at": t.created_at, "expires_at": t.expires_at,
                   "revoked": t.revoked, "expired": t.expires_at <= now, "rotated_from": t.rotated_from})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"tokens": tokens})))
}

async fn rotate_token(
    state: Data<AppState>,
    req: HttpRequest,
    id: Path<String>,
) -> Result<HttpResponse> {
    require_admin(&state, &req)?;
    match state.jobs.store.rotate_token(&id).await? {
        Some(issued) => Ok(HttpResponse::Created().json(issued)),
        None => Err(ApiError::TokenNotFound(id.into_inner())),
    }
}

async fn revoke_token(
    state: Data<AppState>,
    req: HttpRequest,
    id: Path<String>,
) -> Result<HttpResponse> {
    require_admin(&state, &req)?;
    if state.jobs.store.revoke_token(&id).await? {
        Ok(HttpResponse::Ok().json(json!({"id": id.into_inner(), "revoked": true})))
    } else {
        Err(ApiError::TokenNotFound(id.into_inner()))
    }
}

async fn reload_config(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse> {
    require_admin(&state, &req)?;
    match state.reload_config() {
        crate::Reload::Applied => Ok(HttpResponse::Ok().json(json!({"reload": "applied"}))),
        crate::Reload::Unchanged => Ok(HttpResponse::Ok().json(json!({"reload": "unchanged"}))),
        crate::Reload::Kept { error } => Err(ApiError::ConfigRefused(error)),
    }
}
