//! The coordinator's own job duties on top of the shared `jobs` crate: submission counted in its metrics, and moving
//! jobs waiting in an offline worker's `.dq2` to a new place. Validation, decisions, records and publishing are
//! `jobs::Jobs`, the same code the API submits through.
//!
//! Re-routing only touches messages still *waiting* in the list, never ones a worker has already fetched, so a
//! worker that is merely slow cannot run a job that was also moved. Messages a dead worker had fetched come back
//! to its `.dq2` through kombu's visibility timeout, and are then moved like the others.
//!
//! Only the leader moves (several coordinators may run on one broker, see [`crate::leader`]). On Redis a move is
//! two fenced steps, each one Lua script that first checks the leader lease is still the mover's
//! (`broker::lease`): take the oldest waiting message into the holding list `celeriac:reroute:holding` (the
//! record of the move in flight), then push its rewritten form to the new queue and remove it from the holding
//! list, the push happening only if the removal did. A leader that dies or is deposed between the two steps
//! leaves the message in the holding list, and whoever leads next finishes that move, exactly once.
//!
//! On RabbitMQ there is no holding list: the leader consumes the offline node's `.dq2` with manual
//! acknowledgements, checks its lease, publishes each message to its new queue (waiting for RabbitMQ's confirm),
//! and only then acknowledges it. A coordinator that dies between the two gives the message back to the `.dq2`
//! (it was never acknowledged), to be moved again: a job can be delivered twice then, never lost. One that finds its
//! lease gone, or meets an error, rejects what it took back to the `.dq2` at once (a live connection would keep
//! unacknowledged messages from the next leader). Messages a dead worker had fetched return to its `.dq2` by
//! themselves when its connection closes. A `.dq2` that does not exist (a Python worker without `worker_direct`)
//! is looked at again after 1 s, then twice as long each time it is still missing, up to a minute
//! ([`AbsentQueues`]): RabbitMQ answers the look (a passive declare) by closing the channel with 404, which lapin
//! logs as an error, and an offline node is remembered until the coordinator restarts.

use ::jobs::{HOLDING_KEY, JobError, JobRecord, Reroute};
use broker::lease::{Commit, Fence, Fenced};
use celery_proto::Message;
use routing::{Decision, Job, Outcome};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The offline nodes' `.dq2` queues found missing on RabbitMQ, and when to look at each again.
#[derive(Debug, Default)]
pub struct AbsentQueues {
    next: Mutex<HashMap<String, (Instant, Duration)>>,
}

impl AbsentQueues {
    const FIRST: Duration = Duration::from_secs(1);
    const MOST: Duration = Duration::from_secs(60);

    /// Whether `queue` should be looked at now: it was never found missing, or its wait is over.
    pub fn due(&self, queue: &str, now: Instant) -> bool {
        self.next
            .lock()
            .expect("absent queues")
            .get(queue)
            .is_none_or(|(at, _)| now >= *at)
    }

    /// `queue` was missing at `now`: wait 1 s before the next look, or twice the last wait (a minute at most).
    pub fn missing(&self, queue: &str, now: Instant) {
        let mut next = self.next.lock().expect("absent queues");
        let wait = next
            .get(queue)
            .map_or(Self::FIRST, |(_, w)| (*w * 2).min(Self::MOST));
        next.insert(queue.to_string(), (now + wait, wait));
    }

    /// `queue` exists: look at it on every pass again.
    pub fn found(&self, queue: &str) {
        self.next.lock().expect("absent queues").remove(queue);
    }

    /// Forget the queues of nodes no longer offline (alive again, they may declare their `.dq2`).
    pub fn keep_only(&self, queues: &[String]) {
        self.next
            .lock()
            .expect("absent queues")
            .retain(|q, _| queues.contains(q));
    }
}

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

/// The fence to move under: this coordinator's current lease, taken now if it is free. `None` on a follower.
async fn lead(state: &AppState) -> Option<Fence> {
    match state.leader.fence() {
        Some(f) => Some(f),
        None => state.leader.tick().await,
    }
}

