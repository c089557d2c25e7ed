//! The worker's remote-control mailbox (kombu pidbox + celery/worker/control.py), so `celery inspect`,
//! `celery control`, Flower and `celeriac` see and steer this worker like a Python one.
//!
//! Wire: bind `<node>.celery.pidbox` on `celery.pidbox` (kombu 5.7 deadline entry, refreshed), `PSUBSCRIBE
//! /{db}.celery.pidbox`, filter by `destination` / `pattern` + `matcher` (glob, pcre), run the handler, and reply
//! when the request has a ticket: `SMEMBERS _kombu.binding.reply.celery.pidbox`, `LPUSH` to each queue bound with
//! the request's routing key, headers `{ticket, clock}`, body `{node: value}`. Errors reply `{"error": repr}`;
//! unreadable messages are logged and dropped; `shutdown` asks for a warm shutdown and sends no reply.

use broker::fanout::FanoutMessage;
use celery_proto::Message;
use celery_proto::control::{ControlRequest, reply_envelope};
use celery_proto::keys::{self, PIDBOX_EXCHANGE, REPLY_EXCHANGE};
use celery_proto::pyrepr::repr;
use celery_proto::time::isoformat;
use celery_proto::{ExceptionInfo, ResultMeta, State};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::state::Phase;
use crate::task::StopReason;
use crate::worker::Worker;

/// kombu 5.7 binds mailboxes with a one-hour deadline; we refresh it well before.
const MAILBOX_TTL_MS: u64 = 3_600_000;
const MAILBOX_REFRESH: Duration = Duration::from_secs(600);

/// What a handler gives back: `Some(value)` is replied (when a reply is wanted), `None` means no reply.
type Reply = Option<Value>;

/// The mailbox of one worker.
#[derive(Clone)]
pub struct Pidbox {
    worker: Worker,
    run_slots: Arc<Semaphore>,
    concurrency: Arc<AtomicUsize>,
}

fn ok(text: impl Into<String>) -> Value {
    json!({ "ok": text.into() })
}

fn err(text: impl Into<String>) -> Value {
    json!({ "error": text.into() })
}

/// `repr(TypeError(msg))`.
fn type_error(msg: &str) -> Value {
    err(format!("TypeError({})", repr(&json!(msg))))
}

/// Python's `re.match(pattern, node)`: anchored at the start only. An invalid pattern matches nothing.
pub fn pcre_match(pattern: &str, node: &str) -> bool {
    match regex::Regex::new(&format!("^(?:{pattern})")) {
        Ok(re) => re.is_match(node),
        Err(e) => {
            tracing::warn!(pattern, error = %e, "invalid pcre pattern in control request");
            false
        }
    }
}

/// Python's `str(value)` for taskinfoitems (`True`, `None`, `30.0`, bare strings).
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => repr(other),
    }
}

impl Pidbox {
    pub fn new(worker: Worker, run_slots: Arc<Semaphore>) -> Pidbox {
        let concurrency = Arc::new(AtomicUsize::new(worker.config.concurrency.max(1)));
        Pidbox {
            worker,
            run_slots,
            concurrency,
        }
    }

    fn node(&self) -> &str {
        &self.worker.config.node_name
    }

    /// Bind the mailbox queue like kombu 5.7 (informational: fanout PUBLISH does not read bindings).
    pub async fn bind(&self) {
        if let Err(e) = self
            .worker
            .broker
            .bind_expiring(
                PIDBOX_EXCHANGE,
                "",
                &keys::pidbox_queue(self.node()),
                MAILBOX_TTL_MS,
            )
            .await
        {
            tracing::warn!(error = %e, "could not bind the pidbox mailbox");
        }
    }

    /// Remove the mailbox binding (warm shutdown, as Celery does).
    pub async fn unbind(&self) {
        if let Err(e) = self
            .worker
            .broker
            .unbind_and_delete(PIDBOX_EXCHANGE, "", &keys::pidbox_queue(self.node()))
            .await
        {
            tracing::warn!(error = %e, "could not remove the pidbox mailbox binding");
        }
    }

