//! The executor: one received message from delivery to settlement. Decode, dead-letter what cannot run, track the
//! request, honour revocation, expiry, ETA, prefetch and concurrency, rate and time limits, run the task, store its
//! result, emit its events, apply callbacks, chains, chords and retries, and settle the message exactly once
//! (ack, requeue, or restore on shutdown) through the request table in [`crate::state`].

use celery_proto::event::TaskEvent;
use celery_proto::pyrepr::{REPR_MAXLEN, saferepr, truncate};
use celery_proto::time::isoformat;
use celery_proto::{
    ExceptionInfo, Extended, InvalidTask, Message, ResultMeta, Signature, State, TaskMessage,
};
use chrono::Utc;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use transport::{Backoff, Delivery, Requeue, ResultKey, SharedBackend, SharedTransport, now_f64};

use crate::config::RuntimeConfig;
use crate::events::EventSink;
use crate::otel::Tracing;
use crate::ratelimit::RateLimiters;
use crate::state::{Phase, RequestInfo, WorkerState};
use crate::task::{StopReason, Task, TaskContext, TaskError, TaskRegistry};

/// How the worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shutdown {
    Running,
    /// Stop consuming, finish active tasks, give reserved and scheduled messages back.
    Warm,
    /// Stop now: give back everything still unacked.
    Cold,
}

/// The execution pool: how many tasks may run at once, resizable by remote control (`pool_grow`/`pool_shrink`).
pub struct Pool {
    slots: Arc<Semaphore>,
    size: AtomicUsize,
}

impl Pool {
    pub fn new(size: usize) -> Pool {
        let size = size.max(1);
        Pool {
            slots: Arc::new(Semaphore::new(size)),
            size: AtomicUsize::new(size),
        }
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    pub fn grow(&self, n: usize) {
        self.slots.add_permits(n);
        self.size.fetch_add(n, Ordering::Relaxed);
    }

    /// Shrink by up to `n` (never below one); running tasks finish first. Returns by how much it shrinks.
    pub fn shrink(&self, n: usize) -> usize {
        let n = n.min(self.size().saturating_sub(1));
        if n > 0 {
            self.size.fetch_sub(n, Ordering::Relaxed);
            let slots = self.slots.clone();
            tokio::spawn(async move {
                if let Ok(p) = slots.acquire_many_owned(n as u32).await {
                    p.forget();
                }
            });
        }
        n
    }

    fn slots(&self) -> Arc<Semaphore> {
        self.slots.clone()
    }
}

/// Why a request ends revoked (the `reason` of Celery's `TaskRevokedError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevokeReason {
    Revoked,
    Expired,
    Terminated,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Revoked => "revoked",
            RevokeReason::Expired => "expired",
            RevokeReason::Terminated => "terminated",
        }
    }
}

/// Why a message is given back without running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RejectReason {
    /// The task raised `Reject` (Celery's `task-rejected` event is sent).
    Task(String),
    /// The worker is shutting down: restored to the front of its queue, no event.
    Shutdown,
    /// The pool closed under it: back of the queue, no event.
    Closing,
}

pub(crate) enum Outcome {
    Success(Value),
    Failure(ExceptionInfo, Option<String>),
    Retry {
        countdown: f64,
        exc: Option<ExceptionInfo>,
        max_retries: Option<u32>,
    },
    Reject {
        requeue: bool,
        reason: RejectReason,
    },
    Revoked(RevokeReason),
}

impl Outcome {
    /// What the run span records of this outcome (`crate::otel`).
    fn run_end(&self) -> crate::otel::RunEnd {
        let (state, error, retry_reason) = match self {
            Outcome::Success(_) => ("SUCCESS", None, None),
            Outcome::Failure(exc, _) => ("FAILURE", Some(exc.repr()), None),
            Outcome::Retry { exc, countdown, .. } => {
                let reason = match exc {
                    Some(e) => format!("Retry in {countdown}s: {}", e.repr()),
                    None => format!("Retry in {countdown}s"),
                };
                ("RETRY", None, Some(reason))
            }
            Outcome::Reject { .. } => ("REJECTED", None, None),
            Outcome::Revoked(_) => ("REVOKED", None, None),
        };
        crate::otel::RunEnd {
            state,
            error,
            retry_reason,
        }
    }
}

/// Gives a prefetch slot back when the message is settled (or the handler ends), and remembers whether this handler
/// already settled its message.
pub(crate) struct Slot {
    permit: Option<Arc<Semaphore>>,
    /// Set while the message is held outside the prefetch budget (an ETA task): the transport was told and the
    /// worker's count raised, both undone when the message is settled or the handler ends.
    beyond: Option<(SharedTransport, Arc<AtomicUsize>)>,
    settled: bool,
    /// Delivery order of the message (see `Requests::next_delivery`).
    seq: u64,
}

impl Slot {
    pub(crate) fn new(prefetch: Arc<Semaphore>, seq: u64) -> Slot {
        Slot {
            permit: Some(prefetch),
            beyond: None,
            settled: false,
            seq,
        }
    }

