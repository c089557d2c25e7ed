//! Remote-control commands as typed values: what `celery inspect` / `celery control` (and Flower, mingle, the
//! `celeriac` CLI) ask a worker's pidbox, each with its parsed arguments ([`ControlCommand`]).
//!
//! [`ControlCommand::parse`] reads a request's `method` and `arguments` the way a celeriac worker accepts them
//! (errors carry the exact `{"error": ...}` text the worker replies); [`ControlCommand::method`] and
//! [`ControlCommand::arguments`] give back the method name and argument object Celery's CLI sends, so a client
//! builds its request from the same type. Aliases (`dump_tasks`, `dump_active`, ...) parse to the command of
//! their canonical name.

use serde_json::{Map, Value, json};

use crate::pyrepr::repr;

/// A remote-control command with its arguments.
///
/// Optional arguments are `None` (or `false`, empty) when the request did not give them; [`Self::arguments`] then
/// leaves them out, so a command parsed from `{}` is sent as `{}` again.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlCommand {
    /// `ping`: `{"ok": "pong"}`.
    Ping,
    /// `stats`: totals, pool, broker, rusage.
    Stats,
    /// `active` (alias `dump_active`): running requests; `safe` gives repr strings for args and kwargs.
    Active { safe: Option<bool> },
    /// `reserved` (alias `dump_reserved`): prefetched requests waiting for a slot.
    Reserved { safe: Option<bool> },
    /// `scheduled` (alias `dump_schedule`): requests waiting for their ETA.
    Scheduled { safe: Option<bool> },
    /// `revoked` (alias `dump_revoked`): the revoked task ids.
    Revoked,
    /// `registered` (alias `dump_tasks`): task names, with `name [item=value ...]` for the asked items.
    Registered {
        taskinfoitems: Vec<String>,
        builtins: bool,
    },
    /// `active_queues`: the queues consumed from, as kombu `Queue.as_dict`.
    ActiveQueues,
    /// `query_task`: `{id: [phase, request]}` for the ids this worker holds (`ids`, or `id`).
    QueryTask { ids: Vec<String> },
    /// `conf` (alias `dump_conf`): the worker's settings, URLs redacted.
    Conf,
    /// `report`: a text report.
    Report,
    /// `clock`: the Lamport clock.
    Clock,
    /// `hello`: mingle's greeting; the peer's revoked ids are adopted, ours and our clock are answered.
    Hello { from_node: String, revoked: Value },
    /// `revoke`: flag ids as revoked, terminating running ones when `terminate`.
    Revoke {
        ids: Vec<String>,
        terminate: bool,
        signal: Option<String>,
    },
    /// `terminate`: `revoke` with `terminate` forced.
    Terminate {
        ids: Vec<String>,
        signal: Option<String>,
    },
    /// `revoke_by_stamped_headers`: revoke the requests whose stamps match `headers`.
    RevokeByStampedHeaders {
        headers: Map<String, Value>,
        terminate: bool,
        signal: Option<String>,
    },
    /// `rate_limit`: a Celery rate string (`10/m`), or `None` / `"0"` to disable. The string itself is checked by
    /// the worker, after it looked the task up (as Celery answers `unknown task` first).
    RateLimit {
        task_name: String,
        rate_limit: Option<String>,
    },
    /// `time_limit`: soft and hard time limits in seconds (`None` removes one).
    TimeLimit {
        task_name: String,
        soft: Option<f64>,
        hard: Option<f64>,
    },
    /// `shutdown`: warm shutdown; no reply.
    Shutdown,
    /// `pool_grow`: `n` more slots (default 1).
    PoolGrow { n: usize },
    /// `pool_shrink`: `n` fewer slots (default 1).
    PoolShrink { n: usize },
    /// `autoscale`: answered `Autoscale not enabled`; the bounds are carried as sent.
    Autoscale { max: Option<u64>, min: Option<u64> },
    /// `pool_restart`: answered `Pool restarts not enabled`.
    PoolRestart,
    /// `add_consumer`: start consuming from `queue` (the exchange arguments are carried as sent).
    AddConsumer {
        queue: String,
        exchange: Option<String>,
        exchange_type: Option<String>,
        routing_key: Option<String>,
    },
    /// `cancel_consumer`: stop consuming from `queue`.
    CancelConsumer { queue: String },
    /// `enable_events`: task events on.
    EnableEvents,
    /// `disable_events`: task events off.
    DisableEvents,
    /// `heartbeat`: send a heartbeat event now; replies `None`.
    Heartbeat,
    /// `election`: gossip leader election; ignored, no reply.
    Election,
}

