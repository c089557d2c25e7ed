//! `celeriac-bench`: the Rust side of `bench/wire-core`.
//!
//! - `publish N`: put N task messages (byte-for-byte what Python's `send_task` writes) on a queue, fast, so the
//!   drain benchmark measures the worker and not the publisher. Redis or RabbitMQ, by the broker URL.
//! - `latency N`: sequential round trips (publish, wait for the result through pub/sub) against whatever worker
//!   consumes the queue; prints p50/p90/p99 in microseconds as one JSON line.
//! - `bare-drain N`: RabbitMQ's own limit on this machine: a minimal lapin consumer with the worker's prefetch that
//!   acknowledges each message as it arrives and does nothing else (no decoding, no task); prints the rate.

use celeriac_client::Client;
use celery_proto::TaskRequest;
use clap::{Parser, Subcommand};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Cli {
    #[arg(short = 'b', long, default_value = "redis://127.0.0.1:6379/0")]
    broker: String,
    /// Result backend (default: the broker when it is Redis).
    #[arg(long)]
    result_backend: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Publish {
        n: usize,
        #[arg(long, default_value = "bench")]
        queue: String,
        #[arg(long, default_value = "tasks.noop")]
        task: String,
        #[arg(long)]
        ignore_result: bool,
        /// Give every task an ETA this many seconds ahead (Celery's countdown).
        #[arg(long)]
        countdown: Option<f64>,
        /// Write the task ids, one per line, to this file.
        #[arg(long)]
        ids: Option<std::path::PathBuf>,
    },
    Latency {
        n: usize,
        #[arg(long, default_value = "bench")]
        queue: String,
        #[arg(long, default_value = "tasks.noop_r")]
        task: String,
        #[arg(long, default_value_t = 100)]
        warmup: usize,
    },
    BareDrain {
        n: usize,
        #[arg(long, default_value = "bench")]
        queue: String,
        /// `basic.qos` prefetch (Celery's concurrency × multiplier; the worker's default is 2 × 4).
        #[arg(long, default_value_t = 8)]
        prefetch: u16,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Publish {
            n,
            queue,
            task,
            ignore_result,
            countdown,
            ids,
        } => {
            let broker = celeriac_client::connect::transport(
                &cli.broker,
                celeriac_client::AmqpOptions::default(),
            )
            .await?;
            broker.declare_queue(&queue).await?;
            let t0 = Instant::now();
            let mut all = Vec::with_capacity(n);
            let mut pending = Vec::new();
            for _ in 0..n {
                let mut req = TaskRequest::new(task.clone());
                req.queue = queue.clone();
                if ignore_result {
                    req.ignore_result = Some(true);
                }
                if let Some(c) = countdown {
                    req.eta = Some(
                        chrono::Utc::now() + chrono::Duration::milliseconds((c * 1000.0) as i64),
                    );
                }
                all.push(req.id.clone());
                let b = broker.clone();
                let q = queue.clone();
                let envelope = req.envelope();
                pending.push(tokio::spawn(async move { b.publish(&q, &envelope).await }));
                if pending.len() >= 256 {
                    for p in pending.drain(..) {
                        p.await??;
                    }
                }
            }
            for p in pending {
                p.await??;
            }
            let dt = t0.elapsed().as_secs_f64();
            if let Some(path) = ids {
                std::fs::write(path, all.join("\n"))?;
            }
            println!(
                "{}",
                json!({"published": n, "seconds": dt, "per_second": n as f64 / dt})
            );
        }
        Cmd::Latency {
            n,
            queue,
            task,
            warmup,
        } => {
            let client = Client::connect(&cli.broker, cli.result_backend.as_deref()).await?;
            let mut samples = Vec::with_capacity(n);
            for i in 0..(n + warmup) {
                let mut req = TaskRequest::new(task.clone());
                req.queue = queue.clone();
                let t = Instant::now();
                let meta = client.call(&req, Duration::from_secs(30)).await?;
                let us = t.elapsed().as_secs_f64() * 1e6;
                // A FAILURE (for example NotRegistered) is ready too, but it is not the path this benchmark names.
                anyhow::ensure!(
                    meta.status == celery_proto::State::Success,
                    "task {task} did not succeed: {} {}",
                    meta.status,
                    meta.result
                );
                if i >= warmup {
                    samples.push(us);
                }
            }
            samples.sort_by(|a, b| a.total_cmp(b));
            let q = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
            println!(
                "{}",
                json!({"n": n, "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99), "max_us": q(1.0)})
            );
        }
        Cmd::BareDrain { n, queue, prefetch } => {
            let dt = bare_drain(&cli.broker, &queue, n, prefetch).await?;
            println!(
                "{}",
                json!({"drained": n, "seconds": dt, "per_second": n as f64 / dt, "prefetch": prefetch})
            );
        }
    }
    Ok(())
}

/// Consume `n` messages from `queue` with manual acks, one `basic.ack` per message (as Celery and celeriac do),
/// nothing else; seconds from the first delivery to the last ack.
async fn bare_drain(url: &str, queue: &str, n: usize, prefetch: u16) -> anyhow::Result<f64> {
    use futures_util::StreamExt as _;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions { global: true })
        .await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "bare-drain".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    let mut t0 = None;
    let mut got = 0;
    while got < n {
        let d = consumer
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("consumer ended after {got} messages"))??;
        t0.get_or_insert_with(Instant::now);
        d.ack(BasicAckOptions::default()).await?;
        got += 1;
    }
    let dt = t0.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    let _ = conn.close(200, "done".into()).await;
    Ok(dt)
}
