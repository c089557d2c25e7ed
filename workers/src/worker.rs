//! The worker: consumes Celery queues with kombu's ack emulation, runs registered tasks under concurrency,
//! prefetch, ETA, expiry, revocation, time and rate limits, stores results, applies callbacks and chains,
//! retries, emits events, and shuts down warm (finish active, give back reserved) or cold.

use anyhow::Context as _;
use broker::{Broker, Delivery};
use celery_proto::pyrepr::{REPR_MAXLEN, saferepr, truncate};
use celery_proto::time::isoformat;
use celery_proto::{
    ExceptionInfo, Extended, Message, ResultMeta, Signature, State, TaskError as WireError,
    TaskMessage,
};
use chrono::Utc;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

use crate::config::WorkerConfig;
use crate::events::Events;
use crate::ratelimit::RateLimiters;
use crate::state::{Phase, RequestInfo, Tracked, WorkerState};
use crate::task::{Registry, StopReason, Task, TaskContext, TaskError};

/// How the worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shutdown {
    Running,
    /// Stop consuming, finish active tasks, give reserved and scheduled messages back.
    Warm,
    /// Stop now: give back everything still unacked.
    Cold,
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    pub config: Arc<WorkerConfig>,
    pub registry: Arc<Registry>,
    pub broker: Broker,
    pub backend: Broker,
    pub state: Arc<WorkerState>,
    pub events: Events,
    run_slots: Arc<Semaphore>,
    prefetch: Arc<Semaphore>,
    rate: Arc<RateLimiters>,
    acker: broker::Acker,
    shutdown: watch::Receiver<Shutdown>,
}

/// Gives a prefetch slot back when the message is acknowledged (or otherwise settled).
/// Also remembers whether the message was settled (acked or requeued), so it is never settled twice.
struct Slot {
    permit: Option<Arc<Semaphore>>,
    settled: bool,
}

impl Slot {
    fn new(prefetch: Arc<Semaphore>) -> Slot {
        Slot {
            permit: Some(prefetch),
            settled: false,
        }
    }