/// Why a request is not a command this worker can run. The text is the whole `{"error": text}` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No command has this name: Celery's `KeyError('name')`.
    #[error("{text}")]
    Unknown { method: String, text: String },
    /// The command exists but its arguments do not fit.
    ///
    /// `task_name` is set by `rate_limit` and `time_limit` when the task name was readable: a worker answers
    /// `unknown task` for an unregistered task before it looks at the other arguments.
    #[error("{text}")]
    Invalid {
        method: &'static str,
        text: String,
        task_name: Option<String>,
    },
}

impl CommandError {
    fn unknown(method: &str) -> CommandError {
        CommandError::Unknown {
            method: method.to_string(),
            text: format!("KeyError({})", repr(&json!(method))),
        }
    }

    /// The error text the worker replies (`{"error": text}`).
    pub fn text(&self) -> &str {
        match self {
            CommandError::Unknown { text, .. } | CommandError::Invalid { text, .. } => text,
        }
    }

    /// The method name of the request.
    pub fn method(&self) -> &str {
        match self {
            CommandError::Unknown { method, .. } => method,
            CommandError::Invalid { method, .. } => method,
        }
    }

    /// For `rate_limit` / `time_limit` with bad limits: the task the request names.
    pub fn task_name(&self) -> Option<&str> {
        match self {
            CommandError::Invalid { task_name, .. } => task_name.as_deref(),
            CommandError::Unknown { .. } => None,
        }
    }
}

/// `repr(TypeError(msg))`.
fn type_error(method: &'static str, msg: &str) -> CommandError {
    invalid(method, format!("TypeError({})", repr(&json!(msg))))
}

fn invalid(method: &'static str, text: String) -> CommandError {
    CommandError::Invalid {
        method,
        text,
        task_name: None,
    }
}

/// Typed access to one request's arguments, with the leniency of the worker (wrong types read as absent).
struct Args<'a>(&'a Map<String, Value>);

impl Args<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k)
    }

    fn bool(&self, k: &str) -> Option<bool> {
        self.0.get(k).and_then(Value::as_bool)
    }

    fn string(&self, k: &str) -> Option<String> {
        self.0.get(k).and_then(Value::as_str).map(str::to_string)
    }

    fn u64(&self, k: &str) -> Option<u64> {
        self.0.get(k).and_then(Value::as_u64)
    }

    /// `revoke` / `terminate`: one id or a list of ids.
    fn task_ids(&self, method: &'static str) -> Result<Vec<String>, CommandError> {
        match self.get("task_id") {
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(strings(a)),
            _ => Err(type_error(
                method,
                "revoke: task_id must be a task id or a list of task ids",
            )),
        }
    }

    /// `pool_grow` / `pool_shrink`: a non-negative integer, 1 when absent.
    fn pool_n(&self, method: &'static str) -> Result<usize, CommandError> {
        match self.get("n") {
            None | Some(Value::Null) => Ok(1),
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                type_error(
                    method,
                    "pool_grow/pool_shrink: n must be a non-negative integer",
                )
            }),
        }
    }

    /// `time_limit`'s `soft` / `hard`: a number, a numeric string, or null.
    fn seconds(&self, method: &'static str, k: &str) -> Result<Option<f64>, CommandError> {
        match self.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| {
                invalid(
                    method,
                    format!(
                        "ValueError(\"could not convert string to float: {}\")",
                        repr(&json!(s))
                    ),
                )
            }),
            Some(other) => Err(type_error(
                method,
                &format!("time_limit: {k} must be a number, got {other}"),
            )),
        }
    }
}

fn strings(a: &[Value]) -> Vec<String> {
    a.iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// With `task_name` on an `Invalid` error (see [`CommandError::Invalid`]).
fn naming(task: &str) -> impl FnOnce(CommandError) -> CommandError + '_ {
    move |e| match e {
        CommandError::Invalid { method, text, .. } => CommandError::Invalid {
            method,
            text,
            task_name: Some(task.to_string()),
        },
        other => other,
    }
}