    /// Subscribe and serve requests until the task is aborted; reconnects when the subscription drops.
    /// `subscribed` is notified each time the subscription is (re)established.
    pub async fn serve(self, subscribed: Arc<tokio::sync::Notify>) {
        let pattern = keys::fanout_channel(self.worker.broker.db(), PIDBOX_EXCHANGE, "");
        let mut backoff = Duration::from_millis(200);
        loop {
            self.bind().await;
            let mut stream = match self
                .worker
                .broker
                .psubscribe(std::slice::from_ref(&pattern))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    self.worker.broker.note_connection_error(&e);
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot subscribe to the pidbox; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            subscribed.notify_one();
            let mut refresh = tokio::time::interval(MAILBOX_REFRESH);
            refresh.tick().await;
            loop {
                tokio::select! {
                    m = stream.next() => match m {
                        Some(m) => self.on_message(m).await,
                        None => break,
                    },
                    _ = refresh.tick() => self.bind().await,
                }
            }
            tracing::warn!("pidbox subscription lost; subscribing again");
            tokio::time::sleep(backoff).await;
        }
    }

    async fn on_message(&self, m: FanoutMessage) {
        let msg = match Message::decode(&m.payload, false) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(channel = %m.channel, bytes = m.payload.len(), error = %e, "dropping unreadable pidbox message");
                return;
            }
        };
        let req = match ControlRequest::from_message(&msg) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "dropping pidbox message that is not a control request");
                return;
            }
        };
        self.handle(req).await;
    }

    /// Run one request and reply if it asked for a reply.
    pub async fn handle(&self, req: ControlRequest) {
        let state = &self.worker.state;
        if let Some(c) = req.clock {
            state.clock.adjust(c);
        }
        if !req.addresses(self.node(), pcre_match) {
            return;
        }
        tracing::debug!(method = %req.method, "control request");
        let reply = self.dispatch(&req.method, &req.arguments).await;
        if let (Some(value), Some(ticket), Some(oid)) = (reply, &req.ticket, &req.reply_to) {
            self.reply(value, ticket, oid).await;
        }
    }

    async fn reply(&self, value: Value, ticket: &str, oid: &str) {
        let broker = &self.worker.broker;
        let members = match broker.bindings(REPLY_EXCHANGE).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "could not read reply bindings; reply dropped");
                return;
            }
        };
        let queues: BTreeSet<String> = members
            .iter()
            .filter_map(|m| keys::parse_binding_member(m))
            .filter(|(rk, _, _)| *rk == oid)
            .map(|(_, _, q)| q.to_string())
            .collect();
        if queues.is_empty() {
            tracing::debug!(
                oid,
                "no reply queue bound for this request (client gone); reply dropped"
            );
            return;
        }
        let env = reply_envelope(
            self.node(),
            value,
            ticket,
            oid,
            self.worker.state.clock.forward(),
        );
        let bytes = env.encode();
        for q in queues {
            if let Err(e) = broker.lpush(&keys::queue_key(&q, 0), &bytes).await {
                tracing::warn!(queue = %q, error = %e, "could not push control reply");
            }
        }
    }

    /// Run a command by name (Celery's `Panel.data[method]`). Unknown names answer `KeyError`.
    pub async fn dispatch(&self, method: &str, args: &Map<String, Value>) -> Reply {
        let w = &self.worker;
        let state = &w.state;
        let safe = args.get("safe").and_then(Value::as_bool).unwrap_or(false);
        Some(match method {
            "ping" => ok("pong"),
            "stats" => self.stats(),
            "active" | "dump_active" => json!(state.requests_in(Phase::Active, safe)),
            "reserved" | "dump_reserved" => json!(state.requests_in(Phase::Reserved, safe)),
            "scheduled" | "dump_schedule" => self.scheduled(safe),
            "revoked" | "dump_revoked" => json!(state.revoked.lock().expect("revoked").ids()),
            "registered" | "dump_tasks" => self.registered(args),
            "active_queues" => self.active_queues(),
            "query_task" => self.query_task(args),
            "conf" | "dump_conf" => self.conf(),
            "report" => ok(self.report()),
            "clock" => json!({"clock": state.clock.value()}),
            "hello" => self.hello(args),
            "revoke" => self.revoke(args, None).await,
            "terminate" => self.revoke(args, Some(true)).await,
            "revoke_by_stamped_headers" => self.revoke_by_stamped_headers(args).await,
            "rate_limit" => self.rate_limit(args),
            "time_limit" => self.time_limit(args),
            "shutdown" => {
                tracing::warn!("shutdown requested by remote control");
                state.request_shutdown();
                return None;
            }
            "pool_grow" => self.pool_resize(args, true),
            "pool_shrink" => self.pool_resize(args, false),
            "autoscale" => err("ValueError('Autoscale not enabled')"),
            "pool_restart" => err("ValueError('Pool restarts not enabled')"),
            "add_consumer" => self.add_consumer(args).await,
            "cancel_consumer" => self.cancel_consumer(args),
            "enable_events" => {
                if state.task_events.swap(true, Ordering::Relaxed) {
                    ok("task events already enabled")
                } else {
                    tracing::info!("task events enabled by remote control");
                    ok("task events enabled")
                }
            }
            "disable_events" => {
                if state.task_events.swap(false, Ordering::Relaxed) {
                    tracing::info!("task events disabled by remote control");
                    ok("task events disabled")
                } else {
                    ok("task events already disabled")
                }
            }
            "heartbeat" => {
                w.events.heartbeat_wakeup().await;
                Value::Null
            }
            "election" => {
                tracing::info!("ignoring election request (no gossip in celeriac)");
                return None;
            }
            other => {
                tracing::warn!(method = other, "unknown control command");
                err(format!("KeyError({})", repr(&json!(other))))
            }
        })
    }

    fn stats(&self) -> Value {
        let w = &self.worker;
        let pid = std::process::id();
        let totals: std::collections::BTreeMap<String, u64> = w
            .state
            .totals
            .lock()
            .expect("totals")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let scheduled = w
            .state
            .requests
            .lock()
            .expect("requests")
            .values()
            .filter(|t| t.phase == Phase::Scheduled)
            .count();
        json!({
            "total": totals,
            "pid": pid,
            "clock": w.state.clock.value().to_string(),
            "uptime": w.state.started.elapsed().as_secs(),
            "pool": {
                "implementation": "celeriac.worker:TokioPool",
                "max-concurrency": self.concurrency.load(Ordering::Relaxed),
                "processes": [pid],
                "max-tasks-per-child": null,
                "put-guarded-by-semaphore": false,
                "timeouts": [],
            },
            "broker": broker_info(&w.config.broker_url),
            "prefetch_count": w.config.prefetch_count() + scheduled,
            "rusage": rusage(),
        })
    }

    fn scheduled(&self, safe: bool) -> Value {
        let w = &self.worker;
        let reqs = w.state.requests.lock().expect("requests");
        let list: Vec<Value> = reqs
            .values()
            .filter(|t| t.phase == Phase::Scheduled)
            .map(|t| {
                json!({
                    "eta": t.info.eta.map(isoformat),
                    "priority": t.info.priority,
                    "request": t.info.to_value(&w.state.hostname, safe),
                })
            })
            .collect();
        json!(list)
    }

    fn registered(&self, args: &Map<String, Value>) -> Value {
        let items: Vec<String> = match args.get("taskinfoitems") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let builtins = args
            .get("builtins")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut out = Vec::new();
        for name in self.worker.registry.names() {
            if name.starts_with("celery.") && !builtins {
                continue;
            }
            let Some(task) = self.worker.registry.get(&name) else {
                continue;
            };
            if items.is_empty() {
                out.push(name);
                continue;
            }
            let o = &task.options;
            let fields: Vec<String> = items
                .iter()
                .filter_map(|item| {
                    let v = match item.as_str() {
                        "acks_late" => json!(o.acks_late),
                        "ignore_result" => json!(o.ignore_result),
                        "track_started" => json!(o.track_started),
                        "rate_limit" => json!(o.rate_limit),
                        "time_limit" => json!(o.time_limit),
                        "soft_time_limit" => json!(o.soft_time_limit),
                        "max_retries" => json!(o.max_retries),
                        "default_retry_delay" => json!(o.default_retry_delay),
                        _ => Value::Null,
                    };
                    (!v.is_null()).then(|| format!("{item}={}", py_str(&v)))
                })
                .collect();
            if fields.is_empty() {
                out.push(name);
            } else {
                out.push(format!("{name} [{}]", fields.join(" ")));
            }
        }
        json!(out)
    }

    fn active_queues(&self) -> Value {
        let queues = self.worker.state.queues.lock().expect("queues").clone();
        json!(queues.iter().map(|q| queue_dict(q)).collect::<Vec<_>>())
    }

    fn query_task(&self, args: &Map<String, Value>) -> Value {
        let ids: Vec<String> = match args.get("ids").or_else(|| args.get("id")) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            None | Some(Value::Null) => Vec::new(),
            Some(_) => {
                return type_error("query_task: ids must be a task id or a list of task ids");
            }
        };
        let w = &self.worker;
        let reqs = w.state.requests.lock().expect("requests");
        let mut out = Map::new();
        for id in ids {
            if let Some(t) = reqs.get(&id) {
                let phase = match t.phase {
                    Phase::Active => "active",
                    Phase::Reserved => "reserved",
                    Phase::Scheduled => "scheduled",
                };
                out.insert(
                    id,
                    json!([phase, t.info.to_value(&w.state.hostname, false)]),
                );
            }
        }
        Value::Object(out)
    }

    fn conf(&self) -> Value {
        let c = &self.worker.config;
        json!({
            "broker_url": python_redact(&c.broker_url),
            "result_backend": python_redact(&c.result_backend),
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
            "enable_utc": true,
            "timezone": "UTC",
            "result_extended": c.result_extended,
            "task_track_started": c.track_started,
            "result_expires": c.result_expires,
            "worker_concurrency": self.concurrency.load(Ordering::Relaxed),
            "worker_prefetch_multiplier": c.prefetch_multiplier,
            "worker_send_task_events": self.worker.state.task_events.load(Ordering::Relaxed),
            "broker_transport_options": {"visibility_timeout": c.visibility_timeout},
            "include": [],
        })
    }

    fn report(&self) -> String {
        let c = &self.worker.config;
        format!(
            "\nsoftware -> celeriac:{} (rs-celeriac) rust worker\n            platform -> system:{} arch:{}\n            loader -> celeriac (Rust task registry)\n            settings -> transport:redis results:{}\n\nbroker_url: {}\nresult_backend: {}\nnode: {}\nqueues: {:?}\nconcurrency: {}\ntasks: {}\n",
            env!("CARGO_PKG_VERSION"),
            crate::events::sw_sys(),
            std::env::consts::ARCH,
            python_redact(&c.result_backend),
            python_redact(&c.broker_url),
            python_redact(&c.result_backend),
            c.node_name,
            self.worker.state.queues.lock().expect("queues"),
            self.concurrency.load(Ordering::Relaxed),
            self.worker.registry.names().join(", "),
        )
    }

    /// Mingle's `hello`: adopt the peer's revoked ids and answer with ours and our clock.
    fn hello(&self, args: &Map<String, Value>) -> Value {
        let from = args.get("from_node").and_then(Value::as_str).unwrap_or("");
        if from == self.node() {
            return Value::Null;
        }
        if let Some(revoked) = args.get("revoked") {
            let n = crate::mingle::merge_revoked(&self.worker.state, revoked);
            if n > 0 {
                tracing::info!(
                    from,
                    adopted = n,
                    "mingle: revoked ids from a starting peer"
                );
            }
        }
        let revoked = self
            .worker
            .state
            .revoked
            .lock()
            .expect("revoked")
            .as_mingle();
        json!({"revoked": revoked, "clock": self.worker.state.clock.forward()})
    }

    /// `revoke` / `terminate`: flag ids as revoked, stop reserved/scheduled ones, terminate active ones when asked,
    /// and store REVOKED for ids this worker does not hold (unless already SUCCESS).
    async fn revoke(&self, args: &Map<String, Value>, force_terminate: Option<bool>) -> Value {
        let ids: Vec<String> = match args.get("task_id") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => return type_error("revoke: task_id must be a task id or a list of task ids"),
        };
        let terminate = force_terminate
            .or_else(|| args.get("terminate").and_then(Value::as_bool))
            .unwrap_or(false);
        let state = &self.worker.state;
        let mut terminated = Vec::new();
        let mut untracked = Vec::new();
        for id in &ids {
            state.revoke(id);
            let tracked = {
                let reqs = state.requests.lock().expect("requests");
                reqs.get(id).map(|t| (t.phase, t.stop.clone()))
            };
            match tracked {
                Some((Phase::Active, stop)) => {
                    if terminate {
                        stop.stop(StopReason::Terminated);
                        terminated.push(id.clone());
                    }
                }
                Some((_, stop)) => stop.stop(StopReason::Terminated),
                None => untracked.push(id.clone()),
            }
        }
        for id in &untracked {
            let meta = {
                let mut m = ResultMeta::new(
                    id,
                    State::Revoked,
                    ExceptionInfo::revoked("revoked").to_value(),
                );
                m.children = Value::Null;
                m
            };
            if let Err(e) = self
                .worker
                .backend
                .store_result(id, &meta.encode(), self.worker.config.result_expires)
                .await
            {
                tracing::warn!(id = %id, error = %e, "could not store REVOKED state");
            }
        }
        tracing::info!(ids = ?ids, terminate, "tasks flagged as revoked");
        if terminate {
            if terminated.is_empty() {
                ok("terminate: tasks unknown")
            } else {
                ok(format!("terminate: {}", terminated.join(", ")))
            }
        } else {
            let set: Vec<String> = ids.iter().map(|i| repr(&json!(i))).collect();
            ok(format!("tasks {{{}}} flagged as revoked", set.join(", ")))
        }
    }

    async fn revoke_by_stamped_headers(&self, args: &Map<String, Value>) -> Value {
        let Some(Value::Object(headers)) = args.get("headers") else {
            return type_error("revoke_by_stamped_headers: headers must be an object");
        };
        let terminate = args
            .get("terminate")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let wanted = |stamps: &Map<String, Value>| {
            headers.iter().any(|(k, v)| {
                let Some(have) = stamps.get(k) else {
                    return false;
                };
                let values: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                values.iter().any(|want| match have {
                    Value::Array(h) => h.contains(want),
                    single => single == *want,
                })
            })
        };
        let state = &self.worker.state;
        let hits: Vec<(String, Phase, Arc<crate::task::StopSignal>)> = state
            .requests
            .lock()
            .expect("requests")
            .values()
            .filter(|t| wanted(&t.info.stamps))
            .map(|t| (t.info.id.clone(), t.phase, t.stop.clone()))
            .collect();
        let mut terminated = 0;
        for (id, phase, stop) in &hits {
            state.revoke(id);
            if *phase != Phase::Active {
                stop.stop(StopReason::Terminated);
            } else if terminate {
                stop.stop(StopReason::Terminated);
                terminated += 1;
            }
        }
        let shown = repr(&Value::Object(headers.clone()));
        if !terminate {
            ok(format!(
                "headers {shown} flagged as revoked, but not terminated"
            ))
        } else if terminated > 0 {
            ok(format!("headers {shown} revoked"))
        } else {
            ok(format!("headers {shown} were not terminated"))
        }
    }

    fn rate_limit(&self, args: &Map<String, Value>) -> Value {
        let Some(name) = args.get("task_name").and_then(Value::as_str) else {
            return type_error("rate_limit() missing required argument: 'task_name'");
        };
        if self.worker.registry.get(name).is_none() {
            tracing::error!(task = name, "rate limit attempt for unknown task");
            return err("unknown task");
        }
        let limit = match args.get("rate_limit") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => return err(format!("Invalid rate limit string: {}", repr(other))),
        };
        let parsed = match limit.as_deref().map(crate::ratelimit::parse_rate) {
            None => None,
            Some(Ok(p)) => p,
            Some(Err(e)) => return err(e),
        };
        let mut limits = self.worker.state.rate_limits.lock().expect("rate limits");
        match parsed {
            None => {
                limits.insert(name.to_string(), None);
                tracing::info!(task = name, "rate limits disabled");
                ok("rate limit disabled successfully")
            }
            Some(_) => {
                limits.insert(name.to_string(), limit.clone());
                tracing::info!(task = name, limit = ?limit, "new rate limit set");
                ok("new rate limit set successfully")
            }
        }
    }

    fn time_limit(&self, args: &Map<String, Value>) -> Value {
        let Some(name) = args.get("task_name").and_then(Value::as_str) else {
            return type_error("time_limit() missing required argument: 'task_name'");
        };
        if self.worker.registry.get(name).is_none() {
            tracing::error!(task = name, "change time limit attempt for unknown task");
            return err("unknown task");
        }
        let num = |k: &str| -> Result<Option<f64>, Value> {
            match args.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64()),
                Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| {
                    err(format!(
                        "ValueError(\"could not convert string to float: {}\")",
                        repr(&json!(s))
                    ))
                }),
                Some(other) => Err(type_error(&format!(
                    "time_limit: {k} must be a number, got {other}"
                ))),
            }
        };
        let (soft, hard) = match (num("soft"), num("hard")) {
            (Ok(s), Ok(h)) => (s, h),
            (Err(e), _) | (_, Err(e)) => return e,
        };
        self.worker
            .state
            .time_limits
            .lock()
            .expect("time limits")
            .insert(name.to_string(), (soft, hard));
        tracing::info!(task = name, ?soft, ?hard, "new time limits");
        ok("time limits set successfully")
    }

    fn pool_resize(&self, args: &Map<String, Value>, grow: bool) -> Value {
        let n = match args.get("n") {
            None | Some(Value::Null) => 1,
            Some(v) => match v.as_u64() {
                Some(n) => n as usize,
                None => {
                    return type_error("pool_grow/pool_shrink: n must be a non-negative integer");
                }
            },
        };
        if grow {
            self.run_slots.add_permits(n);
            self.concurrency.fetch_add(n, Ordering::Relaxed);
            tracing::info!(n, "pool grown");
            ok("pool will grow")
        } else {
            let cur = self.concurrency.load(Ordering::Relaxed);
            let n = n.min(cur.saturating_sub(1));
            if n > 0 {
                self.concurrency.fetch_sub(n, Ordering::Relaxed);
                let slots = self.run_slots.clone();
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned(n as u32).await {
                        p.forget();
                    }
                });
            }
            tracing::info!(n, "pool shrunk");
            ok("pool will shrink")
        }
    }

    async fn add_consumer(&self, args: &Map<String, Value>) -> Value {
        let Some(queue) = args
            .get("queue")
            .and_then(Value::as_str)
            .filter(|q| !q.is_empty())
        else {
            return type_error("add_consumer() missing required argument: 'queue'");
        };
        if self
            .worker
            .state
            .queues
            .lock()
            .expect("queues")
            .iter()
            .any(|q| q == queue)
        {
            return ok(format!("already consuming from {queue}"));
        }
        if let Err(e) = self.worker.broker.declare_queue(queue).await {
            return err(format!("could not declare queue {queue}: {e}"));
        }
        self.worker
            .state
            .queues
            .lock()
            .expect("queues")
            .push(queue.to_string());
        tracing::info!(queue, "started consuming from queue");
        ok(format!("add consumer {queue}"))
    }

    fn cancel_consumer(&self, args: &Map<String, Value>) -> Value {
        let Some(queue) = args.get("queue").and_then(Value::as_str) else {
            return type_error("cancel_consumer() missing required argument: 'queue'");
        };
        self.worker
            .state
            .queues
            .lock()
            .expect("queues")
            .retain(|q| q != queue);
        tracing::info!(queue, "stopped consuming from queue");
        ok(format!("no longer consuming from {queue}"))
    }
}

