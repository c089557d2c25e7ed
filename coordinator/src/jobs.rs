//! Jobs: validate a submission, decide, record, publish (record first, so a fast worker never finishes a job the
//! coordinator has no record of); and move jobs waiting in an offline worker's `.dq2` to a new place.
//!
//! Re-routing only touches messages still *waiting* in the list (taken with `RPOPLPUSH`), never ones a worker has
//! already fetched, so a worker that is merely slow cannot run a job that was also moved. Messages a dead worker
//! had fetched come back to its `.dq2` through kombu's visibility timeout, and are then moved like the others.

use celery_proto::{Message, TaskRequest};
use chrono::{DateTime, Utc};
use routing::{Decision, Job, Outcome, Requirements, decide};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::AppState;
use crate::error::ApiError;
use crate::store::{HOLDING_KEY, JobRecord, Reroute};

/// The body of `POST /api/v1/jobs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub task: String,
    #[serde(default)]
    pub args: Vec<Value>,
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    #[serde(default)]
    pub queue: Option<String>,
    /// Celery priority 0 to 9 (lower is served first on Redis).
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub requirements: Option<Value>,
    /// Seconds from now before the job may run.
    #[serde(default)]
    pub countdown: Option<f64>,
    #[serde(default)]
    pub eta: Option<DateTime<Utc>>,
    /// Seconds from now, or an RFC 3339 time, after which the job is discarded.
    #[serde(default)]
    pub expires: Option<Value>,
}

/// A validated submission.
pub struct Validated {
    pub job: Job,
    pub request: TaskRequest,
}

/// Parse requirements with the routing crate's own rules (unknown keys and bad values refused).
pub fn parse_requirements(v: Option<&Value>) -> Result<Requirements, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Requirements::default()),
        Some(v) => {
            Requirements::deserialize(v).map_err(|e| ApiError::InvalidRequirements(e.to_string()))
        }
    }
}

pub fn validate(req: &JobRequest) -> Result<Validated, ApiError> {
    let task = req.task.trim();
    if task.is_empty() {
        return Err(ApiError::InvalidJob("`task` is empty".into()));
    }
    let priority = match req.priority {
        None => 0,
        Some(p) if (0..=9).contains(&p) => p as u8,
        Some(p) => {
            return Err(ApiError::InvalidJob(format!(
                "priority {p} is out of range 0 to 9"
            )));
        }
    };
    if let Some(q) = &req.queue
        && (q.is_empty() || q.chars().any(char::is_whitespace))
    {
        return Err(ApiError::InvalidJob(format!(
            "queue {q:?} is not a queue name"
        )));
    }
    let requirements = parse_requirements(req.requirements.as_ref())?;
    let now = Utc::now();
    let eta = match (req.countdown, req.eta) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidJob(
                "give `countdown` or `eta`, not both".into(),
            ));
        }
        (Some(c), None) if c.is_finite() && c >= 0.0 => {
            Some(now + chrono::Duration::milliseconds((c * 1000.0) as i64))
        }
        (Some(c), None) => {
            return Err(ApiError::InvalidJob(format!("countdown {c} must be >= 0")));
        }
        (None, e) => e,
    };
    let expires = match &req.expires {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s.is_finite() && s > 0.0 => {
                Some(now + chrono::Duration::milliseconds((s * 1000.0) as i64))
            }
            _ => {
                return Err(ApiError::InvalidJob(format!(
                    "expires {n} must be > 0 seconds"
                )));
            }
        },
        Some(Value::String(s)) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| ApiError::InvalidJob(format!("expires {s:?}: {e}")))?
                .with_timezone(&Utc),
        ),
        Some(other) => {
            return Err(ApiError::InvalidJob(format!(
                "expires must be seconds or an RFC 3339 time, got {other}"
            )));
        }
    };
    let mut request = TaskRequest::new(task);
    request.args = req.args.clone();
    request.kwargs = req.kwargs.clone();
    request.priority = priority;
    request.eta = eta;
    request.expires = expires;
    Ok(Validated {
        job: Job {
            task: task.to_string(),
            queue: req.queue.clone(),
            requirements,
        },
        request,
    })
}

/// Decide with the current config and registry.
pub fn decide_now(state: &AppState, job: &Job) -> Decision {
    let config = state.config.get();
    let snapshot = state
        .registry
        .lock()
        .expect("registry")
        .snapshot(broker::now_f64());
    decide(&config, &snapshot, job)
}