type Pause = std::sync::OnceLock<Option<std::time::Duration>>;

/// A pause for tests that stop a leader with a move in flight (unset in production): milliseconds from `var`.
fn pause_from(cell: &'static Pause, var: &str) -> Option<std::time::Duration> {
    *cell.get_or_init(|| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    })
}

/// `CELERIAC_TEST_PAUSE_IN_MOVE_MS`: on Redis between the two steps of a move (the message in the holding list);
/// on RabbitMQ after a message is taken (unacknowledged) and before the lease is checked for its publish.
fn test_pause() -> Option<std::time::Duration> {
    static PAUSE: Pause = Pause::new();
    pause_from(&PAUSE, "CELERIAC_TEST_PAUSE_IN_MOVE_MS")
}

/// `CELERIAC_TEST_PAUSE_AFTER_PUBLISH_MS`: on RabbitMQ after a moved message was published (and confirmed) and
/// before it is acknowledged in the old queue.
fn test_pause_after_publish() -> Option<std::time::Duration> {
    static PAUSE: Pause = Pause::new();
    pause_from(&PAUSE, "CELERIAC_TEST_PAUSE_AFTER_PUBLISH_MS")
}

/// Give every message still waiting in an offline node's `.dq2` a new place, if this coordinator leads. Returns
/// how many moved.
pub async fn reroute_node(state: &AppState, node: &str) -> Result<usize, ApiError> {
    let dq = celery_proto::keys::worker_direct_queue(node);
    let Some(fence) = lead(state).await else {
        return Ok(0);
    };
    let Some(redis) = &state.jobs.broker_redis else {
        return reroute_through_transport(state, &fence, node, &dq).await;
    };
    let mut moved = 0;
    loop {
        let raw = match redis.fenced_take(&fence, &dq, HOLDING_KEY).await? {
            Fenced::Done(Some(raw)) => raw,
            Fenced::Done(None) => break,
            Fenced::Deposed => {
                state.leader.deposed(&fence);
                break;
            }
        };
        if let Some(pause) = test_pause() {
            tracing::warn!(
                from_node = node,
                pause_ms = pause.as_millis() as u64,
                "test hook: pausing between the two steps of a move (message in the holding list)"
            );
            tokio::time::sleep(pause).await;
        }
        if !move_held(state, &fence, &raw, node).await? {
            break;
        }
        moved += 1;
    }
    Ok(moved)
}

