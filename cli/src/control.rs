//! `celeriac control <command>`: Celery's `celery control` (revoke, terminate, rate_limit, time_limit,
//! add_consumer, cancel_consumer, enable_events, disable_events, pool_grow, pool_shrink, autoscale, heartbeat,
//! shutdown, revoke_by_stamped_headers, and any other method name), with Celery's output or `--json`.

use anyhow::{Context as _, bail};
use celeriac_control::ControlClient;
use celery_proto::command::ControlCommand;
use clap::Args;
use serde_json::{Map, Value};
use std::process::ExitCode;
use std::time::Duration;

use crate::Cli;
use crate::inspect::print_replies;
use crate::request::Request;

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The command, e.g. `revoke`, `rate_limit`, `add_consumer`, `shutdown`.
    pub method: String,
    /// Its arguments in Celery's CLI order (e.g. `rate_limit celeriac.add 10/m`, `terminate SIGTERM <id>`).
    pub args: Vec<String>,
    /// Seconds to wait for a further reply.
    #[arg(short = 't', long, default_value_t = 1.0)]
    pub timeout: f64,
    /// Only these nodes (comma separated).
    #[arg(short = 'd', long, value_delimiter = ',')]
    pub destination: Vec<String>,
    /// With `revoke`: also terminate the task if it is running.
    #[arg(long)]
    pub terminate: bool,
    /// With `revoke --terminate`: the signal name.
    #[arg(long, default_value = "SIGTERM")]
    pub signal: String,
}

/// A number word (`float(arg)` / `int(arg)` in Celery's CLI).
fn number<T: std::str::FromStr>(method: &str, what: &str, word: &str) -> anyhow::Result<T> {
    word.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{method}: {what} must be a number, got {word:?}"))
}

/// The request for `control <method> [words]`, with the arguments Celery's CLI sends for those words. Names the
/// CLI has no command for (and commands it cannot build from no words) go out bare.
pub fn control_request(a: &ControlArgs) -> anyhow::Result<Request> {
    use ControlCommand as C;
    let w = &a.args;
    let m = a.method.as_str();
    let need = |n: usize, usage: &str| -> anyhow::Result<()> {
        if w.len() < n {
            bail!("usage: celeriac control {m} {usage}");
        }
        Ok(())
    };
    let command = match m {
        "revoke" => {
            need(1, "TASK_ID...")?;
            C::Revoke {
                ids: w.clone(),
                terminate: a.terminate,
                signal: a.terminate.then(|| a.signal.clone()),
            }
        }
        "terminate" => {
            need(2, "SIGNAL TASK_ID...")?;
            C::Terminate {
                ids: w[1..].to_vec(),
                signal: Some(w[0].clone()),
            }
        }
        "rate_limit" => {
            need(2, "TASK_NAME RATE_LIMIT")?;
            C::RateLimit {
                task_name: w[0].clone(),
                rate_limit: Some(w[1].clone()),
            }
        }
        "time_limit" => {
            need(2, "TASK_NAME SOFT [HARD]")?;
            C::TimeLimit {
                task_name: w[0].clone(),
                soft: Some(number(m, "SOFT", &w[1])?),
                hard: w.get(2).map(|h| number(m, "HARD", h)).transpose()?,
            }
        }
        "add_consumer" => {
            need(1, "QUEUE [EXCHANGE EXCHANGE_TYPE ROUTING_KEY]")?;
            C::AddConsumer {
                queue: w[0].clone(),
                exchange: w.get(1).cloned(),
                exchange_type: w.get(2).cloned(),
                routing_key: w.get(3).cloned(),
            }
        }
        "cancel_consumer" => {
            need(1, "QUEUE")?;
            C::CancelConsumer {
                queue: w[0].clone(),
            }
        }
        "pool_grow" | "pool_shrink" => {
            let n = w
                .first()
                .map(|n| number(m, "N", n))
                .transpose()?
                .unwrap_or(1);
            if m == "pool_grow" {
                C::PoolGrow { n }
            } else {
                C::PoolShrink { n }
            }
        }
        "autoscale" => {
            need(2, "MAX MIN")?;
            C::Autoscale {
                max: Some(number(m, "MAX", &w[0])?),
                min: Some(number(m, "MIN", &w[1])?),
            }
        }
        "revoke_by_stamped_headers" => {
            need(1, "KEY=VALUE...")?;
            let mut headers = Map::new();
            for kv in w {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("{kv}: expected KEY=VALUE"))?;
                headers.insert(k.into(), Value::from(v));
            }
            C::RevokeByStampedHeaders {
                headers,
                terminate: a.terminate,
                signal: Some(a.signal.clone()),
            }
        }
        other => {
            return Ok(Request::new(
                other,
                ControlCommand::parse(other, &Map::new()).ok(),
            ));
        }
    };
    Ok(Request::new(m, Some(command)))
}