/// Submit: decide, record, publish. A rejection is recorded too, and returned as an error with the decision.
pub async fn submit(state: &AppState, req: &JobRequest) -> Result<JobRecord, ApiError> {
    let Validated { job, mut request } = validate(req)?;
    let decision = decide_now(state, &job);
    state
        .metrics
        .decisions
        .with_label_values(&[decision.strategy.as_str(), decision.outcome.kind()])
        .inc();
    let mut record = JobRecord {
        id: request.id.clone(),
        task: job.task.clone(),
        queue: decision.queue.clone(),
        published_to: decision.outcome.publish_queue().map(str::to_string),
        node: decision.outcome.node().map(str::to_string),
        priority: request.priority,
        requirements: job.requirements.clone(),
        decision: decision.clone(),
        created_at: broker::now_f64(),
        reroutes: Vec::new(),
        revoked: false,
    };
    let Some(target) = decision.outcome.publish_queue().map(str::to_string) else {
        state.store.put_job(&record).await?;
        let reason = match &decision.outcome {
            Outcome::Rejected { reason } => reason.clone(),
            _ => "rejected".into(),
        };
        return Err(ApiError::RoutingRejected {
            reason,
            details: serde_json::json!({"job_id": record.id, "decision": decision}),
        });
    };
    request.queue = target.clone();
    record.published_to = Some(target.clone());
    state.store.put_job(&record).await?;
    state
        .broker
        .publish(&target, request.priority, &request.envelope().encode())
        .await?;
    tracing::info!(id = %record.id, task = %record.task, queue = %target, outcome = decision.outcome.kind(), "job published");
    Ok(record)
}

/// Give every message still waiting in an offline node's `.dq2` a new place. Returns how many moved.
pub async fn reroute_node(state: &AppState, node: &str) -> Result<usize, ApiError> {
    let dq = celery_proto::keys::worker_direct_queue(node);
    let mut moved = 0;
    while let Some(raw) = state.broker.take_to_holding(&dq, HOLDING_KEY).await? {
        move_held(state, &raw, node).await?;
        moved += 1;
    }
    Ok(moved)
}

/// Finish moves a previous run left in the holding list.
pub async fn recover_held(state: &AppState) -> Result<usize, ApiError> {
    let held = state.broker.held(HOLDING_KEY).await?;
    let n = held.len();
    for raw in held {
        let from = Message::decode(&raw, false)
            .ok()
            .and_then(|m| m.routing_key.strip_suffix(".dq2").map(str::to_string))
            .unwrap_or_default();
        move_held(state, &raw, &from).await?;
    }
    Ok(n)
}

/// Decide again for one held message and push it to its new queue (atomically with its removal from holding).
async fn move_held(state: &AppState, raw: &[u8], from_node: &str) -> Result<(), ApiError> {
    let Ok(msg) = Message::decode(raw, false) else {
        // Unreadable: hand it to the default shared queue unchanged, where a worker dead-letters it visibly.
        let q = state.config.get().routing.default_queue.clone();
        tracing::error!(from_node, queue = %q, "moving an unreadable message from an offline worker's queue");
        state
            .broker
            .commit_from_holding(HOLDING_KEY, raw, &q, 0, raw)
            .await?;
        return Ok(());
    };
    let id = msg
        .headers
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let task = msg
        .headers
        .get("task")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let record = if id.is_empty() {
        None
    } else {
        state.store.job(&id).await?
    };
    let job = Job {
        task: task.clone(),
        queue: record.as_ref().map(|r| r.queue.clone()),
        requirements: record
            .as_ref()
            .map(|r| r.requirements.clone())
            .unwrap_or_default(),
    };
    let decision = decide_now(state, &job);
    let own = celery_proto::keys::worker_direct_queue(from_node);
    let (target, reason) = match decision.outcome.publish_queue() {
        Some(q) if q != own => (q.to_string(), decision.outcome.kind().to_string()),
        _ => (
            decision.queue.clone(),
            format!(
                "{}; sent to the shared queue so it is not lost",
                match &decision.outcome {
                    Outcome::Rejected { reason } => reason.clone(),
                    _ => "no other worker qualifies".into(),
                }
            ),
        ),
    };
    let rewritten = readdress(raw, &target).unwrap_or_else(|| raw.to_vec());
    state
        .broker
        .commit_from_holding(HOLDING_KEY, raw, &target, msg.priority, &rewritten)
        .await?;
    state.metrics.reroutes.inc();
    tracing::warn!(id = %id, task = %task, from_node, to = %target, "re-routed a job waiting for an offline worker");
    if let Some(mut rec) = record {
        rec.reroutes.push(Reroute {
            from_node: from_node.to_string(),
            to_queue: target.clone(),
            at: broker::now_f64(),
            reason,
        });
        rec.node = decision
            .outcome
            .node()
            .map(str::to_string)
            .filter(|_| target != decision.queue);
        rec.published_to = Some(target);
        rec.decision = decision;
        state.store.put_job(&rec).await?;
    }
    Ok(())
}

/// The envelope with `delivery_info.routing_key` set to the new queue and a fresh delivery tag, as kombu writes
/// at publish.
pub fn readdress(raw: &[u8], queue: &str) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(raw).ok()?;
    let props = v.get_mut("properties")?.as_object_mut()?;
    props.insert(
        "delivery_info".into(),
        serde_json::json!({"exchange": "", "routing_key": queue}),
    );
    props.insert(
        "delivery_tag".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    Some(celery_proto::json::to_py_json(&v))
}