/// Re-route through the transport seam (RabbitMQ): take each waiting message unacknowledged, publish it to its
/// new queue, then acknowledge it.
async fn reroute_through_transport(
    state: &AppState,
    fence: &Fence,
    node: &str,
    dq: &str,
) -> Result<usize, ApiError> {
    let t = &state.jobs.transport;
    // Nothing to do for a node whose queue does not exist (or is empty): do not start a consumer for it.
    let now = Instant::now();
    if !state.absent_direct_queues.due(dq, now) {
        return Ok(0);
    }
    match t.queue_len(dq).await? {
        None => {
            state.absent_direct_queues.missing(dq, now);
            return Ok(0);
        }
        Some(n) => {
            state.absent_direct_queues.found(dq);
            if n == 0 {
                return Ok(0);
            }
        }
    }
    let queues = [dq.to_string()];
    let mut moved = 0;
    // The tags of the batch in hand not acknowledged yet: given back if this pass stops early.
    let mut unsettled: Vec<String> = Vec::new();
    let outcome = async {
        loop {
            let batch = t
                .consume(&queues, 16, std::time::Duration::from_millis(500))
                .await?;
            if batch.is_empty() {
                return Ok::<_, ApiError>(());
            }
            unsettled = batch.iter().filter_map(|d| d.tag.clone()).collect();
            for d in batch {
                if let Some(pause) = test_pause() {
                    tracing::warn!(
                        from_node = node,
                        pause_ms = pause.as_millis() as u64,
                        "test hook: pausing with a message taken, before checking the lease for its publish"
                    );
                    tokio::time::sleep(pause).await;
                }
                // A publish to RabbitMQ cannot be inside a Redis script: check the lease just before it. Stopping
                // here leaves this message and the rest of the batch unacknowledged; they are given back below.
                if !state.leader.redis().lease_holds(fence).await? {
                    tracing::warn!(from_node = node, term = fence.term, "move refused: this coordinator's lease is no longer current; the message goes back to the queue for the new leader");
                    state.leader.deposed(fence);
                    return Ok(());
                }
                let unreadable = match &d.message {
                    Ok(msg) => {
                        let mv = plan_move(state, msg, node).await?;
                        let mut env = celery_proto::kombu_amqp::envelope_of(msg);
                        env.routing_key = mv.target.clone();
                        t.publish(&mv.target, &env).await?;
                        finish_move(state, mv, node).await?;
                        if let Some(pause) = test_pause_after_publish() {
                            tracing::warn!(
                                from_node = node,
                                pause_ms = pause.as_millis() as u64,
                                "test hook: pausing after publishing a moved message, before acknowledging it"
                            );
                            tokio::time::sleep(pause).await;
                        }
                        None
                    }
                    Err(e) => Some(e.to_string()),
                };
                if let Some(why) = unreadable {
                    // Unreadable: kept as a dead letter with the reason, as a worker would.
                    tracing::error!(from_node = node, error = %why, "an unreadable message in an offline worker's queue");
                    let record = serde_json::json!({
                        "reason": format!("undecodable message while re-routing: {why}"),
                        "queue": dq,
                        "node": "celeriac-coordinator",
                        "time": chrono_now(),
                        "message": String::from_utf8_lossy(&d.raw),
                    });
                    t.dead_letter(celery_proto::keys::DEAD_LETTERS, record.to_string().as_bytes())
                        .await?;
                }
                if let Some(tag) = &d.tag {
                    t.ack(tag).await?;
                    unsettled.retain(|u| u != tag);
                }
                moved += 1;
            }
        }
    }
    .await;
    // Stop consuming the queue (anything still prefetched goes back to it).
    if let Err(e) = t.consume(&[], 0, std::time::Duration::ZERO).await {
        tracing::warn!(error = %e, "could not stop consuming {dq}");
    }
    // Give back what was taken and not moved (deposed, or an error): unacknowledged messages return to the .dq2
    // only when the channel closes, so a coordinator that lives on would keep them from the next leader.
    for tag in unsettled {
        if let Err(e) = t.requeue(&tag, transport::Requeue::Front).await {
            tracing::warn!(error = %e, "could not give a message back to {dq}; RabbitMQ returns it when the connection closes");
        }
    }
    outcome?;
    Ok(moved)
}

fn chrono_now() -> String {
    celery_proto::time::isoformat(chrono::Utc::now())
}