pub async fn control(cli: &Cli, a: &ControlArgs) -> anyhow::Result<ExitCode> {
    let request = control_request(a)?;
    let client = ControlClient::new(cli.transport().await?);
    let dest = (!a.destination.is_empty()).then(|| a.destination.clone());
    let timeout = Duration::from_secs_f64(a.timeout.max(0.01));
    let replies = request.send(&client, dest, timeout).await?;
    if !request.replies() {
        // Workers do not reply to shutdown (a SystemExit in Celery) or election.
        println!("{} sent", request.method);
        return Ok(ExitCode::SUCCESS);
    }
    Ok(print_replies(cli.json, &replies, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn sent(words: &[&str]) -> anyhow::Result<(String, String, bool)> {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: ControlArgs,
        }
        let t = T::try_parse_from(std::iter::once("control").chain(words.iter().copied()))?;
        let r = control_request(&t.a)?;
        Ok((
            r.method.clone(),
            Value::Object(r.arguments()).to_string(),
            r.replies(),
        ))
    }

    fn want(m: &str, a: &str) -> (String, String, bool) {
        (m.to_string(), a.to_string(), true)
    }

    #[test]
    fn control_requests_like_celery() {
        let ok = |w: &[&str]| sent(w).unwrap();
        assert_eq!(
            ok(&["revoke", "a", "b"]),
            want("revoke", r#"{"task_id":["a","b"]}"#)
        );
        assert_eq!(
            ok(&["revoke", "a", "--terminate"]),
            want(
                "revoke",
                r#"{"task_id":["a"],"terminate":true,"signal":"SIGTERM"}"#
            )
        );
        assert_eq!(
            ok(&["terminate", "SIGKILL", "a"]),
            want("terminate", r#"{"signal":"SIGKILL","task_id":["a"]}"#)
        );
        assert_eq!(
            ok(&["rate_limit", "celeriac.add", "10/m"]),
            want(
                "rate_limit",
                r#"{"task_name":"celeriac.add","rate_limit":"10/m"}"#
            )
        );
        assert_eq!(
            ok(&["time_limit", "celeriac.sleep", "0.5", "1"]),
            want(
                "time_limit",
                r#"{"task_name":"celeriac.sleep","soft":0.5,"hard":1.0}"#
            )
        );
        assert_eq!(
            ok(&["time_limit", "t", "2"]),
            want("time_limit", r#"{"task_name":"t","soft":2.0,"hard":null}"#)
        );
        assert_eq!(
            ok(&["add_consumer", "q", "ex", "direct"]),
            want(
                "add_consumer",
                r#"{"queue":"q","exchange":"ex","exchange_type":"direct"}"#
            )
        );
        assert_eq!(
            ok(&["cancel_consumer", "q"]),
            want("cancel_consumer", r#"{"queue":"q"}"#)
        );
        assert_eq!(ok(&["pool_grow", "2"]), want("pool_grow", r#"{"n":2}"#));
        assert_eq!(ok(&["pool_shrink"]), want("pool_shrink", r#"{"n":1}"#));
        assert_eq!(
            ok(&["autoscale", "4", "1"]),
            want("autoscale", r#"{"max":4,"min":1}"#)
        );
        assert_eq!(
            ok(&["revoke_by_stamped_headers", "mystamp=v1"]),
            want(
                "revoke_by_stamped_headers",
                r#"{"headers":{"mystamp":"v1"},"terminate":false,"signal":"SIGTERM"}"#
            )
        );
        for m in [
            "enable_events",
            "disable_events",
            "heartbeat",
            "pool_restart",
            "ping",
            "nonexistent_cmd",
        ] {
            assert_eq!(ok(&[m]), want(m, "{}"));
        }
        assert_eq!(ok(&["shutdown"]), ("shutdown".into(), "{}".into(), false));
        assert!(
            sent(&["revoke"])
                .unwrap_err()
                .to_string()
                .starts_with("usage: ")
        );
        assert!(sent(&["time_limit", "t", "soon"]).is_err());
        assert!(sent(&["pool_grow", "many"]).is_err());
        assert!(sent(&["revoke_by_stamped_headers", "novalue"]).is_err());
    }
}
