//! `celeriac inspect <command>`: Celery's `celery inspect`, with the same output layout
//! (`->  node: OK` and the indented reply, `N nodes online.`) or `--json` (the merged `{node: reply}`).

use celeriac_control::ControlClient;
use celery_proto::command::ControlCommand;
use celery_proto::pyrepr::repr;
use clap::Args;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use crate::Cli;
use crate::request::Request;

/// Celery's `EX_UNAVAILABLE`, used when no node replied.
pub const EX_UNAVAILABLE: u8 = 69;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// ping, stats, active, reserved, scheduled, revoked, registered, active_queues, query_task, conf, report,
    /// clock, or any other method name (unknown ones get the workers' KeyError reply).
    pub method: String,
    /// Arguments: task ids for query_task, attribute names for registered.
    pub args: Vec<String>,
    /// Seconds to wait for a further reply.
    #[arg(short = 't', long, default_value_t = 1.0)]
    pub timeout: f64,
    /// Only ask these nodes (comma separated).
    #[arg(short = 'd', long, value_delimiter = ',')]
    pub destination: Vec<String>,
}

/// The request for `inspect <method> [args]`: the inspect commands typed, with the arguments Celery's CLI sends
/// (`query_task` ids, `registered` attribute names, `active safe`); any other name bare.
pub fn inspect_request(method: &str, args: &[String]) -> Request {
    use ControlCommand as C;
    let command = match method {
        "query_task" => Some(C::QueryTask { ids: args.to_vec() }),
        "registered" | "dump_tasks" => Some(C::Registered {
            taskinfoitems: args.to_vec(),
            builtins: false,
        }),
        "active" if !args.is_empty() => Some(C::Active {
            safe: Some(args[0] == "safe" || args[0] == "true"),
        }),
        other => ControlCommand::parse(other, &Map::new()).ok().filter(|c| {
            matches!(
                c,
                C::Ping
                    | C::Stats
                    | C::Active { .. }
                    | C::Reserved { .. }
                    | C::Scheduled { .. }
                    | C::Revoked
                    | C::ActiveQueues
                    | C::Conf
                    | C::Report
                    | C::Clock
            )
        }),
    };
    Request::new(method, command)
}

pub async fn inspect(cli: &Cli, a: &InspectArgs) -> anyhow::Result<ExitCode> {
    let request = inspect_request(&a.method, &a.args);
    let client = ControlClient::new(cli.transport().await?);
    let dest = (!a.destination.is_empty()).then(|| a.destination.clone());
    let replies = request
        .send(&client, dest, Duration::from_secs_f64(a.timeout.max(0.01)))
        .await?;
    Ok(print_replies(cli.json, &replies, true))
}

/// Print replies like Celery's CLI and return the exit code (69 when nobody replied).
pub fn print_replies(as_json: bool, replies: &[(String, Value)], count_line: bool) -> ExitCode {
    if replies.is_empty() {
        eprintln!("Error: No nodes replied within time constraint");
        return ExitCode::from(EX_UNAVAILABLE);
    }
    if as_json {
        let merged: Map<String, Value> = replies.iter().cloned().collect();
        println!("{}", Value::Object(merged));
        return ExitCode::SUCCESS;
    }
    for (node, value) in replies {
        let (status, body) = pretty(value);
        println!("->  {node}: {status}");
        println!("{}", indent(&body, 4));
    }
    if count_line {
        let n = replies.len();
        println!("\n{n} {} online.", if n == 1 { "node" } else { "nodes" });
    }
    ExitCode::SUCCESS
}

/// Celery's `CLIContext.pretty`: lists as `* item`, `{ok}`/`{error}` unwrapped, other objects as sorted JSON.
pub fn pretty(v: &Value) -> (&'static str, String) {
    match v {
        Value::Array(items) if items.is_empty() => ("OK", "- empty -".to_string()),
        Value::Array(items) => (
            "OK",
            items
                .iter()
                .map(|i| format!("* {}", py_str(i)))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Value::Object(m) if m.contains_key("ok") => ("OK", indent(&pretty(&m["ok"]).1, 4)),
        Value::Object(m) if m.contains_key("error") => ("ERROR", indent(&pretty(&m["error"]).1, 4)),
        Value::Object(_) => ("OK", json_sorted_pretty(v)),
        Value::String(s) => ("OK", s.clone()),
        other => ("OK", repr(other)),
    }
}

/// Python's `str()` of a decoded JSON value.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => repr(other),
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let b: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sorted(v))).collect();
            let mut out = Map::new();
            for (k, v) in b {
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// `json.dumps(v, sort_keys=True, indent=4)`.
pub fn json_sorted_pretty(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&sorted(v), &mut ser).expect("serialize");
    String::from_utf8(buf).unwrap_or_default()
}

/// `textwrap.indent`-like: prefix every non-empty line.
pub fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pretty_like_celery() {
        assert_eq!(
            pretty(&json!({"ok": "pong"})),
            ("OK", "    pong".to_string())
        );
        assert_eq!(
            pretty(&json!({"error": "unknown task"})).0,
            "ERROR",
            "errors are flagged"
        );
        assert_eq!(pretty(&json!([])).1, "- empty -");
        assert_eq!(pretty(&json!(["a", {"x": null}])).1, "* a\n* {'x': None}");
        assert_eq!(
            pretty(&json!({"b": 1, "a": {"d": 2.0, "c": []}})).1,
            "{\n    \"a\": {\n        \"c\": [],\n        \"d\": 2.0\n    },\n    \"b\": 1\n}"
        );
    }

    #[test]
    fn inspect_requests_like_celery() {
        let sent = |method: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            let r = inspect_request(method, &args);
            (
                r.method.clone(),
                Value::Object(r.arguments()).to_string(),
                r.replies(),
            )
        };
        let want = |m: &str, a: &str| (m.to_string(), a.to_string(), true);
        assert_eq!(
            sent("query_task", &["x", "y"]),
            want("query_task", r#"{"ids":["x","y"]}"#)
        );
        assert_eq!(
            sent("registered", &[]),
            want("registered", r#"{"taskinfoitems":[]}"#)
        );
        assert_eq!(
            sent("dump_tasks", &["acks_late"]),
            want("dump_tasks", r#"{"taskinfoitems":["acks_late"]}"#)
        );
        assert_eq!(sent("active", &[]), want("active", "{}"));
        assert_eq!(
            sent("active", &["safe"]),
            want("active", r#"{"safe":true}"#)
        );
        assert_eq!(
            sent("active", &["false"]),
            want("active", r#"{"safe":false}"#)
        );
        for m in [
            "ping",
            "stats",
            "reserved",
            "scheduled",
            "revoked",
            "active_queues",
            "conf",
            "report",
            "clock",
        ] {
            assert_eq!(sent(m, &[]), want(m, "{}"));
            assert!(inspect_request(m, &[]).command.is_some(), "{m}");
        }
        // Other names go out bare, replies awaited, as before.
        for m in [
            "nonexistent_cmd",
            "pool_grow",
            "shutdown",
            "revoke",
            "hello",
        ] {
            assert_eq!(sent(m, &["x"]), want(m, "{}"));
            assert!(inspect_request(m, &[]).command.is_none(), "{m}");
        }
    }
}
