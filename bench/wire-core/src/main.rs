//! `celeriac-bench`: the Rust side of `bench/wire-core`.
//!
//! - `publish N`: put N task messages (byte-for-byte what Python's `send_task` writes) on a queue, fast, so the
//!   drain benchmark measures the worker and not the publisher. Redis or RabbitMQ, by the broker URL; on Redis the
//!   messages go out 1,000 at a time, one LPUSH per batch (`Client::publish_many`).
//! - `latency N`: sequential round trips (publish, wait for the result through pub/sub) against whatever worker
//!   consumes the queue; prints p50/p90/p99 in microseconds as one JSON line.
//! - `bare-drain N`: RabbitMQ's own limit on this machine: a minimal lapin consumer with the worker's prefetch that
//!   acknowledges each message as it arrives and does nothing else (no decoding, no task); prints the rate.
//! - `redis-limit N`: Redis's own limit for the worker's delivery path on this machine: the worker's consumer loop
//!   (the same pop-and-record script, free prefetch slots taken in one call, the same batched acks and, with
//!   `--results`, the same batched result writes) with no task work; prints the rate and Redis's CPU per message.
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
    RedisLimit {
        n: usize,
        #[arg(long, default_value = "bench")]
        queue: String,
        /// Messages held at once (the worker's prefetch: concurrency × multiplier, 2 × 4 by default).
        #[arg(long, default_value_t = 8)]
        prefetch: usize,
        /// Also store a SUCCESS result per message (the worker's result write, batched the same way).
        #[arg(long)]
        results: bool,
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
            let client = Client::connect(&cli.broker, None).await?;
            client.transport().declare_queue(&queue).await?;
            let t0 = Instant::now();
            let mut all = Vec::with_capacity(n);
            let mut batch = Vec::with_capacity(PUBLISH_BATCH);
            for i in 0..n {
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
                batch.push(req);
                if batch.len() == PUBLISH_BATCH || i + 1 == n {
                    client.publish_many(&batch).await?;
                    batch.clear();
                }
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
        Cmd::RedisLimit {
            n,
            queue,
            prefetch,
            results,
        } => {
            let out = redis_limit(&cli.broker, &queue, n, prefetch, results).await?;
            println!("{out}");
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

/// Messages per batch in `publish` (one LPUSH each on Redis).
const PUBLISH_BATCH: usize = 1000;

/// The worker's delivery path with no task work: take as many messages as there are free prefetch slots in one
/// call of the pop-and-record script, ack each (batched, as the worker's acks are) and, with `results`, store a
/// SUCCESS meta for it (batched, as the worker's result writes are); seconds from the first message to the last
/// settled one, and Redis's CPU over the same span (`INFO cpu`, which counts everything Redis did, so run it alone).
async fn redis_limit(
    url: &str,
    queue: &str,
    n: usize,
    prefetch: usize,
    results: bool,
) -> anyhow::Result<serde_json::Value> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let celeriac_client::connect::BrokerConnection::Redis(redis) =
        celeriac_client::connect::broker(url, celeriac_client::AmqpOptions::default()).await?
    else {
        anyhow::bail!("redis-limit needs a Redis broker URL");
    };
    let transport = celeriac_client::connect::BrokerConnection::Redis(redis.clone()).transport();
    let queues = [queue.to_string()];
    let prefetch = prefetch.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(prefetch));
    let settled = Arc::new(AtomicUsize::new(0));
    let all_settled = Arc::new(tokio::sync::Notify::new());
    let (errors_tx, mut errors_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut taken = 0;
    let mut start = None;
    while taken < n {
        let first = slots.clone().acquire_owned().await?;
        first.forget();
        let free = slots.available_permits().min(prefetch - 1);
        let extra = match slots.clone().try_acquire_many_owned(free as u32) {
            Ok(p) if free > 0 => {
                p.forget();
                free
            }
            _ => 0,
        };
        let want = (1 + extra).min(n - taken);
        slots.add_permits(1 + extra - want);
        let got = transport
            .consume(&queues, want, Duration::from_millis(200))
            .await?;
        if start.is_none() && !got.is_empty() {
            start = Some((Instant::now(), redis.server_cpu_seconds().await?));
        }
        slots.add_permits(want - got.len());
        for d in got {
            taken += 1;
            let (t, r, slots, settled, done, errors) = (
                transport.clone(),
                redis.clone(),
                slots.clone(),
                settled.clone(),
                all_settled.clone(),
                errors_tx.clone(),
            );
            tokio::spawn(async move {
                let outcome = async {
                    let tag = d
                        .tag
                        .ok_or_else(|| "a message without a delivery tag".to_string())?;
                    t.ack(&tag).await.map_err(|e| e.to_string())?;
                    if results {
                        let id = d
                            .message
                            .as_ref()
                            .ok()
                            .and_then(|m| m.headers.get("id"))
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or(&tag)
                            .to_string();
                        let meta = celery_proto::ResultMeta::new(
                            &id,
                            celery_proto::State::Success,
                            serde_json::Value::Null,
                        );
                        r.store_result(&id, &meta.encode(), 86_400)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok::<(), String>(())
                }
                .await;
                if let Err(e) = outcome {
                    let _ = errors.send(e);
                }
                slots.add_permits(1);
                if settled.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    done.notify_one();
                }
            });
        }
    }
    if settled.load(Ordering::SeqCst) < n {
        all_settled.notified().await;
    }
    let (t0, cpu0) = start.expect("n > 0 messages were taken");
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = redis.server_cpu_seconds().await? - cpu0;
    drop(errors_tx);
    if let Some(e) = errors_rx.recv().await {
        anyhow::bail!("settling a message failed: {e}");
    }
    Ok(json!({
        "bench": "redis-limit", "results": results, "n": n, "prefetch": prefetch,
        "seconds": seconds, "tasks_per_s": n as f64 / seconds,
        "redis_cpu_us_per_task": cpu / n as f64 * 1e6,
    }))
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
