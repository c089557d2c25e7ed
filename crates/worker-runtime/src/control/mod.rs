//! The worker's remote-control mailbox (kombu pidbox + celery/worker/control.py), so `celery inspect`,
//! `celery control`, Flower and `celeriac` see and steer this worker like a Python one.
//!
//! Wire: bind `<node>.celery.pidbox` on `celery.pidbox` (kombu 5.7 deadline entry, refreshed), `PSUBSCRIBE
//! /{db}.celery.pidbox`, filter by `destination` / `pattern` + `matcher` (glob, pcre), run the handler, and reply
//! when the request has a ticket: `SMEMBERS _kombu.binding.reply.celery.pidbox`, `LPUSH` to each queue bound with
//! the request's routing key, headers `{ticket, clock}`, body `{node: value}`. Errors reply `{"error": repr}`;
//! unreadable messages are logged and dropped; `shutdown` asks for a warm shutdown and sends no reply.
//!
//! This module owns the mailbox (bind, serve, handle, reply) and [`Pidbox::dispatch`]: a request is parsed into a
//! [`ControlCommand`] (a bad one is answered with its [`CommandError`] text) and run by the handler of its family:
//! `inspect` (ping, stats, active, ..., hello), `revoke`, `limits` (rate and time limits), `pool`,
//! `consumers` (add/cancel consumer) and `events` (event switches, heartbeat), one file each.

use celery_proto::command::{CommandError, ControlCommand};
use celery_proto::control::{ControlRequest, reply_envelope};
use celery_proto::keys::{self, PIDBOX_EXCHANGE, REPLY_EXCHANGE};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use transport::{Backoff, Binding, Incoming, SharedBackend, SharedTransport};

use crate::config::RuntimeConfig;
use crate::events::EventSink;
use crate::executor::Pool;
use crate::state::{Phase, WorkerState};
use crate::task::TaskRegistry;

mod consumers;
mod events;
mod inspect;
mod limits;
mod pool;
mod revoke;

pub use inspect::{broker_info, queue_dict, rusage};

/// kombu 5.7 binds mailboxes with a one-hour deadline; we refresh it well before.
const MAILBOX_TTL_MS: u64 = 3_600_000;
const MAILBOX_REFRESH: Duration = Duration::from_secs(600);

/// What a handler gives back: `Some(value)` is replied (when a reply is wanted), `None` means no reply.
type Reply = Option<Value>;

/// What remote control reads and steers: the worker's parts, each shared with the executor.
#[derive(Clone)]
pub struct ControlContext {
    pub config: Arc<RuntimeConfig>,
    pub registry: Arc<TaskRegistry>,
    pub state: Arc<WorkerState>,
    pub transport: SharedTransport,
    pub backend: SharedBackend,
    pub events: EventSink,
    pub pool: Arc<Pool>,
}

/// The mailbox of one worker.
#[derive(Clone)]
pub struct Pidbox {
    ctx: ControlContext,
}

fn ok(text: impl Into<String>) -> Value {
    json!({ "ok": text.into() })
}

