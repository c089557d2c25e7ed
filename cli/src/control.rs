//! `celeriac control <command>`: Celery's `celery control` (revoke, terminate, rate_limit, time_limit,
//! add_consumer, cancel_consumer, enable_events, disable_events, pool_grow, pool_shrink, autoscale, heartbeat,
//! shutdown, revoke_by_stamped_headers, and any other method name), with Celery's output or `--json`.

use anyhow::{Context as _, bail};
use broker::Broker;
use celeriac_control::ControlClient;
use clap::Args;
use serde_json::{Map, Value, json};
use std::process::ExitCode;
use std::time::Duration;

use crate::Cli;
use crate::inspect::print_replies;

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

fn num(s: &str) -> Value {
    s.parse::<i64>()
        .map(Value::from)
        .or_else(|_| s.parse::<f64>().map(Value::from))
        .unwrap_or_else(|_| json!(s))
}

/// The arguments object for a control command from CLI words, as Celery's CLI builds it.
pub fn control_arguments(a: &ControlArgs) -> anyhow::Result<Map<String, Value>> {
    let w = &a.args;
    let need = |n: usize, usage: &str| -> anyhow::Result<()> {
        if w.len() < n {
            bail!("usage: celeriac control {} {usage}", a.method);
        }
        Ok(())
    };
    let mut m = Map::new();
    match a.method.as_str() {
        "revoke" => {
            need(1, "TASK_ID...")?;
            m.insert("task_id".into(), json!(w));
            if a.terminate {
                m.insert("terminate".into(), json!(true));
                m.insert("signal".into(), json!(a.signal));
            }
        }
        "terminate" => {
            need(2, "SIGNAL TASK_ID...")?;
            m.insert("signal".into(), json!(w[0]));
            m.insert("task_id".into(), json!(w[1..]));
        }
        "rate_limit" => {
            need(2, "TASK_NAME RATE_LIMIT")?;
            m.insert("task_name".into(), json!(w[0]));
            m.insert("rate_limit".into(), json!(w[1]));
        }
        "time_limit" => {
            need(2, "TASK_NAME SOFT [HARD]")?;
            m.insert("task_name".into(), json!(w[0]));
            m.insert("soft".into(), num(&w[1]));
            m.insert(
                "hard".into(),
                w.get(2).map(|h| num(h)).unwrap_or(Value::Null),
            );
        }
        "add_consumer" => {
            need(1, "QUEUE [EXCHANGE EXCHANGE_TYPE ROUTING_KEY]")?;
            m.insert("queue".into(), json!(w[0]));
            for (i, k) in ["exchange", "exchange_type", "routing_key"]
                .iter()
                .enumerate()
            {
                if let Some(v) = w.get(i + 1) {
                    m.insert((*k).into(), json!(v));
                }
            }
        }
        "cancel_consumer" => {
            need(1, "QUEUE")?;
            m.insert("queue".into(), json!(w[0]));
        }
        "pool_grow" | "pool_shrink" => {
            m.insert("n".into(), w.first().map(|n| num(n)).unwrap_or(json!(1)));
        }
        "autoscale" => {
            need(2, "MAX MIN")?;
            m.insert("max".into(), num(&w[0]));
            m.insert("min".into(), num(&w[1]));
        }
        "revoke_by_stamped_headers" => {
            need(1, "KEY=VALUE...")?;
            let mut headers = Map::new();
            for kv in w {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("{kv}: expected KEY=VALUE"))?;
                headers.insert(k.into(), json!(v));
            }
            m.insert("headers".into(), Value::Object(headers));
            m.insert("terminate".into(), json!(a.terminate));
            m.insert("signal".into(), json!(a.signal));
        }
        _ => {}
    }
    Ok(m)
}

pub async fn control(cli: &Cli, a: &ControlArgs) -> anyhow::Result<ExitCode> {
    let arguments = control_arguments(a)?;
    let broker = Broker::connect(&cli.broker)
        .await
        .context("connecting to the broker")?;
    let client = ControlClient::new(broker);
    let dest = (!a.destination.is_empty()).then(|| a.destination.clone());
    let timeout = Duration::from_secs_f64(a.timeout.max(0.01));
    if a.method == "shutdown" {
        // Workers do not reply to shutdown (it is a SystemExit in Celery).
        client
            .broadcast(
                &a.method,
                Value::Object(arguments),
                dest,
                false,
                timeout,
                None,
            )
            .await?;
        println!("shutdown sent");
        return Ok(ExitCode::SUCCESS);
    }
    let replies = client
        .broadcast(
            &a.method,
            Value::Object(arguments),
            dest,
            true,
            timeout,
            None,
        )
        .await?;
    Ok(print_replies(cli.json, &replies, false))
}