    fn release(&mut self) {
        if let Some(s) = self.permit.take() {
            s.add_permits(1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

enum Outcome {
    Success(Value),
    Failure(ExceptionInfo, Option<String>),
    Retry {
        countdown: f64,
        exc: Option<ExceptionInfo>,
        max_retries: Option<u32>,
    },
    Reject {
        requeue: bool,
        reason: String,
    },
    Revoked(&'static str),
}

impl Worker {
    /// Connect to the broker and backend and build the worker. Nothing is consumed until [`Worker::run`].
    pub async fn connect(
        config: WorkerConfig,
        registry: Registry,
        shutdown: watch::Receiver<Shutdown>,
    ) -> anyhow::Result<Worker> {
        let broker = connect_with_retry(&config.broker_url, &shutdown)
            .await
            .context("connecting to the broker")?;
        let backend = if config.result_backend == config.broker_url {
            broker.clone()
        } else {
            connect_with_retry(&config.result_backend, &shutdown)
                .await
                .context("connecting to the result backend")?
        };
        let mut queues = config.queues.clone();
        let dq = celery_proto::keys::worker_direct_queue(&config.node_name);
        if !queues.contains(&dq) {
            queues.push(dq);
        }
        let state = Arc::new(WorkerState::new(
            &config.node_name,
            queues,
            config.task_events,
        ));
        let events = Events::new(broker.clone(), state.clone());
        Ok(Worker {
            run_slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
            prefetch: Arc::new(Semaphore::new(config.prefetch_count())),
            rate: Arc::new(RateLimiters::default()),
            acker: broker::Acker::new(broker.clone()),
            config: Arc::new(config),
            registry: Arc::new(registry),
            broker,
            backend,
            state,
            events,
            shutdown,
        })
    }

    fn stopping(&self) -> Shutdown {
        *self.shutdown.borrow()
    }

    /// Run until shut down: declare queues, restore expired messages, consume, heartbeat.
    pub async fn run(self) -> anyhow::Result<()> {
        let queues = self.state.queues.lock().expect("queues").clone();
        for q in &queues {
            self.broker
                .declare_queue(q)
                .await
                .with_context(|| format!("declaring queue {q}"))?;
        }
        match self
            .broker
            .restore_visible(self.config.visibility_timeout)
            .await
        {
            Ok(n) if n > 0 => tracing::info!(
                restored = n,
                "restored unacknowledged messages of dead consumers"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not restore unacknowledged messages"),
        }
        if !self.config.without_mingle {
            crate::mingle::sync(&self).await;
        }
        let pidbox = crate::control::Pidbox::new(self.clone(), self.run_slots.clone());
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let control = tokio::spawn(pidbox.clone().serve(subscribed.clone()));
        if tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .is_err()
        {
            tracing::warn!("pidbox not subscribed yet; remote control will answer once it is");
        }
        if let Some(port) = self.config.metrics_port {
            crate::metrics::serve(self.clone(), port)
                .await
                .with_context(|| format!("serving metrics on port {port}"))?;
        }
        tracing::info!(
            node = %self.config.node_name,
            queues = ?queues,
            concurrency = self.config.concurrency,
            prefetch = self.config.prefetch_count(),
            broker = %broker::redact(&self.config.broker_url),
            "celeriac-worker ready"
        );
        self.events
            .worker("worker-online", self.config.heartbeat_interval)
            .await;

        let heart = tokio::spawn(self.clone().heartbeat_loop());
        let leases = tokio::spawn(self.clone().lease_loop());
        let consumer = self.clone().consume_loop().await;
        if let Err(e) = &consumer {
            tracing::error!(error = %e, "consumer stopped");
        }

        // Warm shutdown: give back what has not started, then wait for active tasks.
        self.give_back(&[Phase::Reserved, Phase::Scheduled]).await;
        let mut shutdown = self.shutdown.clone();
        loop {
            let active = self.state.active_count();
            if active == 0 || *shutdown.borrow() == Shutdown::Cold {
                break;
            }
            tracing::info!(
                active,
                "waiting for active tasks to finish (send SIGTERM again or SIGQUIT for a cold shutdown)"
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
            }
        }
        if *shutdown.borrow() == Shutdown::Cold {
            for t in self.state.requests.lock().expect("requests").values() {
                t.stop.stop(StopReason::Terminated);
            }
            self.give_back(&[Phase::Reserved, Phase::Scheduled, Phase::Active])
                .await;
        }
        heart.abort();
        leases.abort();
        control.abort();
        pidbox.unbind().await;
        self.events
            .worker("worker-offline", self.config.heartbeat_interval)
            .await;
        tracing::info!("celeriac-worker stopped");
        consumer
    }

    /// Restore held messages in these phases to the front of their queues (kombu's restore on close).
    async fn give_back(&self, phases: &[Phase]) {
        let tags: Vec<String> = {
            let held = self.state.held.lock().expect("held");
            held.iter()
                .filter(|(_, p)| phases.contains(p))
                .map(|(t, _)| t.clone())
                .collect()
        };
        if tags.is_empty() {
            return;
        }
        tracing::info!(count = tags.len(), "restoring unacknowledged message(s)");
        for tag in tags {
            match self.broker.requeue(&tag, true).await {
                Ok(_) => {
                    self.state.held.lock().expect("held").remove(&tag);
                }
                Err(e) => {
                    tracing::error!(tag, error = %e, "could not restore message; it stays in `unacked` and will be restored after the visibility timeout")
                }
            }
        }
    }

    async fn heartbeat_loop(self) {
        let period = Duration::from_secs_f64(self.config.heartbeat_interval.max(0.1));
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.events
                .worker("worker-heartbeat", self.config.heartbeat_interval)
                .await;
        }
    }

    /// Renew the unacked_index score of every message we hold, so no consumer (Python or Rust) restores a
    /// message that a live worker is still holding (ETA tasks, long acks_late tasks); and restore messages
    /// of dead consumers once their lease is older than the visibility timeout.
    async fn lease_loop(self) {
        let mut tick = tokio::time::interval(self.config.restore_interval());
        loop {
            tick.tick().await;
            let tags: Vec<String> = self
                .state
                .held
                .lock()
                .expect("held")
                .keys()
                .cloned()
                .collect();
            if !tags.is_empty()
                && let Err(e) = self.broker.renew_leases(&tags).await
            {
                tracing::warn!(error = %e, "could not renew message leases");
            }
            match self
                .broker
                .restore_visible(self.config.visibility_timeout)
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(restored = n, "restored messages whose consumer went away")
                }
                Ok(_) => {}
                Err(e) => {
                    self.broker.note_connection_error(&e);
                    tracing::warn!(error = %e, "restore of expired messages failed");
                }
            }
        }
    }

    async fn consume_loop(self) -> anyhow::Result<()> {
        let mut blocking = None;
        let mut rotation = 0usize;
        let mut backoff = Duration::from_millis(100);
        let mut shutdown = self.shutdown.clone();
        while self.stopping() == Shutdown::Running {
            // Wait for at least one prefetch slot.
            let permit = tokio::select! {
                p = self.prefetch.clone().acquire_owned() => p.context("prefetch semaphore closed")?,
                _ = shutdown.changed() => continue,
            };
            permit.forget();
            let extra = self.prefetch.available_permits().min(63);
            if extra > 0
                && let Ok(p) = self.prefetch.clone().try_acquire_many_owned(extra as u32)
            {
                p.forget();
            }
            let want = 1 + extra;
            let keys = {
                let mut queues = self.state.queues.lock().expect("queues").clone();
                if !queues.is_empty() {
                    let n = queues.len();
                    queues.rotate_left(rotation % n);
                }
                rotation = rotation.wrapping_add(1);
                celery_proto::keys::consume_keys(&queues)
            };
            let got = match self.broker.fetch(&keys, want).await {
                Ok(d) => d,
                Err(e) => {
                    self.prefetch.add_permits(want);
                    self.broker.note_connection_error(&e);
                    tracing::warn!(error = %e, retry_in = ?backoff, "broker unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            if got.is_empty() {
                self.prefetch.add_permits(want - 1);
                // Idle: block for one message (the one remaining pop-then-record window; see broker docs).
                let conn = match blocking.as_mut() {
                    Some(c) => c,
                    None => match self.broker.blocking_connection().await {
                        Ok(c) => blocking.insert(c),
                        Err(e) => {
                            self.prefetch.add_permits(1);
                            tracing::warn!(error = %e, "broker unavailable; retrying");
                            tokio::time::sleep(backoff).await;
                            continue;
                        }
                    },
                };
                let popped = tokio::select! {
                    r = self.broker.brpop(conn, &keys, 1.0) => r,
                    _ = shutdown.changed() => Ok(None),
                };
                match popped {
                    Ok(Some(d)) => self.dispatch(d),
                    Ok(None) => self.prefetch.add_permits(1),
                    Err(e) => {
                        self.prefetch.add_permits(1);
                        self.broker.note_connection_error(&e);
                        blocking = None;
                        tracing::warn!(error = %e, "broker unavailable; retrying");
                        tokio::time::sleep(backoff).await;
                    }
                }
                continue;
            }
            let n = got.len();
            for d in got {
                self.dispatch(d);
            }
            if n < want {
                self.prefetch.add_permits(want - n);
            }
        }
        Ok(())
    }

    fn dispatch(&self, d: Delivery) {
        let me = self.clone();
        let slot = Slot::new(self.prefetch.clone());
        tokio::spawn(async move { me.handle(d, slot).await });
    }

    /// Keep an unprocessable message: log it and push it to the dead-letter list with the reason.
    async fn dead_letter(&self, d: &Delivery, reason: &str) {
        tracing::error!(queue = %d.queue, reason, bytes = d.raw.len(), "rejecting message");
        let record = json!({
            "reason": reason,
            "queue": d.queue,
            "node": self.config.node_name,
            "time": isoformat(Utc::now()),
            "message": String::from_utf8_lossy(&d.raw),
        });
        if let Err(e) = self
            .broker
            .lpush(
                &self.config.dead_letter_key,
                &celery_proto::json::to_py_json(&record),
            )
            .await
        {
            tracing::error!(error = %e, "could not write dead letter");
        }
    }

    async fn ack(&self, tag: &str, slot: &mut Slot) {
        if slot.settled {
            return;
        }
        slot.settled = true;
        let mut delay = Duration::from_millis(50);
        loop {
            match self.acker.ack(tag).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && self.stopping() != Shutdown::Cold => {
                    self.broker.note_connection_error(&e);
                    tracing::warn!(tag, error = %e, "ack failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(tag, error = %e, "ack failed; the message may be delivered again");
                    break;
                }
            }
        }
        self.state.held.lock().expect("held").remove(tag);
        slot.release();
    }

    async fn handle(self, d: Delivery, mut slot: Slot) {
        let msg = match Message::decode(&d.raw, true) {
            Ok(m) => m,
            Err(e) => {
                self.dead_letter(&d, &format!("undecodable message: {e}"))
                    .await;
                if d.recorded
                    && let Some(tag) = tag_of(&d.raw)
                {
                    self.ack(&tag, &mut slot).await;
                }
                return;
            }
        };
        let tag = msg.delivery_tag.clone();
        self.state
            .held
            .lock()
            .expect("held")
            .insert(tag.clone(), Phase::Reserved);
        let task_msg = match TaskMessage::from_message(&msg) {
            Ok(t) => t,
            Err(e) => {
                let why = match &e {
                    WireError::NoTaskName => format!("unknown message (no task name): {e}"),
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
            self.events
                .task(
                    "task-failed",
                    &task_msg.id,
                    json!({"exception": exc.repr(), "traceback": null}),
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
        let stop = ctx.stop.clone();
        self.state.requests.lock().expect("requests").insert(
            id.clone(),
            Tracked {
                info,
                phase: Phase::Reserved,
                stop: stop.clone(),
            },
        );
        let received = json!({
            "name": req.name, "args": req.argsrepr, "kwargs": req.kwargsrepr,
            "root_id": req.root_id, "parent_id": req.parent_id, "retries": req.retries,
            "eta": req.eta.map(isoformat), "expires": req.expires.map(isoformat),
        });
        self.events.task("task-received", &id, received).await;

        let outcome = self.run_request(&task, &req, &tag, ctx, &mut slot).await;
        self.finish(&task, &req, &msg, &tag, outcome, slot).await;
        // A retry is republished with the same id and may already be tracked by its own handler: remove only ours.
        let mut requests = self.state.requests.lock().expect("requests");
        if requests
            .get(&id)
            .is_some_and(|t| Arc::ptr_eq(&t.stop, &stop))
        {
            requests.remove(&id);
        }
    }

    /// Everything from "received" to "the body returned": revocation, expiry, ETA, limits, ack timing.
    async fn run_request(
        &self,
        task: &Arc<Task>,
        req: &TaskMessage,
        tag: &str,
        ctx: TaskContext,
        slot: &mut Slot,
    ) -> Outcome {
        let id = &req.id;
        if self.state.is_revoked(id) {
            return Outcome::Revoked("revoked");
        }
        if req.expires.is_some_and(|e| e <= Utc::now()) {
            return Outcome::Revoked("expired");
        }
        if let Some(eta) = req.eta.filter(|e| *e > Utc::now()) {
            // Held in memory; like Celery, an ETA task does not count against prefetch.
            self.state.set_phase(id, Phase::Scheduled, |_| {});
            self.state
                .held
                .lock()
                .expect("held")
                .insert(tag.to_string(), Phase::Scheduled);
            slot.release();
            let wait = (eta - Utc::now()).to_std().unwrap_or_default();
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s != Shutdown::Running) => return Outcome::Reject { requeue: true, reason: "shutdown".into() },
                _ = ctx.stop.wait() => return Outcome::Revoked("revoked"),
            }
            self.state.set_phase(id, Phase::Reserved, |_| {});
            self.state
                .held
                .lock()
                .expect("held")
                .insert(tag.to_string(), Phase::Reserved);
        }
        // Wait for a free execution slot and the rate limit.
        let mut shutdown = self.shutdown.clone();
        let run_permit = tokio::select! {
            p = self.run_slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return Outcome::Reject { requeue: true, reason: "closing".into() } },
            _ = shutdown.wait_for(|s| *s != Shutdown::Running) => return Outcome::Reject { requeue: true, reason: "shutdown".into() },
            _ = ctx.stop.wait() => return Outcome::Revoked("revoked"),
        };
        let limit = self
            .state
            .rate_limits
            .lock()
            .expect("rate limits")
            .get(&task.name)
            .cloned()
            .unwrap_or_else(|| task.options.rate_limit.clone());
        if let Some(limit) = limit {
            self.rate.acquire(&task.name, &limit).await;
        }
        if self.state.is_revoked(id) {
            return Outcome::Revoked("revoked");
        }
        if req.expires.is_some_and(|e| e <= Utc::now()) {
            return Outcome::Revoked("expired");
        }
        let started = Instant::now();
        let time_start = broker::now_f64();
        self.state
            .set_phase(id, Phase::Active, |i| i.time_start = Some(time_start));
        self.state
            .held
            .lock()
            .expect("held")
            .insert(tag.to_string(), Phase::Active);
        if !(task.options.acks_late || self.config.acks_late) {
            self.ack(tag, slot).await;
            self.state
                .set_phase(id, Phase::Active, |i| i.acknowledged = true);
        }
        self.events.task("task-started", id, json!({})).await;
        if (self.config.track_started || task.options.track_started)
            && !self.ignores_result(task, req)
        {
            let meta = json!({"pid": std::process::id(), "hostname": self.config.node_name});
            let mut m = ResultMeta::new(id, State::Started, meta);
            m.parent_id = req.parent_id.clone();
            self.write_meta(&m).await;
        }

        // Limits: message header (hard, soft) beats control overrides beat task options.
        let over = self
            .state
            .time_limits
            .lock()
            .expect("time limits")
            .get(&task.name)
            .cloned();
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
        // Terminated by remote control: REVOKED "terminated", whatever the body returned while stopping.
        let result = result.filter(|_| stop.reason() != Some(StopReason::Terminated));
        let runtime = started.elapsed().as_secs_f64();
        self.state.count_task(&req.name);
        match result {
            None => Outcome::Revoked("terminated"),
            Some(Ok(v)) => {
                self.events
                    .task(
                        "task-succeeded",
                        id,
                        json!({"result": truncate(saferepr(&v), REPR_MAXLEN), "runtime": runtime}),
                    )
                    .await;
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
            Some(Err(TaskError::Reject { requeue, reason })) => Outcome::Reject { requeue, reason },
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
        match outcome {
            Outcome::Success(value) => {
                if !ignore {
                    self.store(req, msg, State::Success, value.clone(), None)
                        .await;
                }
                crate::chord::part_return(self, req, &State::Success, &value).await;
                self.apply_callbacks(req, &value).await;
            }
            Outcome::Failure(exc, traceback) => {
                let tb = traceback.unwrap_or_else(|| rust_traceback(&req.name, &exc));
                tracing::warn!(task = %req.name, id = %id, error = %exc.repr(), "task failed");
                self.store(req, msg, State::Failure, exc.to_value(), Some(tb.clone()))
                    .await;
                crate::chord::part_return(self, req, &State::Failure, &exc.to_value()).await;
                self.events
                    .task(
                        "task-failed",
                        id,
                        json!({"exception": exc.repr(), "traceback": tb}),
                    )
                    .await;
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
                    self.store(req, msg, State::Failure, exc.to_value(), Some(tb.clone()))
                        .await;
                    self.events
                        .task(
                            "task-failed",
                            id,
                            json!({"exception": exc.repr(), "traceback": tb}),
                        )
                        .await;
                    self.apply_errbacks(req).await;
                } else if let Err(e) = self.republish_retry(req, msg, countdown).await {
                    tracing::error!(id = %id, error = %e, "could not republish retry; requeueing the message");
                    self.requeue(tag, false, &mut slot).await;
                    return;
                } else {
                    let tb = rust_traceback(&req.name, &exc);
                    let mut meta = ResultMeta::new(id, State::Retry, exc.to_value());
                    meta.traceback = Some(tb.clone());
                    meta.children = json!([[[id, null], null]]);
                    meta.parent_id = req.parent_id.clone();
                    meta.extended = self.extended(req, msg);
                    if !ignore {
                        self.write_meta(&meta).await;
                    }
                    self.events.task("task-retried", id, json!({"exception": format!("Retry in {countdown}s: {}", exc.repr()), "traceback": tb})).await;
                }
            }
            Outcome::Reject { requeue, reason } => {
                tracing::info!(id = %id, requeue, reason, "task rejected");
                if reason != "shutdown" && reason != "closing" {
                    self.events
                        .task("task-rejected", id, json!({"requeue": requeue}))
                        .await;
                }
                if requeue {
                    self.requeue(tag, reason != "shutdown", &mut slot).await;
                } else {
                    self.ack(tag, &mut slot).await;
                }
                return;
            }
            Outcome::Revoked(reason) => {
                let exc = ExceptionInfo::revoked(reason);
                // Celery stores REVOKED with `children: null`.
                let mut meta = ResultMeta::new(id, State::Revoked, exc.to_value());
                meta.children = Value::Null;
                meta.group_id = req.group.clone();
                meta.parent_id = req.parent_id.clone();
                meta.extended = self.extended(req, msg);
                self.write_meta(&meta).await;
                let (terminated, signum, expired) = match reason {
                    "terminated" => (true, json!(15), false),
                    "expired" => (false, Value::Null, true),
                    _ => (false, Value::Null, false),
                };
                self.events
                    .task(
                        "task-revoked",
                        id,
                        json!({"terminated": terminated, "signum": signum, "expired": expired}),
                    )
                    .await;
            }
        }
        self.ack(tag, &mut slot).await;
    }

    async fn requeue(&self, tag: &str, back: bool, slot: &mut Slot) {
        if slot.settled {
            tracing::warn!(
                tag,
                "message was already acknowledged; it cannot be requeued"
            );
            return;
        }
        slot.settled = true;
        if let Err(e) = self.broker.requeue(tag, !back).await {
            tracing::error!(tag, error = %e, "requeue failed; the message stays unacked and will be restored after the visibility timeout");
        }
        self.state.held.lock().expect("held").remove(tag);
        slot.release();
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
    ) {
        let mut meta = ResultMeta::new(&req.id, status, result);
        meta.traceback = traceback;
        meta.group_id = req.group.clone();
        meta.parent_id = req.parent_id.clone();
        meta.extended = self.extended(req, msg);
        self.write_meta(&meta).await;
    }

    /// Write a result meta, retrying while the backend is unreachable (the result must not be lost).
    async fn write_meta(&self, meta: &ResultMeta) {
        let bytes = meta.encode();
        let mut delay = Duration::from_millis(50);
        for attempt in 0.. {
            match self
                .backend
                .store_result(&meta.task_id, &bytes, self.config.result_expires)
                .await
            {
                Ok(_) => return,
                Err(e) if e.is_transient() && attempt < 60 && self.stopping() != Shutdown::Cold => {
                    self.backend.note_connection_error(&e);
                    tracing::warn!(id = %meta.task_id, error = %e, "result backend unavailable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(id = %meta.task_id, error = %e, "could not store result");
                    return;
                }
            }
        }
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
            tokio::spawn(async move { me.write_meta(&m).await });
        })
    }

    async fn republish_retry(
        &self,
        req: &TaskMessage,
        msg: &Message,
        countdown: f64,
    ) -> broker::Result<()> {
        let mut next = request_from(req);
        next.retries = req.retries + 1;
        next.parent_id = Some(req.id.clone());
        next.eta = Some(Utc::now() + chrono::Duration::milliseconds((countdown * 1000.0) as i64));
        // Celery republishes to the routing key on the anonymous exchange, or to the original exchange; we always
        // publish on the anonymous exchange, where a direct exchange's routing key names the queue.
        next.queue = msg.routing_key.clone();
        next.priority = msg.priority;
        let mut env = next.envelope();
        env.leading_properties
            .insert("origin".into(), json!(self.config.node_name));
        self.broker
            .publish(&next.queue, next.priority, &env.encode())
            .await
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
        let env = next.envelope();
        if let Err(e) = self
            .broker
            .publish(&next.queue, next.priority, &env.encode())
            .await
        {
            tracing::error!(id = %req.id, next = %next.name, error = %e, "could not apply callback");
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

fn tag_of(raw: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    v.get("properties")?
        .get("delivery_tag")?
        .as_str()
        .map(str::to_string)
}

/// Connect, retrying with backoff while Redis is down, until connected or shut down.
async fn connect_with_retry(
    url: &str,
    shutdown: &watch::Receiver<Shutdown>,
) -> anyhow::Result<Broker> {
    let mut delay = Duration::from_millis(200);
    loop {
        match Broker::connect(url).await {
            Ok(b) => return Ok(b),
            Err(e) if e.is_transient() && *shutdown.borrow() == Shutdown::Running => {
                tracing::warn!(url = %broker::redact(url), error = %e, retry_in = ?delay, "cannot reach Redis; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