fn err(text: impl Into<String>) -> Value {
    json!({ "error": text.into() })
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

impl Pidbox {
    pub fn new(ctx: ControlContext) -> Pidbox {
        Pidbox { ctx }
    }

    fn node(&self) -> &str {
        &self.ctx.config.node_name
    }

    /// The mailbox queue bound to the pidbox exchange, with kombu 5.7's one-hour expiry.
    fn mailbox(&self) -> Binding {
        Binding::new(
            PIDBOX_EXCHANGE,
            "",
            &keys::pidbox_queue(self.node()),
            Duration::from_millis(MAILBOX_TTL_MS),
        )
    }

    /// Refresh the mailbox binding (kombu 5.7's deadline entry).
    pub async fn bind(&self) {
        if let Err(e) = self.ctx.transport.bind(&self.mailbox()).await {
            tracing::warn!(error = %e, "could not bind the pidbox mailbox");
        }
    }

    /// Remove the mailbox binding (warm shutdown, as Celery does).
    pub async fn unbind(&self) {
        if let Err(e) = self.ctx.transport.unbind(&self.mailbox()).await {
            tracing::warn!(error = %e, "could not remove the pidbox mailbox binding");
        }
    }

    /// Subscribe and serve requests until the task is aborted; reconnects when the subscription drops.
    /// `subscribed` is notified each time the subscription is (re)established.
    pub async fn serve(self, subscribed: Arc<tokio::sync::Notify>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let mut stream = match self.ctx.transport.subscribe(&self.mailbox()).await {
                Ok(s) => s,
                Err(e) => {
                    self.ctx.transport.note_error(&e);
                    tracing::warn!(error = %e, retry_in = ?backoff.peek(), "cannot subscribe to the pidbox; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
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
            backoff.wait().await;
        }
    }

    async fn on_message(&self, m: Incoming) {
        let msg = match m.message {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(routing_key = %m.routing_key, bytes = m.raw.len(), error = %e, "dropping unreadable pidbox message");
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
        let state = &self.ctx.state;
        if let Some(c) = req.clock {
            state.clock.adjust(c);
        }
        if !req.addresses(self.node(), pcre_match) {
            return;
        }
        tracing::debug!(method = %req.method, "control request");
        let reply = self.answer(&req.method, &req.arguments).await;
        if let (Some(value), Some(ticket), Some(oid)) = (reply, &req.ticket, &req.reply_to) {
            let value = self.bounded(&req.method, value);
            self.reply(value, ticket, oid).await;
        }
    }

    /// The reply to `method` with `arguments`: the command's, or the parse error's (`None`: no reply).
    async fn answer(&self, method: &str, arguments: &Map<String, Value>) -> Reply {
        match ControlCommand::parse(method, arguments) {
            Ok(cmd) => self.dispatch(&cmd).await,
            Err(e) => Some(self.rejected(&e)),
        }
    }

    /// The reply itself, or an `{"error": ...}` reply saying it was refused when its JSON is larger than
    /// `pidbox_reply_max_bytes` (0 = no bound): a huge `inspect` answer is not pushed into the broker whole.
    fn bounded(&self, method: &str, value: Value) -> Value {
        let max = self.ctx.config.pidbox_reply_max_bytes;
        if max == 0 {
            return value;
        }
        let bytes = celery_proto::json::to_py_json(&value).len();
        if bytes <= max {
            return value;
        }
        let why = format!(
            "the reply to {method} is {bytes} bytes, more than this worker sends (--pidbox-reply-max-bytes {max})"
        );
        tracing::error!(method, bytes, max, "{why}; replying with an error instead");
        err(why)
    }

    /// Send a reply to every queue bound to the reply exchange with the request's `reply_to` (kombu's `_lookup`).
    async fn reply(&self, value: Value, ticket: &str, oid: &str) {
        let env = reply_envelope(
            self.node(),
            value,
            ticket,
            oid,
            self.ctx.state.clock.forward(),
        );
        match self
            .ctx
            .transport
            .send_direct(REPLY_EXCHANGE, oid, &env)
            .await
        {
            Ok(0) => tracing::debug!(
                oid,
                "no reply queue bound for this request (client gone); reply dropped"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not send control reply"),
        }
    }

    /// Run a command (Celery's `Panel.data[method]`): the reply value, or `None` for commands that send none.
    pub async fn dispatch(&self, cmd: &ControlCommand) -> Reply {
        use ControlCommand as C;
        let ctx = &self.ctx;
        let value = match cmd {
            C::Ping => inspect::ping(),
            C::Stats => inspect::stats(ctx),
            C::Active { safe } => inspect::requests(ctx, Phase::Active, safe.unwrap_or(false)),
            C::Reserved { safe } => inspect::requests(ctx, Phase::Reserved, safe.unwrap_or(false)),
            C::Scheduled { safe } => inspect::scheduled(ctx, safe.unwrap_or(false)),
            C::Revoked => inspect::revoked(ctx),
            C::Registered {
                taskinfoitems,
                builtins,
            } => inspect::registered(ctx, taskinfoitems, *builtins),
            C::ActiveQueues => inspect::active_queues(ctx),
            C::QueryTask { ids } => inspect::query_task(ctx, ids),
            C::Conf => inspect::conf(ctx),
            C::Report => inspect::report(ctx),
            C::Clock => inspect::clock(ctx),
            C::Hello { from_node, revoked } => inspect::hello(ctx, from_node, revoked),
            C::Revoke { ids, terminate, .. } => revoke::revoke(ctx, ids, *terminate).await,
            C::Terminate { ids, .. } => revoke::revoke(ctx, ids, true).await,
            C::RevokeByStampedHeaders {
                headers, terminate, ..
            } => revoke::revoke_by_stamped_headers(ctx, headers, *terminate),
            C::RateLimit {
                task_name,
                rate_limit,
            } => limits::rate_limit(ctx, task_name, rate_limit.as_deref()),
            C::TimeLimit {
                task_name,
                soft,
                hard,
            } => limits::time_limit(ctx, task_name, *soft, *hard),
            C::Shutdown => shutdown(ctx),
            C::PoolGrow { n } => pool::grow(ctx, *n),
            C::PoolShrink { n } => pool::shrink(ctx, *n),
            C::Autoscale { .. } => pool::autoscale(),
            C::PoolRestart => pool::restart(),
            C::AddConsumer { queue, .. } => consumers::add(ctx, queue).await,
            C::CancelConsumer { queue } => consumers::cancel(ctx, queue),
            C::EnableEvents => events::enable(ctx),
            C::DisableEvents => events::disable(ctx),
            C::Heartbeat => events::heartbeat(ctx).await,
            C::Election => election(),
        };
        cmd.replies().then_some(value)
    }

    /// The reply to a request that is not a command: `{"error": text}` (Celery's `KeyError` for unknown names).
    /// `rate_limit` / `time_limit` for an unregistered task answer `unknown task` whatever their other arguments.
    fn rejected(&self, e: &CommandError) -> Value {
        if let Some(unknown) = e
            .task_name()
            .and_then(|task| limits::unknown_task(&self.ctx, e.method(), task))
        {
            return unknown;
        }
        match e {
            CommandError::Unknown { method, .. } => {
                tracing::warn!(method = %method, "unknown control command")
            }
            CommandError::Invalid { method, text, .. } => {
                tracing::debug!(method, error = %text, "control command with bad arguments")
            }
        }
        err(e.text())
    }
}

/// `shutdown`: ask for a warm shutdown (the reply is never sent).
fn shutdown(ctx: &ControlContext) -> Value {
    tracing::warn!("shutdown requested by remote control");
    ctx.state.request_shutdown();
    Value::Null
}

/// `election`: celeriac has no gossip; ignored, never answered.
fn election() -> Value {
    tracing::info!("ignoring election request (no gossip in celeriac)");
    Value::Null
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

    fn pidbox() -> Pidbox {
        let mem = transport::memory::MemoryBroker::new();
        let state = Arc::new(WorkerState::new("w1@h", vec!["celery".into()], false));
        Pidbox::new(ControlContext {
            config: Arc::new(RuntimeConfig::new("redis://:pw@localhost:6379/0", "w1@h")),
            registry: Arc::new(crate::default_registry()),
            events: EventSink::new(Arc::new(mem.clone()), state.clone()),
            state,
            transport: Arc::new(mem.clone()),
            backend: Arc::new(mem),
            pool: Arc::new(Pool::new(2)),
        })
    }

    #[tokio::test]
    async fn requests_are_answered_as_before_the_typed_commands() {
        let p = pidbox();
        let ask = |method: &'static str, args: Value| {
            let p = p.clone();
            async move { p.answer(method, args.as_object().unwrap()).await }
        };
        assert_eq!(ask("ping", json!({})).await, Some(json!({"ok": "pong"})));
        assert_eq!(
            ask("nonexistent_cmd", json!({})).await,
            Some(json!({"error": "KeyError('nonexistent_cmd')"}))
        );
        assert_eq!(
            ask("revoke", json!({"task_id": 42})).await,
            Some(
                json!({"error": "TypeError('revoke: task_id must be a task id or a list of task ids')"})
            )
        );
        assert_eq!(
            ask("revoke", json!({"task_id": "x"})).await,
            Some(json!({"ok": "tasks {'x'} flagged as revoked"}))
        );
        assert_eq!(
            ask("terminate", json!({"task_id": ["x"], "signal": "SIGTERM"})).await,
            Some(json!({"ok": "terminate: tasks unknown"}))
        );
        assert_eq!(ask("dump_revoked", json!({})).await, Some(json!(["x"])));
        // rate_limit / time_limit: `unknown task` comes before the other arguments are looked at.
        for (method, args) in [
            (
                "rate_limit",
                json!({"task_name": "no.such", "rate_limit": [1]}),
            ),
            (
                "rate_limit",
                json!({"task_name": "no.such", "rate_limit": "ten/x"}),
            ),
            ("time_limit", json!({"task_name": "no.such", "soft": [1]})),
            ("time_limit", json!({"task_name": "no.such", "soft": "abc"})),
        ] {
            assert_eq!(
                ask(method, args.clone()).await,
                Some(json!({"error": "unknown task"})),
                "{method} {args}"
            );
        }
        assert_eq!(
            ask(
                "rate_limit",
                json!({"task_name": "celeriac.add", "rate_limit": [1]})
            )
            .await,
            Some(json!({"error": "Invalid rate limit string: [1]"}))
        );
        assert_eq!(
            ask(
                "rate_limit",
                json!({"task_name": "celeriac.add", "rate_limit": "10/m"})
            )
            .await,
            Some(json!({"ok": "new rate limit set successfully"}))
        );
        assert_eq!(
            ask(
                "rate_limit",
                json!({"task_name": "celeriac.add", "rate_limit": 0})
            )
            .await,
            Some(json!({"ok": "rate limit disabled successfully"}))
        );
        assert!(
            ask(
                "rate_limit",
                json!({"task_name": "celeriac.add", "rate_limit": "ten/x"})
            )
            .await
            .unwrap()["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("Invalid rate limit string"))
        );
        assert_eq!(
            ask(
                "time_limit",
                json!({"task_name": "celeriac.add", "soft": [1]})
            )
            .await,
            Some(json!({"error": "TypeError('time_limit: soft must be a number, got [1]')"}))
        );
        assert_eq!(
            ask(
                "time_limit",
                json!({"task_name": "celeriac.add", "soft": "0.5", "hard": 1})
            )
            .await,
            Some(json!({"ok": "time limits set successfully"}))
        );
        assert_eq!(
            ask("pool_grow", json!({"n": 2})).await,
            Some(json!({"ok": "pool will grow"}))
        );
        assert_eq!(p.ctx.pool.size(), 4);
        assert_eq!(
            ask("autoscale", json!({"max": 4, "min": 1})).await,
            Some(json!({"error": "ValueError('Autoscale not enabled')"}))
        );
        assert_eq!(
            ask("add_consumer", json!({"queue": "extra"})).await,
            Some(json!({"ok": "add consumer extra"}))
        );
        assert_eq!(
            ask("cancel_consumer", json!({"queue": "extra"})).await,
            Some(json!({"ok": "no longer consuming from extra"}))
        );
        assert_eq!(
            ask("enable_events", json!({})).await,
            Some(json!({"ok": "task events enabled"}))
        );
        assert_eq!(
            ask("conf", json!({})).await.unwrap()["broker_url"],
            json!("redis://:********@localhost:6379/0")
        );
        assert_eq!(
            ask("hello", json!({"from_node": "w1@h"})).await,
            Some(Value::Null)
        );
        assert_eq!(ask("election", json!({})).await, None);
        assert_eq!(ask("shutdown", json!({})).await, None);
    }
}