/// kombu's `Queue.as_dict(recurse=True)` for a plain direct queue.
pub fn queue_dict(q: &str) -> Value {
    json!({
        "name": q,
        "exchange": {"name": q, "type": "direct", "arguments": null, "durable": true, "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false},
        "routing_key": q, "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null,
        "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false, "alias": null, "bindings": [],
        "no_declare": null, "expires": null, "message_ttl": null, "max_length": null, "max_length_bytes": null,
        "max_priority": null,
    })
}

/// Celery's `maybe_sanitize_url`: the password becomes `********`.
pub fn python_redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let auth = &url[s + 3..at];
            let user = auth.split_once(':').map(|(u, _)| u).unwrap_or("");
            format!("{}{}:********{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// kombu's `Connection.info()` for a Redis URL.
pub fn broker_info(url: &str) -> Value {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let userid = auth
        .and_then(|a| a.split_once(':').map(|(u, _)| u).or(Some(a)))
        .filter(|u| !u.is_empty());
    let (hostport, db) = hostpart.split_once('/').unwrap_or((hostpart, "0"));
    let hostport = hostport.split(',').next().unwrap_or("");
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().unwrap_or(6379)),
        None => (
            hostport,
            if scheme.contains("sentinel") {
                26379
            } else {
                6379
            },
        ),
    };
    let db = db.split('/').next_back().unwrap_or("0");
    json!({
        "hostname": host, "userid": userid, "virtual_host": if db.is_empty() { "0" } else { db },
        "port": port, "insist": false, "ssl": scheme == "rediss", "transport": if scheme.contains("sentinel") { "sentinel" } else { "redis" },
        "connect_timeout": 4, "transport_options": {}, "login_method": null, "uri_prefix": null,
        "heartbeat": 120.0, "failover_strategy": "round-robin", "alternates": [], "credential_provider": null,
    })
}