    fn release(&mut self) {
        if let Some(s) = self.permit.take() {
            s.add_permits(1);
        }
    }

    /// Give the prefetch slot back while the message stays held (an ETA task), count it in `held`, and tell the
    /// transport.
    fn hold_beyond_prefetch(&mut self, transport: &SharedTransport, held: &Arc<AtomicUsize>) {
        self.release();
        if self.beyond.is_none() && !self.settled {
            transport.hold_beyond_prefetch(1);
            held.fetch_add(1, Ordering::SeqCst);
            self.beyond = Some((transport.clone(), held.clone()));
        }
    }

    fn end_hold(&mut self) {
        if let Some((t, held)) = self.beyond.take() {
            t.hold_beyond_prefetch(-1);
            held.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// True when this caller may settle `tag` now: not yet settled by this handler nor claimed by anyone else.
    fn claim(&mut self, state: &WorkerState, tag: &str) -> bool {
        if self.settled {
            return false;
        }
        self.settled = true;
        self.end_hold();
        state.requests.claim_settlement(tag)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
        self.end_hold();
    }
}

/// An early ack sent while the body ran and not yet answered: awaited beside the result write.
type PendingAck<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Where a message came from and its bytes, for the dead letters.
struct Unprocessable<'a> {
    queue: &'a str,
    raw: &'a [u8],
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Executor {
    pub config: Arc<RuntimeConfig>,
    pub registry: Arc<TaskRegistry>,
    pub transport: SharedTransport,
    pub backend: SharedBackend,
    pub state: Arc<WorkerState>,
    pub events: EventSink,
    pub pool: Arc<Pool>,
    pub prefetch: Arc<Semaphore>,
    pub rate: Arc<RateLimiters>,
    pub shutdown: watch::Receiver<Shutdown>,
    /// Becomes true once the consumer took its last messages (set by `consumer::consume` when it returns).
    pub consumer_done: Arc<watch::Sender<bool>>,
    /// ETA tasks held outside the prefetch budget now (bounded by `config.eta_hold_max`).
    pub eta_held: Arc<AtomicUsize>,
    /// The bound was reached once (logged once).
    pub eta_bound_logged: Arc<std::sync::atomic::AtomicBool>,
    /// OpenTelemetry spans and trace-context headers, when `config.tracing` is on ([`crate::otel`]).
    pub otel: Option<Arc<Tracing>>,
}

impl Executor {
    fn stopping(&self) -> Shutdown {
        *self.shutdown.borrow()
    }

    /// The request's stop signal fired. During a cold shutdown that is the worker stopping everything it holds:
    /// the message is given back (restored for redelivery), so the task must not be reported REVOKED.
    /// Otherwise it is a revoke (with terminate, for an active request) by remote control.
    fn stopped(&self, reason: RevokeReason) -> Outcome {
        if self.stopping() == Shutdown::Cold {
            Outcome::Reject {
                requeue: true,
                reason: RejectReason::Shutdown,
            }
        } else {
            Outcome::Revoked(reason)
        }
    }

    /// Restore held messages in these phases to the front of their queues (kombu's restore on close), in the
    /// order they were delivered. Each is claimed in the request table first, so its handler will not settle it
    /// again; calling this twice restores nothing twice.
    pub(crate) async fn give_back(&self, phases: &[Phase]) {
        let tags = self.state.requests.claim_in(phases);
        if tags.is_empty() {
            return;
        }
        tracing::info!(count = tags.len(), "restoring unacknowledged message(s)");
        for tag in tags {
            if let Err(e) = self.transport.requeue(&tag, Requeue::Front).await {
                tracing::error!(tag, error = %e, "could not restore message; it stays unacknowledged and will be restored after the visibility timeout");
            }
        }
    }

    /// Run a delivery in its own task; it holds one prefetch slot until settled.
    pub(crate) fn dispatch(&self, d: Delivery) {
        let me = self.clone();
        let slot = Slot::new(self.prefetch.clone(), self.state.requests.next_delivery());
        tokio::spawn(async move { me.handle(d, slot).await });
    }

    /// Keep an unprocessable message: log it and write it to the dead letters with the reason, its queue, the
    /// worker, the time and the original bytes (`message` as text; `message_base64` as well when the bytes are not
    /// UTF-8), under a new id. Entries beyond the configured bounds are dropped, logged and counted.
    async fn dead_letter(&self, d: &Unprocessable<'_>, reason: &str) {
        let id = uuid::Uuid::new_v4().to_string();
        tracing::error!(queue = %d.queue, reason, bytes = d.raw.len(), dead_letter = %id, "rejecting message");
        let mut record = json!({
            "id": id,
            "reason": reason,
            "queue": d.queue,
            "node": self.config.node_name,
            "time": isoformat(Utc::now()),
            "message": String::from_utf8_lossy(d.raw),
        });
        if std::str::from_utf8(d.raw).is_err() {
            record["message_base64"] = Value::String(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                d.raw,
            ));
        }
        crate::metrics::METRICS.dead_letters.inc();
        match self
            .transport
            .keep_dead_letter(
                &self.config.dead_letter_key,
                &id,
                &celery_proto::json::to_py_json(&record),
                self.config.dead_letter_bounds,
            )
            .await
        {
            Ok(dropped) => crate::metrics::dead_letters_dropped(&dropped, &self.config),
            Err(e) => tracing::error!(error = %e, "could not write dead letter"),
        }
    }

    /// Acknowledge once (retrying while the broker is briefly away, unless shutting down cold).
    async fn ack(&self, tag: &str, slot: &mut Slot) {
        if !slot.claim(&self.state, tag) {
            return;
        }
        let permit = slot.permit.take();
        self.ack_claimed(tag, permit).await;
    }

    /// Send the ack of a message this handler claimed, then give its prefetch slot back.
    async fn ack_claimed(&self, tag: &str, permit: Option<Arc<Semaphore>>) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            match self.transport.ack(tag).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && self.stopping() != Shutdown::Cold => {
                    self.transport.note_error(&e);
                    tracing::warn!(tag, error = %e, "ack failed; retrying");
                    backoff.wait().await;
                }
                Err(e) => {
                    tracing::error!(tag, error = %e, "ack failed; the message may be delivered again");
                    break;
                }
            }
        }
        if let Some(s) = permit {
            s.add_permits(1);
        }
    }

    /// Give the message back once: to the back of its queue (`Requeue::Back`) or restored to the front.
    async fn requeue(&self, tag: &str, to: Requeue, slot: &mut Slot) {
        if !slot.claim(&self.state, tag) {
            tracing::debug!(tag, "message already settled; not requeued again");
            return;
        }
        if let Err(e) = self.transport.requeue(tag, to).await {
            tracing::error!(tag, error = %e, "requeue failed; the message stays unacked and will be restored after the visibility timeout");
        }
        slot.release();
    }

    async fn handle(self, d: Delivery, mut slot: Slot) {
        let Delivery {
            queue,
            tag,
            raw,
            message,
        } = d;
        let d = Unprocessable {
            queue: &queue,
            raw: &raw,
        };
        let msg = match message {
            Ok(m) => m,
            Err(e) => {
                self.dead_letter(&d, &format!("undecodable message: {e}"))
                    .await;
                if let Some(tag) = &tag {
                    self.ack(tag, &mut slot).await;
                }
                return;
            }
        };
        // A decodable message the transport could not hold (kombu records only string delivery tags) still runs, as
        // it always did; settling its own tag is then a no-op on the broker.
        let tag = tag.unwrap_or_else(|| msg.delivery_tag.clone());
        let task_msg = match TaskMessage::from_message(&msg) {
            Ok(t) => t,
            Err(e) => {
                let why = match &e {
                    InvalidTask::NoTaskName => format!("unknown message (no task name): {e}"),
                    _ => format!("invalid task message: {e}"),
                };
                self.dead_letter(&d, &why).await;
                self.ack(&tag, &mut slot).await;
                return;
            }
        };
        let Some(task) = self.registry.get(&task_msg.name) else {
            tracing::error!(task = %task_msg.name, id = %task_msg.id, "received unregistered task");
            let exc = ExceptionInfo::not_registered(&task_msg.name);
            self.store(&task_msg, &msg, State::Failure, exc.to_value(), None)
                .await;
            // Celery reports NotRegistered and forgets the message; it is also kept here, so it can be replayed
            // once a worker has the task (a later SUCCESS replaces the FAILURE).
            self.dead_letter(&d, &format!("unregistered task: {}", task_msg.name))
                .await;
            // Metrics count it under "unknown": a client sending arbitrary names must not grow the label set.
            self.events
                .task(
                    "unknown",
                    &task_msg.id,
                    TaskEvent::Failed {
                        exception: exc.repr(),
                        traceback: None,
                    },
                )
                .await;
            self.ack(&tag, &mut slot).await;
            return;
        };
        self.process(task, Arc::new(task_msg), Arc::new(msg), tag, slot)
            .await;
    }

    async fn process(
        &self,
        task: Arc<Task>,
        req: Arc<TaskMessage>,
        msg: Arc<Message>,
        tag: String,
        mut slot: Slot,
    ) {
        let id = req.id.clone();
        let info = RequestInfo {
            id: id.clone(),
            name: req.name.clone(),
            args: req.args.clone(),
            kwargs: req.kwargs.clone(),
            argsrepr: req.argsrepr.clone(),
            kwargsrepr: req.kwargsrepr.clone(),
            exchange: msg.exchange.clone(),
            routing_key: msg.routing_key.clone(),
            priority: msg.priority,
            redelivered: msg.redelivered,
            time_start: None,
            acknowledged: false,
            eta: req.eta,
            stamps: req
                .headers
                .get("stamps")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        };
        let ctx = TaskContext::new(
            &id,
            &req.name,
            req.retries,
            &self.config.node_name,
            Some(self.progress_fn(&req, &msg)),
        );
        self.state
            .requests
            .track(&tag, slot.seq, info, ctx.stop.clone());
        let received = TaskEvent::Received {
            name: req.name.clone(),
            args: req.argsrepr.clone(),
            kwargs: req.kwargsrepr.clone(),
            root_id: req.root_id.clone(),
            parent_id: req.parent_id.clone(),
            retries: req.retries,
            eta: req.eta.map(isoformat),
            expires: req.expires.map(isoformat),
        };
        self.events.task(&req.name, &id, received).await;

        let run = async {
            let mut early_ack = None;
            let outcome = self
                .run_request(&task, &req, &msg, &tag, ctx, &mut slot, &mut early_ack)
                .await;
            // An early ack still on its way goes on beside the result write (both batched by the transport).
            match early_ack {
                Some(ack) => {
                    tokio::join!(ack, self.finish(&task, &req, &msg, &tag, outcome, slot));
                }
                None => self.finish(&task, &req, &msg, &tag, outcome, slot).await,
            }
        };
        match &self.otel {
            // Everything the request does runs inside its `run/<task>` span, so the callbacks it publishes and the
            // results it stores are that span's children (`Context::current()` in `otel`).
            Some(otel) => {
                use opentelemetry::context::FutureExt as _;
                use opentelemetry::trace::TraceContextExt as _;
                let cx = otel.start_run(&req, &msg, &self.config.node_name);
                run.with_context(cx.clone()).await;
                cx.span().end();
            }
            None => run.await,
        }
        self.state.requests.untrack(&tag);
    }

    /// Everything from "received" to "the body returned": revocation, expiry, ETA, limits, ack timing.
    #[allow(clippy::too_many_arguments)]
    async fn run_request<'a>(
        &'a self,
        task: &Arc<Task>,
        req: &TaskMessage,
        msg: &Message,
        tag: &'a str,
        ctx: TaskContext,
        slot: &mut Slot,
        pending_ack: &mut Option<PendingAck<'a>>,
    ) -> Outcome {
        let id = &req.id;
        if self.state.is_revoked(id) {
            return Outcome::Revoked(RevokeReason::Revoked);
        }
        if req.expires.is_some_and(|e| e <= Utc::now()) {
            return Outcome::Revoked(RevokeReason::Expired);
        }
        if let Some(eta) = req.eta.filter(|e| *e > Utc::now()) {
            // Held in memory; like Celery, an ETA task does not count against prefetch (and the broker's own limit
            // is raised for it), up to `eta_hold_max` of them: beyond, it keeps its slot, so the worker stops taking
            // messages once every slot holds one, and the rest waits in the broker instead of in memory.
            self.state.requests.set_phase(tag, Phase::Scheduled, |_| {});
            if self.eta_held.load(Ordering::SeqCst) < self.config.eta_hold_max {
                slot.hold_beyond_prefetch(&self.transport, &self.eta_held);
            } else if !self.eta_bound_logged.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    max = self.config.eta_hold_max,
                    "holding the most ETA tasks allowed (--eta-hold-max); more stay in the broker until these are due"
                );
            }
            let wait = (eta - Utc::now()).to_std().unwrap_or_default();
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s != Shutdown::Running) => return Outcome::Reject { requeue: true, reason: RejectReason::Shutdown },
                _ = ctx.stop.wait() => return self.stopped(RevokeReason::Revoked),
            }
            self.state.requests.set_phase(tag, Phase::Reserved, |_| {});
        }
        // Wait for a free execution slot and the rate limit.
        let mut shutdown = self.shutdown.clone();
        let run_permit = tokio::select! {
            p = self.pool.slots().acquire_owned() => match p { Ok(p) => p, Err(_) => return Outcome::Reject { requeue: true, reason: RejectReason::Closing } },
            _ = shutdown.wait_for(|s| *s != Shutdown::Running) => return Outcome::Reject { requeue: true, reason: RejectReason::Shutdown },
            _ = ctx.stop.wait() => return self.stopped(RevokeReason::Revoked),
        };
        let limit = self
            .state
            .rate_limit_override(&task.name)
            .unwrap_or_else(|| task.options.rate_limit.clone());
        if let Some(limit) = limit {
            tokio::select! {
                _ = self.rate.acquire(&task.name, &limit) => {}
                _ = shutdown.wait_for(|s| *s != Shutdown::Running) => return Outcome::Reject { requeue: true, reason: RejectReason::Shutdown },
            }
        }
        // A shutdown that began while this request waited (or that raced the pool slot in the select above): give
        // it back rather than start it, since a shutting-down worker only waits for requests already active.
        if self.stopping() != Shutdown::Running {
            return Outcome::Reject {
                requeue: true,
                reason: RejectReason::Shutdown,
            };
        }
        if self.state.is_revoked(id) {
            return Outcome::Revoked(RevokeReason::Revoked);
        }
        if req.expires.is_some_and(|e| e <= Utc::now()) {
            return Outcome::Revoked(RevokeReason::Expired);
        }
        let started = Instant::now();
        let time_start = now_f64();
        self.state
            .requests
            .set_phase(tag, Phase::Active, |i| i.time_start = Some(time_start));
        // Early ack (Celery's default): claimed now and sent as the body starts, as Celery's prefork pool acks on
        // the child's "accepted" message while the child already runs the task. If the body returns first, the
        // ack is finished beside the result write (`handle`), so its round trip holds no concurrency slot and the
        // acks and results of tasks running together go out in one batch each; the prefetch slot is given back
        // when the ack is in.
        let early_ack =
            if !(task.options.acks_late || self.config.acks_late) && slot.claim(&self.state, tag) {
                Some(slot.permit.take())
            } else {
                None
            };
        let mut ack: PendingAck<'a> = Box::pin(async move {
            if let Some(permit) = early_ack {
                self.ack_claimed(tag, permit).await;
                self.state.requests.mark_acknowledged(tag);
            }
        });
        let mut acked = false;
        self.events.task(&req.name, id, TaskEvent::Started).await;
        if (self.config.track_started || task.options.track_started)
            && !self.ignores_result(task, req)
        {
            let meta = json!({"pid": std::process::id(), "hostname": self.config.node_name});
            let mut m = ResultMeta::new(id, State::Started, meta);
            m.parent_id = req.parent_id.clone();
            self.write_meta(&m, msg).await;
        }

        // Limits: message header (hard, soft) beats control overrides beat task options.
        let over = self.state.time_limit_override(&task.name);
        let soft = req
            .time_limit
            .1
            .or(over.and_then(|o| o.0))
            .or(task.options.soft_time_limit);
        let hard = req
            .time_limit
            .0
            .or(over.and_then(|o| o.1))
            .or(task.options.time_limit);
        let stop = ctx.stop.clone();
        let fut = task.call(ctx, req.args.clone(), req.kwargs.clone());
        tokio::pin!(fut);
        let deadline = |secs: Option<f64>| async move {
            match secs {
                Some(s) => tokio::time::sleep(Duration::from_secs_f64(s.max(0.0))).await,
                None => std::future::pending().await,
            }
        };
        let mut soft_fired = false;
        let soft_timer = deadline(soft);
        tokio::pin!(soft_timer);
        let hard_timer = deadline(hard);
        tokio::pin!(hard_timer);
        let result = loop {
            tokio::select! {
                // The ack first, so it is on its way before the body's first poll.
                biased;
                _ = &mut ack, if !acked => acked = true,
                r = &mut fut => break Some(r),
                _ = &mut soft_timer, if !soft_fired => {
                    soft_fired = true;
                    tracing::warn!(task = %req.name, id = %id, "soft time limit ({:?}s) exceeded", soft);
                    stop.stop(StopReason::SoftTimeLimit);
                    // A task that does not react to the soft limit within a grace second is cut off.
                    if hard.is_none() { hard_timer.set(deadline(Some(1.0))); }
                }
                _ = &mut hard_timer => {
                    if soft_fired && hard.is_none_or(|h| soft.is_some_and(|s| h <= s)) {
                        break Some(Err(TaskError::Fail { exc: ExceptionInfo::new("celery.exceptions", "SoftTimeLimitExceeded", format!("SoftTimeLimitExceeded({})", soft.unwrap_or_default())), traceback: None }));
                    }
                    tracing::error!(task = %req.name, id = %id, "hard time limit ({:?}s) exceeded", hard);
                    break Some(Err(TaskError::Fail { exc: ExceptionInfo::new("celery.exceptions", "TimeLimitExceeded", format!("TimeLimitExceeded({})", hard.unwrap_or_default())), traceback: None }));
                }
                _ = stop.wait(), if stop.reason() == Some(StopReason::Terminated) || !soft_fired => {
                    if stop.reason() == Some(StopReason::Terminated) { break None; }
                }
            }
        };
        drop(run_permit);
        if !acked {
            *pending_ack = Some(ack);
        }
        // Terminated by remote control: REVOKED "terminated", whatever the body returned while stopping.
        let result = result.filter(|_| stop.reason() != Some(StopReason::Terminated));
        let runtime = started.elapsed().as_secs_f64();
        self.state.count_task(&req.name);
        match result {
            None => self.stopped(RevokeReason::Terminated),
            Some(Ok(v)) => {
                let event = TaskEvent::Succeeded {
                    result: truncate(saferepr(&v), REPR_MAXLEN),
                    runtime,
                };
                self.events.task(&req.name, id, event).await;
                Outcome::Success(v)
            }
            Some(Err(TaskError::Fail { exc, traceback })) => Outcome::Failure(exc, traceback),
            Some(Err(TaskError::Retry {
                countdown,
                exc,
                max_retries,
            })) => Outcome::Retry {
                countdown: countdown.unwrap_or(task.options.default_retry_delay),
                exc,
                max_retries,
            },
            Some(Err(TaskError::Reject { requeue, reason })) => Outcome::Reject {
                requeue,
                reason: RejectReason::Task(reason),
            },
        }
    }

    fn ignores_result(&self, task: &Task, req: &TaskMessage) -> bool {
        req.ignore_result.unwrap_or(task.options.ignore_result)
    }

    /// Store the outcome, emit the final event, apply callbacks/errbacks/chain, and settle the message.
    async fn finish(
        &self,
        task: &Arc<Task>,
        req: &TaskMessage,
        msg: &Message,
        tag: &str,
        outcome: Outcome,
        mut slot: Slot,
    ) {
        let id = &req.id;
        let ignore = self.ignores_result(task, req);
        if self.otel.is_some() {
            crate::otel::note_run_end(outcome.run_end());
        }
        // False once a result write failed or was not confirmed by the replicas asked for: a message not yet
        // acknowledged (acks_late) is then left unacknowledged, to run again, rather than acknowledged with its
        // result at risk.
        let mut stored = true;
        match outcome {
            Outcome::Success(value) => {
                if !ignore {
                    stored &= self
                        .store(req, msg, State::Success, value.clone(), None)
                        .await;
                }
                self.chord_part(req, &State::Success, &value).await;
                self.apply_callbacks(req, &value).await;
            }
            Outcome::Failure(exc, traceback) => {
                let tb = traceback.unwrap_or_else(|| rust_traceback(&req.name, &exc));
                tracing::warn!(task = %req.name, id = %id, error = %exc.repr(), "task failed");
                stored &= self
                    .store(req, msg, State::Failure, exc.to_value(), Some(tb.clone()))
                    .await;
                self.chord_part(req, &State::Failure, &exc.to_value()).await;
                let event = TaskEvent::Failed {
                    exception: exc.repr(),
                    traceback: Some(tb),
                };
                self.events.task(&req.name, id, event).await;
                self.apply_errbacks(req).await;
            }
            Outcome::Retry {
                countdown,
                exc,
                max_retries,
            } => {
                let max = max_retries.or(task.options.max_retries).unwrap_or(3);
                let exc = exc.unwrap_or_else(|| {
                    ExceptionInfo::new(
                        "celery.exceptions",
                        "Retry",
                        format!("Retry in {countdown}s"),
                    )
                });
                if req.retries >= max {
                    let tb = rust_traceback(&req.name, &exc);
                    stored &= self
                        .store(req, msg, State::Failure, exc.to_value(), Some(tb.clone()))
                        .await;
                    let event = TaskEvent::Failed {
                        exception: exc.repr(),
                        traceback: Some(tb),
                    };
                    self.events.task(&req.name, id, event).await;
                    self.apply_errbacks(req).await;
                } else if let Err(e) = self.republish_retry(req, msg, countdown).await {
                    tracing::error!(id = %id, error = %e, "could not republish retry; requeueing the message");
                    self.requeue(tag, Requeue::Front, &mut slot).await;
                    return;
                } else {
                    let tb = rust_traceback(&req.name, &exc);
                    let mut meta = ResultMeta::new(id, State::Retry, exc.to_value());
                    meta.traceback = Some(tb.clone());
                    meta.children = json!([[[id, null], null]]);
                    meta.parent_id = req.parent_id.clone();
                    meta.extended = self.extended(req, msg);
                    if !ignore {
                        stored &= self.write_meta(&meta, msg).await;
                    }
                    let event = TaskEvent::Retried {
                        exception: format!("Retry in {countdown}s: {}", exc.repr()),
                        traceback: tb,
                    };
                    self.events.task(&req.name, id, event).await;
                }
            }
            Outcome::Reject { requeue, reason } => {
                tracing::info!(id = %id, requeue, reason = ?reason, "task rejected");
                if let RejectReason::Task(_) = reason {
                    self.events
                        .task(&req.name, id, TaskEvent::Rejected { requeue })
                        .await;
                }
                if reason == RejectReason::Shutdown {
                    // Messages go back only once the consumer has stopped taking (or its last wait could take them
                    // again), and all at once, in delivery order (this one included), instead of each request
                    // racing to the front of the queue.
                    let _ = self.consumer_done.subscribe().wait_for(|done| *done).await;
                    self.give_back(&[Phase::Reserved, Phase::Scheduled]).await;
                }
                if requeue {
                    let to = match reason {
                        RejectReason::Shutdown => Requeue::Front,
                        RejectReason::Task(_) | RejectReason::Closing => Requeue::Back,
                    };
                    self.requeue(tag, to, &mut slot).await;
                } else {
                    self.ack(tag, &mut slot).await;
                }
                return;
            }
            Outcome::Revoked(reason) => {
                let exc = ExceptionInfo::revoked(reason.as_str());
                // Celery stores REVOKED with `children: null`.
                let mut meta = ResultMeta::new(id, State::Revoked, exc.to_value());
                meta.children = Value::Null;
                meta.group_id = req.group.clone();
                meta.parent_id = req.parent_id.clone();
                meta.extended = self.extended(req, msg);
                stored &= self.write_meta(&meta, msg).await;
                let event = TaskEvent::Revoked {
                    terminated: reason == RevokeReason::Terminated,
                    signum: (reason == RevokeReason::Terminated).then_some(15),
                    expired: reason == RevokeReason::Expired,
                };
                self.events.task(&req.name, id, event).await;
            }
        }
        if !stored {
            self.leave_unacked(tag, &mut slot);
        }
        self.ack(tag, &mut slot).await;
    }

    /// A late-ack message whose result could not be stored safely: it is not acknowledged, so it stays in the
    /// broker's unacked set and runs again once the visibility timeout has passed (at-least-once), instead of
    /// being acknowledged with its result lost. A message already acknowledged (early ack) is left as it is.
    fn leave_unacked(&self, tag: &str, slot: &mut Slot) {
        if slot.claim(&self.state, tag) {
            tracing::warn!(
                tag,
                "result not stored safely; the message is left unacknowledged and runs again after the visibility timeout"
            );
            slot.release();
        }
    }

    async fn chord_part(&self, req: &TaskMessage, state: &State, result: &Value) {
        crate::chord::part_return(
            &*self.backend,
            &*self.transport,
            self.config.result_expires,
            req,
            state,
            result,
        )
        .await;
    }

    fn extended(&self, req: &TaskMessage, msg: &Message) -> Option<Extended> {
        self.config.result_extended.then(|| Extended {
            name: req.name.clone(),
            args: req.args.clone(),
            kwargs: req.kwargs.clone(),
            worker: self.config.node_name.clone(),
            retries: req.retries,
            queue: msg.routing_key.clone(),
        })
    }

    async fn store(
        &self,
        req: &TaskMessage,
        msg: &Message,
        status: State,
        result: Value,
        traceback: Option<String>,
    ) -> bool {
        let mut meta = ResultMeta::new(&req.id, status, result);
        meta.traceback = traceback;
        meta.group_id = req.group.clone();
        meta.parent_id = req.parent_id.clone();
        meta.extended = self.extended(req, msg);
        self.write_meta(&meta, msg).await
    }

    /// Write a result meta, retrying while the backend is unreachable (the result must not be lost). `msg` is the
    /// task message: its `reply_to` is where `rpc://` sends the result. False when it could not be written, or
    /// was written but not confirmed by the replicas asked for (`CELERIAC_REDIS_WAIT_REPLICAS`).
    async fn write_meta(&self, meta: &ResultMeta, msg: &Message) -> bool {
        // A store span only inside a request's run span: progress updates written from their own tokio task have
        // no context to continue, and a root span per update would only be noise.
        let span = self
            .otel
            .as_ref()
            .filter(|_| {
                use opentelemetry::trace::TraceContextExt as _;
                opentelemetry::Context::current().has_active_span()
            })
            .map(|otel| {
                let task = msg.headers.get("task").and_then(Value::as_str);
                otel.start_store(task.unwrap_or("unknown"), &meta.task_id, &meta.status)
            });
        let stored = self.write_meta_inner(meta, msg).await;
        if let Some(mut span) = span {
            use opentelemetry::trace::Span as _;
            span.end();
        }
        stored
    }

    async fn write_meta_inner(&self, meta: &ResultMeta, msg: &Message) -> bool {
        let mut bytes = meta.encode();
        let max = self.config.result_max_bytes;
        if max > 0 && bytes.len() > max {
            let why = format!(
                "the result of {} is {} bytes, more than this worker stores (--result-max-bytes {max})",
                meta.task_id,
                bytes.len()
            );
            if !meta.status.is_ready() {
                tracing::error!(id = %meta.task_id, state = %meta.status, "{why}; state not stored");
                return true;
            }
            tracing::error!(id = %meta.task_id, "{why}; storing a ValueError instead");
            let mut refused = ResultMeta::new(
                &meta.task_id,
                State::Failure,
                ExceptionInfo::new("builtins", "ValueError", why.clone()).to_value(),
            );
            refused.group_id = meta.group_id.clone();
            refused.parent_id = meta.parent_id.clone();
            bytes = refused.encode();
        }
        let reply_to = msg.properties.get("reply_to").and_then(Value::as_str);
        let key = ResultKey::with_reply_to(&meta.task_id, reply_to);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        for attempt in 0.. {
            match self
                .backend
                .store(key, &bytes, self.config.result_expires)
                .await
            {
                Ok(_) => return true,
                Err(e) if e.is_transient() && attempt < 60 && self.stopping() != Shutdown::Cold => {
                    self.backend.note_error(&e);
                    tracing::warn!(id = %meta.task_id, error = %e, "result backend unavailable; retrying");
                    backoff.wait().await;
                }
                Err(e) => {
                    tracing::error!(id = %meta.task_id, error = %e, "could not store result");
                    return false;
                }
            }
        }
        false
    }

    fn progress_fn(&self, req: &Arc<TaskMessage>, msg: &Arc<Message>) -> crate::task::ProgressFn {
        let me = self.clone();
        let req = req.clone();
        let msg = msg.clone();
        Arc::new(move |state: &str, meta: Value| {
            let me = me.clone();
            let mut m = ResultMeta::new(&req.id, State::from(state.to_string()), meta);
            m.parent_id = req.parent_id.clone();
            m.extended = me.extended(&req, &msg);
            let msg = msg.clone();
            tokio::spawn(async move { me.write_meta(&m, &msg).await });
        })
    }

    async fn republish_retry(
        &self,
        req: &TaskMessage,
        msg: &Message,
        countdown: f64,
    ) -> transport::Result<()> {
        let mut next = request_from(req);
        next.retries = req.retries + 1;
        next.parent_id = Some(req.id.clone());
        next.eta = Some(Utc::now() + chrono::Duration::milliseconds((countdown * 1000.0) as i64));
        // Celery republishes to the routing key on the anonymous exchange, or to the original exchange; we always
        // publish on the anonymous exchange, where a direct exchange's routing key names the queue.
        next.queue = msg.routing_key.clone();
        next.priority = msg.priority;
        // The caller still waits on its reply queue (`rpc://`): the retry keeps it, as in Celery.
        if let Some(r) = msg.properties.get("reply_to").and_then(Value::as_str) {
            next.reply_to = r.to_string();
        }
        let span = self.otel.as_ref().map(|otel| otel.start_publish(&mut next));
        let mut env = next.envelope();
        env.leading_properties
            .insert("origin".into(), json!(self.config.node_name));
        let published = self.transport.publish(&next.queue, &env).await;
        if let Some(mut span) = span {
            use opentelemetry::trace::Span as _;
            span.end();
        }
        published
    }

    async fn apply_callbacks(&self, req: &TaskMessage, value: &Value) {
        for cb in &req.embed.callbacks {
            self.apply_signature(cb, value, req, Vec::new()).await;
        }
        if let Some((next, rest)) = req.embed.chain.split_last() {
            self.apply_signature(next, value, req, rest.to_vec()).await;
        }
    }

    async fn apply_errbacks(&self, req: &TaskMessage) {
        // Old-style errbacks: sent as a task with the failed task's id as the first argument.
        for eb in &req.embed.errbacks {
            self.apply_signature(eb, &json!(req.id), req, Vec::new())
                .await;
        }
    }

    async fn apply_signature(
        &self,
        sig: &Value,
        parent: &Value,
        req: &TaskMessage,
        chain: Vec<Value>,
    ) {
        let Some(sig) = Signature::from_value(sig) else {
            tracing::error!(id = %req.id, "callback is not a signature: {sig}");
            return;
        };
        let mut next = sig.to_request(Some(parent), "celery");
        next.parent_id = Some(req.id.clone());
        next.root_id = Some(req.root_id.clone().unwrap_or_else(|| req.id.clone()));
        next.origin = self.config.node_name.clone();
        next.embed.chain = chain;
        let span = self.otel.as_ref().map(|otel| otel.start_publish(&mut next));
        let env = next.envelope();
        if let Err(e) = self.transport.publish(&next.queue, &env).await {
            tracing::error!(id = %req.id, next = %next.name, error = %e, "could not apply callback");
        }
        if let Some(mut span) = span {
            use opentelemetry::trace::Span as _;
            span.end();
        }
    }
}

/// Rebuild a publishable request from a received one (for retries).
fn request_from(req: &TaskMessage) -> celery_proto::TaskRequest {
    let mut r = celery_proto::TaskRequest::new(req.name.clone());
    r.id = req.id.clone();
    r.args = req.args.clone();
    r.kwargs = req.kwargs.clone();
    r.expires = req.expires;
    r.time_limit = (
        req.time_limit.0.map(|v| json!(v)),
        req.time_limit.1.map(|v| json!(v)),
    );
    r.root_id = req.root_id.clone();
    r.group = req.group.clone();
    r.group_index = req.group_index;
    r.shadow = req.shadow.clone();
    r.ignore_result = req.ignore_result;
    r.origin = req
        .origin
        .clone()
        .unwrap_or_else(celery_proto::task::default_origin);
    r.embed = req.embed.clone();
    r
}

/// A Python-looking traceback for a Rust task failure, so tools that print tracebacks have something true to show.
fn rust_traceback(task: &str, exc: &ExceptionInfo) -> String {
    format!(
        "Traceback (most recent call last):\n  File \"<rust>\", line 0, in {task}\n{}.{}: {}\n",
        exc.exc_module,
        exc.exc_type,
        exc.message()
    )
}
