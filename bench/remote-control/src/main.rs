//! `celeriac-bench-rc`: the measurements behind `bench/remote-control/run.sh`.
//!
//! - `ping --workers N`: start N `celeriac-worker` processes (or one Python worker with `--python`), then time
//!   `inspect ping` broadcasts until all N replies arrived (`limit = N`, so the 1 s quiet timeout of the CLI is
//!   not counted). Prints one JSON line with p50/p90/max in milliseconds.
//! - `events --kind rust|python [-E]`: one worker with concurrency 2; N tasks are queued while it does not consume
//!   the queue, then `add_consumer` starts the clock; the clock stops when `stats.total` counts N tasks.
//!   Prints one JSON line with tasks per second, with task events on (`-E`) or off.

use anyhow::{Context as _, bail};
use broker::Broker;
use celeriac_control::ControlClient;
use celery_proto::TaskRequest;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Cli {
    #[arg(short = 'b', long, default_value = "redis://127.0.0.1:6390/0")]
    broker: String,
    /// Directory with the celeriac-worker binary.
    #[arg(long, env = "CELERIAC_BIN")]
    bin: PathBuf,
    /// Python interpreter of the venv with Celery 5.7 (for `--python` / `--kind python`).
    #[arg(long, env = "CELERIAC_PYTHON")]
    python: Option<PathBuf>,
    /// Directory holding pytasks.py.
    #[arg(long, default_value = "tests/python")]
    pytasks: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Ping {
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// One Python worker instead of Rust workers.
        #[arg(long)]
        python: bool,
    },
    Events {
        #[arg(long)]
        kind: String,
        #[arg(short = 'E')]
        task_events: bool,
        #[arg(long, default_value_t = 5000)]
        n: usize,
    },
}

/// Kills the children on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rust_worker(cli: &Cli, node: &str, extra: &[&str]) -> anyhow::Result<Child> {
    Command::new(cli.bin.join("celeriac-worker"))
        .args([
            "-b",
            &cli.broker,
            "-n",
            node,
            "--loglevel",
            "warn",
            "--without-mingle",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting celeriac-worker")
}

fn python_worker(cli: &Cli, node: &str, extra: &[&str]) -> anyhow::Result<Child> {
    let py = cli
        .python
        .as_ref()
        .context("--python / CELERIAC_PYTHON is needed")?;
    Command::new(py)
        .args([
            "-m",
            "celery",
            "-A",
            "pytasks",
            "worker",
            "-n",
            node,
            "-l",
            "warning",
            "--without-mingle",
            "--without-gossip",
        ])
        .args(extra)
        .current_dir(&cli.pytasks)
        .env("CELERY_BROKER_URL", &cli.broker)
        .env("CELERY_RESULT_BACKEND", &cli.broker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the Python worker")
}

async fn wait_for_nodes(client: &ControlClient, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = client
            .broadcast(
                "ping",
                json!({}),
                None,
                true,
                Duration::from_millis(500),
                Some(n),
            )
            .await?;
        if got.len() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} workers answer ping", got.len());
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn ping(cli: &Cli, workers: usize, rounds: usize, python: bool) -> anyhow::Result<Value> {
    let broker = Broker::connect(&cli.broker).await?;
    let client = ControlClient::new(Arc::new(broker));
    let mut procs = Procs(Vec::new());
    let n = if python { 1 } else { workers };
    for i in 0..n {
        let node = format!("bench{i}@rc");
        procs.0.push(if python {
            python_worker(cli, &node, &["-c", "1", "-Q", "bench-none"])?
        } else {
            rust_worker(cli, &node, &["-c", "1", "-Q", "bench-none"])?
        });
    }
    wait_for_nodes(&client, n).await?;
    let mut ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let got = client
            .broadcast(
                "ping",
                json!({}),
                None,
                true,
                Duration::from_secs(5),
                Some(n),
            )
            .await?;
        if got.len() < n {
            bail!("{} of {n} replies", got.len());
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    drop(procs);
    Ok(json!({
        "bench": "inspect_ping", "kind": if python { "python-prefork" } else { "rust" }, "workers": n, "rounds": rounds,
        "p50_ms": (percentile(&ms, 0.5) * 100.0).round() / 100.0,
        "p90_ms": (percentile(&ms, 0.9) * 100.0).round() / 100.0,
        "max_ms": (ms[ms.len() - 1] * 100.0).round() / 100.0,
        "loadavg": loadavg(),
    }))
}

async fn events(cli: &Cli, kind: &str, task_events: bool, n: usize) -> anyhow::Result<Value> {
    let broker = Broker::connect(&cli.broker).await?;
    let client = ControlClient::new(Arc::new(broker.clone()));
    let node = format!("ev-{kind}@rc");
    let queue = format!("bench-ev-{kind}");
    let task = if kind == "rust" {
        "celeriac.ping"
    } else {
        "tasks.noop_r"
    };
    broker.purge(&queue).await?;
    let mut extra = vec!["-c", "2", "-Q", "bench-idle"];
    if task_events {
        extra.push("-E");
    }
    let procs = Procs(vec![match kind {
        "rust" => rust_worker(cli, &node, &extra)?,
        "python" => python_worker(cli, &node, &extra)?,
        other => bail!("unknown kind {other}"),
    }]);
    wait_for_nodes(&client, 1).await?;
    for _ in 0..n {
        let req = TaskRequest::new(task.to_string());
        broker.publish(&queue, 0, &req.envelope().encode()).await?;
    }
    let dest = Some(vec![node.clone()]);
    let t = Instant::now();
    let r = client
        .broadcast(
            "add_consumer",
            json!({"queue": queue}),
            dest.clone(),
            true,
            Duration::from_secs(5),
            Some(1),
        )
        .await?;
    if r.is_empty() {
        bail!("add_consumer got no reply");
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = client
            .inspect("stats", json!({}), dest.clone(), Duration::from_secs(5))
            .await?;
        let done = s
            .get(&node)
            .and_then(|v| v["total"][task].as_u64())
            .unwrap_or(0);
        if done as usize >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {done} of {n} tasks done");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(procs);
    Ok(json!({
        "bench": "events_cost", "kind": kind, "task_events": task_events, "n": n, "concurrency": 2,
        "seconds": (secs * 1000.0).round() / 1000.0, "tasks_per_s": (n as f64 / secs).round(),
        "loadavg": loadavg(),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let line = match &cli.cmd {
        Cmd::Ping {
            workers,
            rounds,
            python,
        } => ping(&cli, *workers, *rounds, *python).await?,
        Cmd::Events {
            kind,
            task_events,
            n,
        } => events(&cli, kind, *task_events, *n).await?,
    };
    println!("{line}");
    Ok(())
}