impl ControlCommand {
    /// Read a request's `method` and `arguments` (Celery's `Panel.data[method](state, **arguments)`).
    pub fn parse(
        method: &str,
        arguments: &Map<String, Value>,
    ) -> Result<ControlCommand, CommandError> {
        use ControlCommand as C;
        let a = Args(arguments);
        Ok(match method {
            "ping" => C::Ping,
            "stats" => C::Stats,
            "active" | "dump_active" => C::Active {
                safe: a.bool("safe"),
            },
            "reserved" | "dump_reserved" => C::Reserved {
                safe: a.bool("safe"),
            },
            "scheduled" | "dump_schedule" => C::Scheduled {
                safe: a.bool("safe"),
            },
            "revoked" | "dump_revoked" => C::Revoked,
            "registered" | "dump_tasks" => C::Registered {
                taskinfoitems: match a.get("taskinfoitems") {
                    Some(Value::Array(items)) => strings(items),
                    Some(Value::String(s)) => vec![s.clone()],
                    _ => Vec::new(),
                },
                builtins: a.bool("builtins").unwrap_or(false),
            },
            "active_queues" => C::ActiveQueues,
            "query_task" => C::QueryTask {
                ids: match a.get("ids").or_else(|| a.get("id")) {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(items)) => strings(items),
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(type_error(
                            "query_task",
                            "query_task: ids must be a task id or a list of task ids",
                        ));
                    }
                },
            },
            "conf" | "dump_conf" => C::Conf,
            "report" => C::Report,
            "clock" => C::Clock,
            "hello" => C::Hello {
                from_node: a.string("from_node").unwrap_or_default(),
                revoked: a.get("revoked").cloned().unwrap_or(Value::Null),
            },
            "revoke" => C::Revoke {
                ids: a.task_ids("revoke")?,
                terminate: a.bool("terminate").unwrap_or(false),
                signal: a.string("signal"),
            },
            "terminate" => C::Terminate {
                ids: a.task_ids("terminate")?,
                signal: a.string("signal"),
            },
            "revoke_by_stamped_headers" => {
                let Some(Value::Object(headers)) = a.get("headers") else {
                    return Err(type_error(
                        "revoke_by_stamped_headers",
                        "revoke_by_stamped_headers: headers must be an object",
                    ));
                };
                C::RevokeByStampedHeaders {
                    headers: headers.clone(),
                    terminate: a.bool("terminate").unwrap_or(false),
                    signal: a.string("signal"),
                }
            }
            "rate_limit" => {
                let Some(task_name) = a.string("task_name") else {
                    return Err(type_error(
                        "rate_limit",
                        "rate_limit() missing required argument: 'task_name'",
                    ));
                };
                let rate_limit = match a.get("rate_limit") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    Some(other) => {
                        return Err(naming(&task_name)(invalid(
                            "rate_limit",
                            format!("Invalid rate limit string: {}", repr(other)),
                        )));
                    }
                };
                C::RateLimit {
                    task_name,
                    rate_limit,
                }
            }
            "time_limit" => {
                let Some(task_name) = a.string("task_name") else {
                    return Err(type_error(
                        "time_limit",
                        "time_limit() missing required argument: 'task_name'",
                    ));
                };
                let (soft, hard) = match (
                    a.seconds("time_limit", "soft"),
                    a.seconds("time_limit", "hard"),
                ) {
                    (Ok(s), Ok(h)) => (s, h),
                    (Err(e), _) | (_, Err(e)) => return Err(naming(&task_name)(e)),
                };
                C::TimeLimit {
                    task_name,
                    soft,
                    hard,
                }
            }
            "shutdown" => C::Shutdown,
            "pool_grow" => C::PoolGrow {
                n: a.pool_n("pool_grow")?,
            },
            "pool_shrink" => C::PoolShrink {
                n: a.pool_n("pool_shrink")?,
            },
            "autoscale" => C::Autoscale {
                max: a.u64("max"),
                min: a.u64("min"),
            },
            "pool_restart" => C::PoolRestart,
            "add_consumer" => {
                let Some(queue) = a.string("queue").filter(|q| !q.is_empty()) else {
                    return Err(type_error(
                        "add_consumer",
                        "add_consumer() missing required argument: 'queue'",
                    ));
                };
                C::AddConsumer {
                    queue,
                    exchange: a.string("exchange"),
                    exchange_type: a.string("exchange_type"),
                    routing_key: a.string("routing_key"),
                }
            }
            "cancel_consumer" => {
                let Some(queue) = a.string("queue") else {
                    return Err(type_error(
                        "cancel_consumer",
                        "cancel_consumer() missing required argument: 'queue'",
                    ));
                };
                C::CancelConsumer { queue }
            }
            "enable_events" => C::EnableEvents,
            "disable_events" => C::DisableEvents,
            "heartbeat" => C::Heartbeat,
            "election" => C::Election,
            other => return Err(CommandError::unknown(other)),
        })
    }

    /// The method name Celery's CLI sends for this command (the canonical name, never an alias).
    pub fn method(&self) -> &'static str {
        use ControlCommand as C;
        match self {
            C::Ping => "ping",
            C::Stats => "stats",
            C::Active { .. } => "active",
            C::Reserved { .. } => "reserved",
            C::Scheduled { .. } => "scheduled",
            C::Revoked => "revoked",
            C::Registered { .. } => "registered",
            C::ActiveQueues => "active_queues",
            C::QueryTask { .. } => "query_task",
            C::Conf => "conf",
            C::Report => "report",
            C::Clock => "clock",
            C::Hello { .. } => "hello",
            C::Revoke { .. } => "revoke",
            C::Terminate { .. } => "terminate",
            C::RevokeByStampedHeaders { .. } => "revoke_by_stamped_headers",
            C::RateLimit { .. } => "rate_limit",
            C::TimeLimit { .. } => "time_limit",
            C::Shutdown => "shutdown",
            C::PoolGrow { .. } => "pool_grow",
            C::PoolShrink { .. } => "pool_shrink",
            C::Autoscale { .. } => "autoscale",
            C::PoolRestart => "pool_restart",
            C::AddConsumer { .. } => "add_consumer",
            C::CancelConsumer { .. } => "cancel_consumer",
            C::EnableEvents => "enable_events",
            C::DisableEvents => "disable_events",
            C::Heartbeat => "heartbeat",
            C::Election => "election",
        }
    }

    /// The `arguments` object sent for this command: what Celery's CLI sends (`celery inspect registered` sends
    /// `{"taskinfoitems": []}`, `celery control revoke ID` sends `{"task_id": [ID]}`), arguments not given left
    /// out. `parse(cmd.method(), &cmd.arguments())` gives `cmd` back.
    pub fn arguments(&self) -> Map<String, Value> {
        use ControlCommand as C;
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        match self {
            C::Ping
            | C::Stats
            | C::Revoked
            | C::ActiveQueues
            | C::Conf
            | C::Report
            | C::Clock
            | C::Shutdown
            | C::PoolRestart
            | C::EnableEvents
            | C::DisableEvents
            | C::Heartbeat
            | C::Election => {}
            C::Active { safe } | C::Reserved { safe } | C::Scheduled { safe } => {
                if let Some(s) = safe {
                    put("safe", json!(s));
                }
            }
            C::Registered {
                taskinfoitems,
                builtins,
            } => {
                put("taskinfoitems", json!(taskinfoitems));
                if *builtins {
                    put("builtins", json!(true));
                }
            }
            C::QueryTask { ids } => put("ids", json!(ids)),
            C::Hello { from_node, revoked } => {
                if !from_node.is_empty() {
                    put("from_node", json!(from_node));
                }
                if !revoked.is_null() {
                    put("revoked", revoked.clone());
                }
            }
            C::Revoke {
                ids,
                terminate,
                signal,
            } => {
                put("task_id", json!(ids));
                if *terminate {
                    put("terminate", json!(true));
                }
                if let Some(s) = signal {
                    put("signal", json!(s));
                }
            }
            C::Terminate { ids, signal } => {
                if let Some(s) = signal {
                    put("signal", json!(s));
                }
                put("task_id", json!(ids));
            }
            C::RevokeByStampedHeaders {
                headers,
                terminate,
                signal,
            } => {
                put("headers", Value::Object(headers.clone()));
                put("terminate", json!(terminate));
                if let Some(s) = signal {
                    put("signal", json!(s));
                }
            }
            C::RateLimit {
                task_name,
                rate_limit,
            } => {
                put("task_name", json!(task_name));
                put("rate_limit", json!(rate_limit));
            }
            C::TimeLimit {
                task_name,
                soft,
                hard,
            } => {
                put("task_name", json!(task_name));
                put("soft", json!(soft));
                put("hard", json!(hard));
            }
            C::PoolGrow { n } | C::PoolShrink { n } => put("n", json!(n)),
            C::Autoscale { max, min } => {
                if let Some(v) = max {
                    put("max", json!(v));
                }
                if let Some(v) = min {
                    put("min", json!(v));
                }
            }
            C::AddConsumer {
                queue,
                exchange,
                exchange_type,
                routing_key,
            } => {
                put("queue", json!(queue));
                for (k, v) in [
                    ("exchange", exchange),
                    ("exchange_type", exchange_type),
                    ("routing_key", routing_key),
                ] {
                    if let Some(v) = v {
                        put(k, json!(v));
                    }
                }
            }
            C::CancelConsumer { queue } => put("queue", json!(queue)),
        }
        m
    }

    /// Does a worker answer this command? `shutdown` (a `SystemExit` in Celery) and `election` do not.
    pub fn replies(&self) -> bool {
        !matches!(self, ControlCommand::Shutdown | ControlCommand::Election)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    fn parse(method: &str, args: Value) -> Result<ControlCommand, CommandError> {
        ControlCommand::parse(method, &obj(args))
    }

    /// One command of each kind, with arguments set where the kind has some.
    fn samples() -> Vec<ControlCommand> {
        use ControlCommand as C;
        let ids = vec!["a".to_string(), "b".to_string()];
        vec![
            C::Ping,
            C::Stats,
            C::Active { safe: None },
            C::Active { safe: Some(true) },
            C::Reserved { safe: Some(false) },
            C::Scheduled { safe: None },
            C::Revoked,
            C::Registered {
                taskinfoitems: vec![],
                builtins: false,
            },
            C::Registered {
                taskinfoitems: vec!["acks_late".into(), "rate_limit".into()],
                builtins: true,
            },
            C::ActiveQueues,
            C::QueryTask { ids: ids.clone() },
            C::Conf,
            C::Report,
            C::Clock,
            C::Hello {
                from_node: "w1@h".into(),
                revoked: json!({"a": [1.5, "a"]}),
            },
            C::Hello {
                from_node: String::new(),
                revoked: Value::Null,
            },
            C::Revoke {
                ids: vec!["a".into()],
                terminate: false,
                signal: None,
            },
            C::Revoke {
                ids: ids.clone(),
                terminate: true,
                signal: Some("SIGKILL".into()),
            },
            C::Terminate {
                ids: ids.clone(),
                signal: Some("SIGTERM".into()),
            },
            C::RevokeByStampedHeaders {
                headers: obj(json!({"mystamp": ["v1"]})),
                terminate: true,
                signal: Some("SIGTERM".into()),
            },
            C::RateLimit {
                task_name: "t".into(),
                rate_limit: Some("10/m".into()),
            },
            C::RateLimit {
                task_name: "t".into(),
                rate_limit: None,
            },
            C::TimeLimit {
                task_name: "t".into(),
                soft: Some(0.5),
                hard: None,
            },
            C::Shutdown,
            C::PoolGrow { n: 2 },
            C::PoolShrink { n: 1 },
            C::Autoscale {
                max: Some(4),
                min: Some(1),
            },
            C::PoolRestart,
            C::AddConsumer {
                queue: "q".into(),
                exchange: Some("ex".into()),
                exchange_type: Some("direct".into()),
                routing_key: None,
            },
            C::CancelConsumer { queue: "q".into() },
            C::EnableEvents,
            C::DisableEvents,
            C::Heartbeat,
            C::Election,
        ]
    }

    #[test]
    fn every_command_round_trips_through_its_arguments() {
        let samples = samples();
        let methods: std::collections::BTreeSet<&str> =
            samples.iter().map(ControlCommand::method).collect();
        assert_eq!(methods.len(), 29, "a sample of every command: {methods:?}");
        for cmd in samples {
            let back = ControlCommand::parse(cmd.method(), &cmd.arguments());
            assert_eq!(back.as_ref(), Ok(&cmd), "{}", cmd.method());
        }
    }

    #[test]
    fn aliases_parse_to_the_canonical_command() {
        for (alias, name) in [
            ("dump_active", "active"),
            ("dump_reserved", "reserved"),
            ("dump_schedule", "scheduled"),
            ("dump_revoked", "revoked"),
            ("dump_tasks", "registered"),
            ("dump_conf", "conf"),
        ] {
            let cmd = parse(alias, json!({})).unwrap();
            assert_eq!(cmd.method(), name);
            assert_eq!(cmd, parse(name, json!({})).unwrap());
        }
    }

    #[test]
    fn arguments_are_what_celery_sends() {
        use ControlCommand as C;
        let cases = [
            (C::Active { safe: None }, json!({})),
            (
                C::Registered {
                    taskinfoitems: vec![],
                    builtins: false,
                },
                json!({"taskinfoitems": []}),
            ),
            (
                C::Revoke {
                    ids: vec!["x".into()],
                    terminate: false,
                    signal: None,
                },
                json!({"task_id": ["x"]}),
            ),
            (
                C::Terminate {
                    ids: vec!["x".into()],
                    signal: Some("SIGTERM".into()),
                },
                json!({"signal": "SIGTERM", "task_id": ["x"]}),
            ),
            (
                C::RateLimit {
                    task_name: "tasks.add".into(),
                    rate_limit: Some("10/m".into()),
                },
                json!({"task_name": "tasks.add", "rate_limit": "10/m"}),
            ),
            (
                C::TimeLimit {
                    task_name: "t".into(),
                    soft: Some(0.5),
                    hard: Some(1.0),
                },
                json!({"task_name": "t", "soft": 0.5, "hard": 1.0}),
            ),
            (
                C::QueryTask {
                    ids: vec!["x".into()],
                },
                json!({"ids": ["x"]}),
            ),
            (C::PoolGrow { n: 1 }, json!({"n": 1})),
        ];
        for (cmd, want) in cases {
            // Compared as text: key order is part of the bytes on the wire.
            assert_eq!(
                Value::Object(cmd.arguments()).to_string(),
                want.to_string(),
                "{}",
                cmd.method()
            );
        }
    }

    #[test]
    fn commands_without_arguments_send_none() {
        for name in [
            "ping",
            "stats",
            "active",
            "reserved",
            "scheduled",
            "revoked",
            "active_queues",
            "conf",
            "report",
            "clock",
            "hello",
            "shutdown",
            "autoscale",
            "pool_restart",
            "enable_events",
            "disable_events",
            "heartbeat",
            "election",
        ] {
            let cmd = parse(name, json!({})).unwrap();
            assert!(cmd.arguments().is_empty(), "{name}: {:?}", cmd.arguments());
        }
        assert_eq!(
            parse("pool_grow", json!({})).unwrap(),
            ControlCommand::PoolGrow { n: 1 }
        );
    }

    #[test]
    fn lenient_shapes_are_accepted_as_the_worker_accepts_them() {
        use ControlCommand as C;
        assert_eq!(
            parse(
                "revoke",
                json!({"task_id": "x", "terminate": true, "signal": "SIGTERM"})
            )
            .unwrap(),
            C::Revoke {
                ids: vec!["x".into()],
                terminate: true,
                signal: Some("SIGTERM".into())
            }
        );
        assert_eq!(
            parse("query_task", json!({"id": "x"})).unwrap(),
            C::QueryTask {
                ids: vec!["x".into()]
            }
        );
        assert_eq!(
            parse("query_task", json!({"ids": null})).unwrap(),
            C::QueryTask { ids: vec![] }
        );
        assert_eq!(
            parse("registered", json!({"taskinfoitems": "acks_late"})).unwrap(),
            C::Registered {
                taskinfoitems: vec!["acks_late".into()],
                builtins: false
            }
        );
        assert_eq!(
            parse("rate_limit", json!({"task_name": "t", "rate_limit": 0})).unwrap(),
            C::RateLimit {
                task_name: "t".into(),
                rate_limit: Some("0".into())
            }
        );
        assert_eq!(
            parse(
                "time_limit",
                json!({"task_name": "t", "soft": " 1.5 ", "hard": 3})
            )
            .unwrap(),
            C::TimeLimit {
                task_name: "t".into(),
                soft: Some(1.5),
                hard: Some(3.0)
            }
        );
        assert_eq!(
            parse("active", json!({"safe": null})).unwrap(),
            C::Active { safe: None }
        );
        assert_eq!(
            parse("pool_shrink", json!({"n": null})).unwrap(),
            C::PoolShrink { n: 1 }
        );
        assert!(!parse("shutdown", json!({})).unwrap().replies());
        assert!(!parse("election", json!({"id": "x"})).unwrap().replies());
        assert!(parse("heartbeat", json!({})).unwrap().replies());
    }

    #[test]
    fn bad_arguments_give_the_worker_error_texts() {
        let text = |m: &str, a: Value| parse(m, a).unwrap_err().text().to_string();
        assert_eq!(
            text("nonexistent_cmd", json!({})),
            "KeyError('nonexistent_cmd')"
        );
        assert!(matches!(
            parse("nonexistent_cmd", json!({})),
            Err(CommandError::Unknown { .. })
        ));
        let revoke = "TypeError('revoke: task_id must be a task id or a list of task ids')";
        assert_eq!(text("revoke", json!({"task_id": 42})), revoke);
        assert_eq!(text("revoke", json!({})), revoke);
        assert_eq!(text("revoke", json!({"task_id": ["a", 1]})), revoke);
        assert_eq!(text("terminate", json!({"signal": "SIGTERM"})), revoke);
        assert_eq!(
            text("query_task", json!({"ids": {"x": 1}})),
            "TypeError('query_task: ids must be a task id or a list of task ids')"
        );
        assert_eq!(
            text("revoke_by_stamped_headers", json!({"headers": "x"})),
            "TypeError('revoke_by_stamped_headers: headers must be an object')"
        );
        assert_eq!(
            text("rate_limit", json!({"rate_limit": "1/s"})),
            "TypeError(\"rate_limit() missing required argument: 'task_name'\")"
        );
        assert_eq!(
            text("rate_limit", json!({"task_name": "t", "rate_limit": [1]})),
            "Invalid rate limit string: [1]"
        );
        assert_eq!(
            text("rate_limit", json!({"task_name": "t", "rate_limit": true})),
            "Invalid rate limit string: True"
        );
        assert_eq!(
            text("time_limit", json!({})),
            "TypeError(\"time_limit() missing required argument: 'task_name'\")"
        );
        assert_eq!(
            text("time_limit", json!({"task_name": "t", "soft": "abc"})),
            "ValueError(\"could not convert string to float: 'abc'\")"
        );
        assert_eq!(
            text("time_limit", json!({"task_name": "t", "soft": [1]})),
            "TypeError('time_limit: soft must be a number, got [1]')"
        );
        assert_eq!(
            text(
                "time_limit",
                json!({"task_name": "t", "soft": 1, "hard": {"a": 1}})
            ),
            "TypeError('time_limit: hard must be a number, got {\"a\":1}')"
        );
        assert_eq!(
            text(
                "time_limit",
                json!({"task_name": "t", "soft": [1], "hard": "x"})
            ),
            "TypeError('time_limit: soft must be a number, got [1]')",
            "soft is reported first"
        );
        let pool = "TypeError('pool_grow/pool_shrink: n must be a non-negative integer')";
        assert_eq!(text("pool_grow", json!({"n": "many"})), pool);
        assert_eq!(text("pool_shrink", json!({"n": -1})), pool);
        assert_eq!(
            text("add_consumer", json!({"queue": ""})),
            "TypeError(\"add_consumer() missing required argument: 'queue'\")"
        );
        assert_eq!(
            text("cancel_consumer", json!({})),
            "TypeError(\"cancel_consumer() missing required argument: 'queue'\")"
        );
        // rate_limit / time_limit name their task, so the worker can answer `unknown task` first.
        let e = parse("time_limit", json!({"task_name": "t", "soft": [1]})).unwrap_err();
        assert_eq!((e.method(), e.task_name()), ("time_limit", Some("t")));
        let e = parse("rate_limit", json!({"task_name": "t", "rate_limit": {}})).unwrap_err();
        assert_eq!(e.task_name(), Some("t"));
        assert_eq!(parse("revoke", json!({})).unwrap_err().task_name(), None);
        assert_eq!(e.to_string(), e.text());
    }
}
