//! `celeriac call`, `celeriac result` and `celeriac purge`.

use anyhow::Context as _;
use celeriac_client::{AsyncResult, Client};
use celery_proto::{ResultMeta, State, TaskRequest};
use clap::Args;
use serde_json::{Map, Value, json};
use std::process::ExitCode;
use std::time::Duration;

use crate::Cli;

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Task name, e.g. `tasks.add` or `celeriac.add`.
    pub name: String,
    /// Positional arguments as a JSON list.
    #[arg(short = 'a', long, default_value = "[]")]
    pub args: String,
    /// Keyword arguments as a JSON object.
    #[arg(short = 'k', long, default_value = "{}")]
    pub kwargs: String,
    /// Queue to send to.
    #[arg(short = 'Q', long, default_value = "celery")]
    pub queue: String,
    /// Celery priority 0-9 (on Redis, 0 is served first).
    #[arg(long, default_value_t = 0)]
    pub priority: u8,
    /// Run no sooner than this many seconds from now.
    #[arg(long)]
    pub countdown: Option<f64>,
    /// Run no sooner than this ISO-8601 time.
    #[arg(long)]
    pub eta: Option<String>,
    /// Revoke if not started within this many seconds.
    #[arg(long)]
    pub expires: Option<f64>,
    /// Wait for the result and print it.
    #[arg(short = 'w', long)]
    pub wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct ResultArgs {
    pub task_id: String,
    /// Wait until the task is ready.
    #[arg(short = 'w', long)]
    pub wait: bool,
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Print the traceback of a failed task.
    #[arg(long)]
    pub traceback: bool,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Queues to purge, comma separated.
    #[arg(short = 'Q', long, default_value = "celery", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

async fn client(cli: &Cli) -> anyhow::Result<Client> {
    Client::connect_with(&cli.broker, cli.result_backend.as_deref(), cli.amqp())
        .await
        .map(|c| c.with_tracing(cli.tracing))
        .with_context(|| format!("connecting to {}", transport::redact_url(&cli.broker)))
}

pub async fn call(cli: &Cli, a: &CallArgs) -> anyhow::Result<ExitCode> {
    let args: Vec<Value> = serde_json::from_str(&a.args).context("--args must be a JSON list")?;
    let kwargs: Map<String, Value> =
        serde_json::from_str(&a.kwargs).context("--kwargs must be a JSON object")?;
    anyhow::ensure!(a.priority <= 9, "--priority must be between 0 and 9");
    let mut req = TaskRequest::new(a.name.clone());
    req.args = args;
    req.kwargs = kwargs;
    req.queue = a.queue.clone();
    req.priority = a.priority;
    let now = chrono::Utc::now();
    if let Some(c) = a.countdown {
        req.eta = Some(now + chrono::Duration::milliseconds((c * 1000.0) as i64));
    }
    if let Some(e) = &a.eta {
        req.eta = Some(
            celery_proto::time::parse_iso(e)
                .with_context(|| format!("--eta {e:?} is not an ISO-8601 time"))?,
        );
    }
    if let Some(x) = a.expires {
        req.expires = Some(now + chrono::Duration::milliseconds((x * 1000.0) as i64));
    }
    let client = client(cli).await?;
    if !a.wait {
        let mut r = req.clone();
        r.ignore_result = None;
        client.publish(&r).await?;
        if cli.json {
            println!("{}", json!({"id": req.id}));
        } else {
            println!("{}", req.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut res = client.send(&req).await?;
    if !cli.json {
        eprintln!("{}", req.id);
    }
    let meta = client
        .wait(&mut res, Duration::from_secs_f64(a.timeout), |_| {})
        .await?;
    Ok(print_meta(cli, &meta, false))
}

pub async fn result(cli: &Cli, a: &ResultArgs) -> anyhow::Result<ExitCode> {
    let client = client(cli).await?;
    let meta = if a.wait {
        let mut res = AsyncResult::from_id(&a.task_id);
        client
            .wait(&mut res, Duration::from_secs_f64(a.timeout), |_| {})
            .await?
    } else {
        client
            .meta(&a.task_id)
            .await?
            .unwrap_or_else(|| ResultMeta::new(&a.task_id, State::Pending, Value::Null))
    };
    Ok(print_meta(cli, &meta, a.traceback))
}

/// Print like `celery result`: the value for SUCCESS, the exception for failures; exit 1 unless SUCCESS.
fn print_meta(cli: &Cli, meta: &ResultMeta, traceback: bool) -> ExitCode {
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(&meta.to_value()).unwrap_or_default()
        );
    } else if meta.status == State::Success {
        println!("{}", celery_proto::pyrepr::repr(&meta.result));
    } else if let Some(exc) = meta.exception() {
        println!(
            "{}: {}.{}: {}",
            meta.status,
            exc.exc_module,
            exc.exc_type,
            exc.message()
        );
        if traceback && let Some(tb) = &meta.traceback {
            println!("{tb}");
        }
    } else {
        println!("{}", meta.status);
    }
    if meta.status == State::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub async fn purge(cli: &Cli, a: &PurgeArgs) -> anyhow::Result<ExitCode> {
    if !a.force {
        eprint!(
            "You're about to delete all messages in {:?}. Are you sure? [y/N] ",
            a.queues
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !line.trim().eq_ignore_ascii_case("y") && !line.trim().eq_ignore_ascii_case("yes") {
            return Ok(ExitCode::from(1));
        }
    }
    let client = client(cli).await?;
    let mut total = 0;
    for q in &a.queues {
        total += client.transport().purge(q).await?;
    }
    if cli.json {
        println!("{}", json!({"purged": total, "queues": a.queues}));
    } else if total == 0 {
        println!("No messages purged from {} queue(s).", a.queues.len());
    } else {
        println!(
            "Purged {total} message(s) from {} known task queue(s).",
            a.queues.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