/// `resource.getrusage(RUSAGE_SELF)` from /proc (Linux); `"N/A"` elsewhere, as Celery allows.
pub fn rusage() -> Value {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return json!("N/A");
    };
    // Fields after the parenthesised command name: state is field 3.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let status_kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = 100.0;
    json!({
        "utime": field(14) as f64 / ticks, "stime": field(15) as f64 / ticks,
        "maxrss": status_kb("VmHWM:"), "ixrss": 0, "idrss": 0, "isrss": 0,
        "minflt": field(10), "majflt": field(12), "nswap": 0, "inblock": 0, "oublock": 0,
        "msgsnd": 0, "msgrcv": 0, "nsignals": 0,
        "nvcsw": status_kb("voluntary_ctxt_switches:"), "nivcsw": status_kb("nonvoluntary_ctxt_switches:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcre_is_anchored_at_the_start_only() {
        assert!(pcre_match("w1", "w1@vm"));
        assert!(pcre_match("w.@", "w1@vm"));
        assert!(!pcre_match("vm", "w1@vm"));
        assert!(!pcre_match("(", "w1@vm"), "invalid patterns match nothing");
    }

    #[test]
    fn broker_info_and_redaction_like_kombu() {
        let i = broker_info("redis://:secret@127.0.0.1:6390/3");
        assert_eq!(i["hostname"], "127.0.0.1");
        assert_eq!(i["port"], 6390);
        assert_eq!(i["virtual_host"], "3");
        assert_eq!(i["userid"], Value::Null);
        assert_eq!(
            python_redact("redis://:secret@127.0.0.1:6390/0"),
            "redis://:********@127.0.0.1:6390/0"
        );
        assert_eq!(broker_info("redis://localhost")["port"], 6379);
    }

    #[test]
    fn queue_dict_has_the_keys_flower_reads() {
        let fixture = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/celery-wire/c-remote-control/c03-inspect-active_queues.reply.raw"
        ))
        .expect("fixture");
        let msg = Message::decode(&fixture, false).expect("envelope");
        let body = msg.json_body().expect("json");
        let want = &body["w1@vm"][0];
        let got = queue_dict("longtail");
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&got), keys(want));
        assert_eq!(keys(&got["exchange"]), keys(&want["exchange"]));
        assert!(rusage().is_object());
    }
}
