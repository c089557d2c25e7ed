//! The coordinator's own job duties on top of the shared `jobs` crate: submission counted in its metrics, and moving
//! jobs waiting in an offline worker's `.dq2` to a new place. Validation, decisions, records and publishing are
//! `jobs::Jobs`, the same code the API submits through.
//!
//! Re-routing only touches messages still *waiting* in the list (taken with `RPOPLPUSH`), never ones a worker has
//! already fetched, so a worker that is merely slow cannot run a job that was also moved. Messages a dead worker
//! had fetched come back to its `.dq2` through kombu's visibility timeout, and are then moved like the others.

use ::jobs::{HOLDING_KEY, JobError, JobRecord, Reroute};
use celery_proto::Message;
use routing::{Decision, Job, Outcome};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;

pub use ::jobs::{JobRequest, Validated, parse_requirements, validate};

/// Submit through `jobs::Jobs::submit` and count the decision (routed or rejected) in the metrics.
pub async fn submit(state: &AppState, req: &JobRequest) -> Result<JobRecord, ApiError> {
    let result = state.jobs.submit(req).await;
    let decision = match &result {
        Ok(record) => Some(record.decision.clone()),
        Err(JobError::RoutingRejected { details, .. }) => {
            serde_json::from_value::<Decision>(details["decision"].clone()).ok()
        }
        Err(_) => None,
    };
    if let Some(d) = decision {
        state
            .metrics
            .decisions
            .with_label_values(&[d.strategy.as_str(), d.outcome.kind()])
            .inc();
    }
    Ok(result?)
}

/// Give every message still waiting in an offline node's `.dq2` a new place. Returns how many moved.
pub async fn reroute_node(state: &AppState, node: &str) -> Result<usize, ApiError> {
    let dq = celery_proto::keys::worker_direct_queue(node);
    let mut moved = 0;
    while let Some(raw) = state.jobs.broker.take_to_holding(&dq, HOLDING_KEY).await? {
        move_held(state, &raw, node).await?;
        moved += 1;
    }
    Ok(moved)
}

/// Finish moves a previous run left in the holding list.
pub async fn recover_held(state: &AppState) -> Result<usize, ApiError> {
    let held = state.jobs.broker.held(HOLDING_KEY).await?;
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
        let q = state.jobs.config.get().routing.default_queue.clone();
        tracing::error!(from_node, queue = %q, "moving an unreadable message from an offline worker's queue");
        state
            .jobs
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
        state.jobs.store.job(&id).await?
    };
    let job = Job {
        task: task.clone(),
        queue: record.as_ref().map(|r| r.queue.clone()),
        requirements: record
            .as_ref()
            .map(|r| r.requirements.clone())
            .unwrap_or_default(),
    };
    let decision = state.jobs.decide(&job);
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
    let rewritten =
        celery_proto::kombu_redis::readdress(raw, &target).unwrap_or_else(|| raw.to_vec());
    state
        .jobs
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
        state.jobs.store.put_job(&rec).await?;
    }
    Ok(())
}
