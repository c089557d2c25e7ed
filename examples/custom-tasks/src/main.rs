//! A Celery worker with your own tasks written in Rust: the runtime's built-ins (`celeriac.ping`, `celeriac.add`,
//! ...) plus two example tasks, consuming the `celery` queue on Redis. See README.md for how to call them from Python.
//!
//! ```text
//! cargo run -p custom-tasks-example -- redis://127.0.0.1:6379/0
//! ```

use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::watch;
use worker_runtime::{RuntimeConfig, Shutdown, Task, TaskError, TaskRegistry, Worker};

/// Our tasks. Parameters are named like a Python signature, so Python callers may pass them positionally or by
/// keyword; `"name=default"` gives a JSON default. The arguments arrive as one typed tuple.
fn register(reg: &mut TaskRegistry) {
    // An async task: `app.send_task("example.word_count", args=["to be or not to be"])`.
    reg.register(Task::new(
        "example.word_count",
        &["text", "top=3"],
        |_ctx, (text, top): (String, usize)| async move { Ok(word_count(&text, top)) },
    ));
    // A CPU-bound task runs on the blocking pool; it polls `check_stop` so revoke(terminate=True) and soft time
    // limits can stop it. A `TaskError` becomes the Python exception the caller sees.
    reg.register(Task::blocking(
        "example.count_primes",
        &["below"],
        |ctx, (below,): (u64,)| {
            if below > 100_000_000 {
                return Err(TaskError::fail(
                    "ValueError",
                    format!("below must be at most 1e8, got {below}"),
                ));
            }
            let mut composite = vec![false; below as usize];
            let mut count = 0u64;
            for n in 2..below {
                if n % 1_000_000 == 0 {
                    ctx.check_stop()?;
                }
                if !composite[n as usize] {
                    count += 1;
                    (n * n..below)
                        .step_by(n as usize)
                        .for_each(|m| composite[m as usize] = true);
                }
            }
            Ok(json!(count))
        },
    ));
}

/// `{"words": total, "top": [[word, count], ...]}`, most frequent first (ties alphabetical).
fn word_count(text: &str, top: usize) -> Value {
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let total: u64 = counts.values().sum();
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(top);
    json!({"words": total, "top": ranked})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let node = format!("custom@{}", host.trim());

    let mut registry = worker_runtime::default_registry();
    register(&mut registry);

    // Ctrl-C once: warm shutdown (finish running tasks, give the rest back); twice: cold.
    let (tx, shutdown_rx) = watch::channel(Shutdown::Running);
    tokio::spawn(async move {
        for next in [Shutdown::Warm, Shutdown::Cold] {
            if tokio::signal::ctrl_c().await.is_err() {
                break;
            }
            tracing::info!(?next, "shutting down");
            let _ = tx.send(next);
        }
        std::future::pending::<()>().await
    });

    // One Redis connection serves as broker and as result backend.
    let broker = broker::Broker::connect(&url).await?;
    let t: transport::SharedTransport = Arc::new(broker.clone());
    let b: transport::SharedBackend = Arc::new(broker);
    Worker::new(RuntimeConfig::new(&url, &node), registry, t, b, shutdown_rx)
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use worker_runtime::TaskContext;

    /// Call a registered task the way the worker does, without a broker.
    async fn call(name: &str, args: Value, kwargs: Value) -> Result<Value, TaskError> {
        let mut reg = TaskRegistry::new();
        register(&mut reg);
        let ctx = TaskContext::new("test-id", name, 0, "test@host", None);
        let (Value::Array(args), Value::Object(kwargs)) = (args, kwargs) else {
            panic!("args must be a list and kwargs an object");
        };
        reg.get(name)
            .expect("registered")
            .call(ctx, args, kwargs)
            .await
    }

    #[tokio::test]
    async fn word_count_counts_words() {
        let r = call(
            "example.word_count",
            json!(["To be or not to be"]),
            json!({}),
        )
        .await;
        assert_eq!(
            r.unwrap(),
            json!({"words": 6, "top": [["be", 2], ["to", 2], ["not", 1]]})
        );
        let r = call(
            "example.word_count",
            json!([]),
            json!({"text": "a b a", "top": 1}),
        )
        .await;
        assert_eq!(r.unwrap(), json!({"words": 3, "top": [["a", 2]]}));
    }

    #[tokio::test]
    async fn wrong_arguments_fail_like_python() {
        match call("example.word_count", json!([]), json!({})).await {
            Err(TaskError::Fail { exc, .. }) => assert_eq!(
                (exc.exc_type.as_str(), exc.message()),
                (
                    "TypeError",
                    "example.word_count() missing 1 required positional argument: 'text'"
                        .to_string()
                )
            ),
            other => panic!("expected a TypeError, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn count_primes_runs_on_the_blocking_pool() {
        assert_eq!(
            call("example.count_primes", json!([100]), json!({}))
                .await
                .unwrap(),
            json!(25)
        );
        assert!(
            call("example.count_primes", json!([u64::MAX]), json!({}))
                .await
                .is_err()
        );
    }
}