/// Finish moves a previous leader (or this one, before an error) left in the holding list, if this coordinator
/// leads. Returns how many were finished here.
pub async fn recover_held(state: &AppState) -> Result<usize, ApiError> {
    let Some(redis) = &state.jobs.broker_redis else {
        return Ok(0);
    };
    let held = redis.held(HOLDING_KEY).await?;
    if held.is_empty() {
        return Ok(0);
    }
    let Some(fence) = lead(state).await else {
        return Ok(0);
    };
    let mut n = 0;
    for raw in held {
        let from = Message::decode(&raw, false)
            .ok()
            .and_then(|m| m.routing_key.strip_suffix(".dq2").map(str::to_string))
            .unwrap_or_default();
        if !move_held(state, &fence, &raw, &from).await? {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// Decide again for one held message and push it to its new queue (atomically with its removal from holding,
/// under `fence`). False when the lease turned out not to be ours any more (nothing was changed).
async fn move_held(
    state: &AppState,
    fence: &Fence,
    raw: &[u8],
    from_node: &str,
) -> Result<bool, ApiError> {
    let redis = state
        .jobs
        .broker_redis
        .as_ref()
        .expect("holding moves happen on Redis");
    let Ok(msg) = Message::decode(raw, false) else {
        // Unreadable: hand it to the default shared queue unchanged, where a worker dead-letters it visibly.
        let q = state.jobs.config.get().routing.default_queue.clone();
        tracing::error!(from_node, queue = %q, "moving an unreadable message from an offline worker's queue");
        return Ok(
            match redis
                .fenced_commit(fence, HOLDING_KEY, raw, &q, 0, raw)
                .await?
            {
                Fenced::Done(_) => true,
                Fenced::Deposed => {
                    state.leader.deposed(fence);
                    false
                }
            },
        );
    };
    let mv = plan_move(state, &msg, from_node).await?;
    let rewritten =
        celery_proto::kombu_redis::readdress(raw, &mv.target).unwrap_or_else(|| raw.to_vec());
    match redis
        .fenced_commit(
            fence,
            HOLDING_KEY,
            raw,
            &mv.target,
            msg.priority,
            &rewritten,
        )
        .await?
    {
        Fenced::Done(Commit::Moved) => {
            finish_move(state, mv, from_node).await?;
            Ok(true)
        }
        Fenced::Done(Commit::AlreadyDone) => {
            tracing::info!(id = %mv.id, from_node, "a held move was already finished; nothing pushed again");
            Ok(true)
        }
        Fenced::Deposed => {
            tracing::warn!(id = %mv.id, from_node, term = fence.term, "move refused: this coordinator's lease is no longer current; the new leader finishes it");
            state.leader.deposed(fence);
            Ok(false)
        }
    }
}

/// Where a job taken from an offline node's queue goes, and why.
struct Move {
    id: String,
    task: String,
    record: Option<JobRecord>,
    decision: Decision,
    target: String,
    reason: String,
}

/// Decide again for a message from `from_node`'s queue: the new place routing gives it, or the shared queue when
/// no other worker qualifies (never back to the offline node).
async fn plan_move(state: &AppState, msg: &Message, from_node: &str) -> Result<Move, ApiError> {
    let text = |k: &str| {
        msg.headers
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (id, task) = (text("id"), text("task"));
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
    Ok(Move {
        id,
        task,
        record,
        decision,
        target,
        reason,
    })
}

/// After a move: count it, log it, and write it into the job's record.
async fn finish_move(state: &AppState, mv: Move, from_node: &str) -> Result<(), ApiError> {
    state.metrics.reroutes.inc();
    tracing::warn!(id = %mv.id, task = %mv.task, from_node, to = %mv.target, "re-routed a job waiting for an offline worker");
    if let Some(mut rec) = mv.record {
        rec.reroutes.push(Reroute {
            from_node: from_node.to_string(),
            to_queue: mv.target.clone(),
            at: broker::now_f64(),
            reason: mv.reason,
        });
        rec.node = mv
            .decision
            .outcome
            .node()
            .map(str::to_string)
            .filter(|_| mv.target != mv.decision.queue);
        rec.published_to = Some(mv.target);
        rec.decision = mv.decision;
        state.jobs.store.put_job(&rec).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_queue_is_looked_at_after_1_2_4_s_up_to_a_minute_and_every_pass_once_found() {
        let absent = AbsentQueues::default();
        let t0 = Instant::now();
        let q = "py@host.dq2";
        assert!(absent.due(q, t0), "never looked at");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            absent.missing(q, now);
            let mut wait = Duration::ZERO;
            while !absent.due(q, now + wait) {
                wait += Duration::from_millis(500);
            }
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(absent.due("other.dq2", t0), "one queue's wait is its own");
        absent.found(q);
        assert!(absent.due(q, now), "found: due on every pass");
        absent.missing(q, now);
        assert!(!absent.due(q, now + Duration::from_millis(900)));
        assert!(
            absent.due(q, now + Duration::from_secs(1)),
            "the wait starts again at 1 s"
        );
        absent.missing("gone.dq2", now);
        absent.keep_only(&[q.to_string()]);
        assert!(
            absent.due("gone.dq2", now),
            "forgotten once its node is no longer offline"
        );
        assert!(!absent.due(q, now));
    }
}
