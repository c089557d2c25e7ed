//! `celeriac-worker`: the command line of `celery worker`, for Rust tasks. Parses flags, sets up logging and
//! signals, connects to the broker (Redis, or RabbitMQ with the `amqp` feature, chosen by URL scheme) and the
//! result backend (Redis), registers the built-in tasks and the Cowrie analyses
//! (`cowrie-tasks`), and runs the runtime's worker (`worker-runtime`). A user's own worker binary does the same
//! with its own tasks (see `examples/custom-tasks`).

use anyhow::Context as _;
use clap::Parser;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use transport::{Backoff, SharedBackend, SharedTransport};
use worker_runtime::config::expand_node_name;
use worker_runtime::{RuntimeConfig, Shutdown, Worker};

/// mimalloc instead of glibc's malloc: the worker allocates many small, short-lived buffers per message, and glibc
/// malloc was about a quarter of its CPU per task in `bench/wire-core` (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "celeriac-worker",
    version,
    about = "A Celery-compatible worker for Rust tasks (Redis or RabbitMQ broker)."
)]
struct Cli {
    /// Broker URL: redis://[:password@]host[:port][/db], rediss://..., redis+sentinel://h1:26379,h2/master[/db], or
    /// amqp://user:pass@host:5672/vhost (`//` at the end is the vhost `/`).
    #[arg(
        short = 'b',
        long,
        env = "CELERY_BROKER_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    broker: String,
    /// Result backend URL (default: the broker URL; with an AMQP broker set it to redis://...).
    #[arg(long, env = "CELERY_RESULT_BACKEND")]
    result_backend: Option<String>,
    /// AMQP only: `x-max-priority` of the task queues (Celery's task_queue_max_priority; must match what other
    /// Celery processes declare for the same queues).
    #[arg(long, env = "CELERIAC_TASK_QUEUE_MAX_PRIORITY")]
    task_queue_max_priority: Option<u8>,
    /// AMQP only: classic or quorum task queues (Celery's task_default_queue_type).
    #[arg(long, default_value = "classic", value_parser = ["classic", "quorum"])]
    task_default_queue_type: String,
    /// AMQP only: the kind of each task queue's exchange (Celery's task_default_exchange_type); `topic` with quorum
    /// queues turns on Celery 5.5+'s native delayed delivery for countdowns and ETAs.
    #[arg(long, default_value = "direct", value_parser = ["direct", "topic"])]
    task_default_exchange_type: String,
    /// Queues to consume, comma separated. The worker-direct queue <node>.dq2 is always added.
    #[arg(short = 'Q', long, default_value = "celery", value_delimiter = ',')]
    queues: Vec<String>,
    /// Number of tasks run at the same time.
    #[arg(short = 'c', long, default_value_t = default_concurrency())]
    concurrency: usize,
    /// Node name; %h = host name, %n = short host name, %d = domain.
    #[arg(short = 'n', long = "hostname", default_value = "celery@%h")]
    node_name: String,
    /// Send task events (worker events are always sent).
    #[arg(short = 'E', long = "task-events")]
    task_events: bool,
    #[arg(long, default_value_t = 4)]
    prefetch_multiplier: usize,
    /// Seconds after which a dead consumer's unacknowledged messages are delivered again.
    #[arg(long, default_value_t = 3600.0)]
    visibility_timeout: f64,
    /// Seconds between worker-heartbeat events.
    #[arg(long, default_value_t = 2.0)]
    heartbeat_interval: f64,
    /// Seconds results are kept in the backend (0 = forever).
    #[arg(long, default_value_t = 86_400)]
    result_expires: u64,
    /// Results larger than this many bytes (encoded) are not stored; the task fails with a ValueError saying so
    /// (0 = no limit).
    #[arg(long, default_value_t = 64 << 20)]
    result_max_bytes: usize,
    /// Remote-control replies larger than this many bytes (JSON) are not sent; the client gets an error reply
    /// saying so (0 = no limit).
    #[arg(long, default_value_t = 16 << 20)]
    pidbox_reply_max_bytes: usize,
    /// Hold at most this many tasks waiting for their ETA in memory; beyond, the worker stops taking messages until
    /// some are due, and the rest waits in the broker.
    #[arg(long, default_value_t = 10_000)]
    eta_hold_max: usize,
    /// Keep at most this many dead letters; the oldest are dropped beyond it, logged and counted (0 = no bound).
    #[arg(long, default_value_t = 100_000)]
    dead_letter_max: u64,
    /// Drop dead letters older than this (90, 15m, 12h, 7d, 2w; 0 = keep them until dropped by hand).
    #[arg(long, default_value = "30d", value_parser = transport::parse_age)]
    dead_letter_max_age: std::time::Duration,
    /// Store name, args, kwargs, worker, retries and queue with results (Celery's result_extended).
    #[arg(long)]
    result_extended: bool,
    /// Store a STARTED state when a task starts (Celery's task_track_started).
    #[arg(long)]
    track_started: bool,
    /// Acknowledge tasks after they ran, so a crash redelivers them (Celery's task_acks_late).
    #[arg(long)]
    acks_late: bool,
    #[arg(short = 'l', long, default_value = "info")]
    loglevel: String,
    #[arg(short = 'f', long)]
    logfile: Option<std::path::PathBuf>,
    #[arg(long)]
    pidfile: Option<std::path::PathBuf>,
    /// Run in the background (the parent exits once the child is started).
    #[arg(long)]
    detach: bool,
    /// Take queues and concurrency from a profile of worker-config.yaml.
    #[arg(long)]
    profile: Option<String>,
    #[arg(long)]
    without_mingle: bool,
    /// PostgreSQL for the analysis tasks.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://127.0.0.1/celeriac"
    )]
    database_url: String,
    /// Read replica for the analysis reads (falls back to the primary when it does not answer).
    #[arg(long, env = "DATABASE_READ_URL")]
    database_read_url: Option<String>,
    /// Threads of the async runtime (1 = a single-threaded event loop; CPU-bound tasks use the blocking pool).
    #[arg(long, default_value_t = 1)]
    runtime_threads: usize,
    #[arg(long)]
    without_gossip: bool,
    /// Serve Prometheus metrics on this port (GET /metrics); off by default.
    #[arg(long, env = "CELERIAC_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// Probe this worker's metrics endpoint on 127.0.0.1:<metrics port> and exit 0 if it answers (the image's
    /// HEALTHCHECK); needs --metrics-port or CELERIAC_METRICS_PORT.
    #[arg(long)]
    healthcheck: bool,
    /// Read KEY=VALUE lines from this file before the flags (variables already set win); refused unless mode 600.
    #[arg(long, env = "CELERIAC_ENV_FILE", value_name = "PATH")]
    env_file: Option<std::path::PathBuf>,
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn main() -> anyhow::Result<()> {
    startup::init_or_exit();
    let mut cli = Cli::parse();
    if cli.healthcheck {
        let Some(port) = cli.metrics_port else {
            anyhow::bail!(
                "--healthcheck needs --metrics-port or CELERIAC_METRICS_PORT (the probe asks /metrics)"
            );
        };
        startup::probe::run_and_exit(port, "/metrics");
    }
    if cli.detach {
        return detach();
    }
    init_logging(&cli)?;
    if let Some(name) = &cli.profile {
        // Queues and concurrency come from the profile (CELERIAC_CONFIG, default ./worker-config.yaml).
        let path = std::env::var("CELERIAC_CONFIG")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "worker-config.yaml".to_string());
        let wc = routing::WorkerConfig::load(std::path::Path::new(&path))?;
        let profile = wc.profile(name, &path)?;
        cli.queues = profile.queues.clone();
        cli.concurrency = profile.concurrency.0 as usize;
        tracing::info!(profile = %name, config = %path, queues = ?cli.queues, concurrency = cli.concurrency, "using worker profile");
    }
    if let Some(p) = &cli.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pidfile {}", p.display()))?;
    }
    let host = celery_proto::hostname();
    let mut config = RuntimeConfig::new(&cli.broker, &expand_node_name(&cli.node_name, &host));
    config.result_backend = cli
        .result_backend
        .clone()
        .unwrap_or_else(|| cli.broker.clone());
    config.queues = cli
        .queues
        .iter()
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .collect();
    config.concurrency = cli.concurrency.max(1);
    config.task_events = cli.task_events;
    config.prefetch_multiplier = cli.prefetch_multiplier.max(1);
    config.visibility_timeout = cli.visibility_timeout;
    config.heartbeat_interval = cli.heartbeat_interval;
    config.result_expires = cli.result_expires;
    config.result_max_bytes = cli.result_max_bytes;
    config.pidbox_reply_max_bytes = cli.pidbox_reply_max_bytes;
    config.eta_hold_max = cli.eta_hold_max;
    config.dead_letter_bounds = transport::DeadLetterBounds {
        max_entries: cli.dead_letter_max,
        max_age: Some(cli.dead_letter_max_age).filter(|a| !a.is_zero()),
    };
    config.result_extended = cli.result_extended;
    config.track_started = cli.track_started;
    config.acks_late = cli.acks_late;
    config.without_mingle = cli.without_mingle;
    config.without_gossip = cli.without_gossip;
    config.metrics_port = cli.metrics_port;
    // OpenTelemetry traces when the OTEL_* variables ask for them (docs/tracing.md); the guard flushes the last spans
    // when main returns.
    let otel =
        telemetry::init_from_env("celeriac-worker").context("OpenTelemetry (OTEL_* variables)")?;
    config.tracing = otel.is_some();

    // The async side (fetching, acking, results, events, pidbox) is I/O and runs best on one thread: no
    // cross-thread wake-ups per message. CPU-bound tasks run on the blocking pool (Task::blocking), bounded by -c.
    let (database_url, database_read_url) =
        (cli.database_url.clone(), cli.database_read_url.clone());
    let cli_broker = BrokerChoice::from_cli(&cli, &config)?;
    let runtime = if cli.runtime_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(config.concurrency.max(1) + 4)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.runtime_threads)
            .max_blocking_threads(config.concurrency.max(1) + 4)
            .enable_all()
            .build()?
    };
    let result = runtime.block_on(async move {
        let (tx, rx) = watch::channel(Shutdown::Running);
        let tx = std::sync::Arc::new(tx);
        tokio::spawn(signals(tx.clone()));
        let mut registry = worker_runtime::default_registry();
        // The cowrieprocessor analyses; the pool connects lazily and the schema is prepared in the background, so
        // a worker without PostgreSQL still starts and those tasks fail with a clear OperationalError until the
        // database answers.
        let db = cowrie_tasks::AnalysisDb::new(&database_url, database_read_url.as_deref());
        cowrie_tasks::register(&mut registry, db.clone());
        // The analyses' parallel loops use at most as many threads as the worker's concurrency.
        cowrie_tasks::set_cpu_threads(config.concurrency);
        cowrie_tasks::spawn_prepare(db);
        let (transport, backend) = connect_broker_and_backend(&cli_broker, &config, &rx).await?;
        let worker = Worker::new(config, registry, transport, backend, rx);
        // The `shutdown` control command asks for a warm shutdown.
        let mut asked = worker.state().shutdown_requests();
        tokio::spawn(async move {
            if asked.wait_for(|v| *v).await.is_ok() {
                tx.send_if_modified(|s| {
                    let changed = *s == Shutdown::Running;
                    *s = (*s).max(Shutdown::Warm);
                    changed
                });
            }
        });
        worker.run().await
    });
    if let Some(p) = &cli.pidfile {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// Which broker the URL names, with the AMQP settings that shape its declarations.
enum BrokerChoice {
    Redis,
    #[cfg(feature = "amqp")]
    Amqp(broker_amqp::AmqpOptions),
}

impl BrokerChoice {
    fn from_cli(cli: &Cli, config: &RuntimeConfig) -> anyhow::Result<BrokerChoice> {
        let url = config.broker_url.as_str();
        let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
        if !matches!(scheme.as_str(), "amqp" | "amqps" | "pyamqp") {
            return Ok(BrokerChoice::Redis);
        }
        #[cfg(feature = "amqp")]
        {
            let prefetch =
                (config.concurrency * config.prefetch_multiplier).min(u16::MAX as usize) as u16;
            Ok(BrokerChoice::Amqp(broker_amqp::AmqpOptions {
                prefetch,
                queues: celery_proto::kombu_amqp::TaskQueueOptions::from_settings(
                    cli.task_queue_max_priority,
                    &cli.task_default_queue_type,
                    &cli.task_default_exchange_type,
                )
                .map_err(anyhow::Error::msg)?,
            }))
        }
        #[cfg(not(feature = "amqp"))]
        {
            let _ = cli;
            anyhow::bail!(
                "{}: this celeriac-worker was built without the `amqp` feature",
                transport::redact_url(url)
            )
        }
    }
}

/// Connect to the broker and the result backend (Redis, or `rpc://` with an AMQP broker), retrying while they are
/// down.
async fn connect_broker_and_backend(
    choice: &BrokerChoice,
    config: &RuntimeConfig,
    shutdown: &watch::Receiver<Shutdown>,
) -> anyhow::Result<(SharedTransport, SharedBackend)> {
    let backend_url = config.result_backend.as_str();
    let backend_scheme = backend_url
        .split("://")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let rpc = backend_scheme == "rpc";
    match choice {
        BrokerChoice::Redis => {
            if rpc {
                anyhow::bail!(
                    "the rpc:// result backend needs an AMQP broker (amqp://...); with Redis use a Redis result backend"
                );
            }
            let broker = connect_with_retry(&config.broker_url, shutdown)
                .await
                .context("connecting to the broker")?;
            let backend = if backend_url == config.broker_url {
                broker.clone()
            } else {
                connect_with_retry(backend_url, shutdown)
                    .await
                    .context("connecting to the result backend")?
            };
            Ok((Arc::new(broker), Arc::new(backend)))
        }
        #[cfg(feature = "amqp")]
        BrokerChoice::Amqp(opts) => {
            if !rpc && (backend_url == config.broker_url || broker_amqp::is_amqp_url(backend_url)) {
                anyhow::bail!(
                    "an AMQP broker is not a result backend: set --result-backend (or CELERY_RESULT_BACKEND) to rpc:// or redis://..."
                );
            }
            let broker = retry("RabbitMQ", &config.broker_url, shutdown, || {
                broker_amqp::AmqpTransport::connect(&config.broker_url, *opts)
            })
            .await
            .context("connecting to the broker")?;
            let backend: SharedBackend = if rpc {
                // Results go to each task's reply_to on the broker's own connection; a worker reads no replies.
                Arc::new(broker_amqp::RpcBackend::new(broker.clone(), ""))
            } else {
                Arc::new(
                    connect_with_retry(backend_url, shutdown)
                        .await
                        .context("connecting to the result backend")?,
                )
            };
            Ok((Arc::new(broker), backend))
        }
    }
}

/// Connect, retrying with backoff while Redis is down, until connected or shut down.
async fn connect_with_retry(
    url: &str,
    shutdown: &watch::Receiver<Shutdown>,
) -> anyhow::Result<broker::Broker> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match broker::Broker::connect(url).await {
            Ok(b) => return Ok(b),
            Err(e) if e.is_transient() && *shutdown.borrow() == Shutdown::Running => {
                tracing::warn!(url = %transport::redact_url(url), error = %e, retry_in = ?backoff.peek(), "cannot reach Redis; retrying");
                backoff.wait().await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Retry `connect` with backoff while it fails with a transient error, until connected or shut down.
#[cfg(feature = "amqp")]
async fn retry<T, F, Fut>(
    what: &str,
    url: &str,
    shutdown: &watch::Receiver<Shutdown>,
    mut connect: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = transport::Result<T>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match connect().await {
            Ok(t) => return Ok(t),
            Err(e) if e.is_transient() && *shutdown.borrow() == Shutdown::Running => {
                tracing::warn!(url = %transport::redact_url(url), error = %e, retry_in = ?backoff.peek(), "cannot reach {what}; retrying");
                backoff.wait().await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// SIGTERM/SIGINT: warm shutdown; a second one or SIGQUIT: cold. SIGHUP: nothing to reload yet, say so.
async fn signals(tx: std::sync::Arc<watch::Sender<Shutdown>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        let next = tokio::select! {
            _ = term.recv() => None,
            _ = int.recv() => None,
            _ = quit.recv() => Some(Shutdown::Cold),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: nothing to reload in this worker build");
                continue;
            }
        };
        let now = *tx.borrow();
        let target = next.unwrap_or(if now == Shutdown::Running {
            Shutdown::Warm
        } else {
            Shutdown::Cold
        });
        tracing::warn!(?target, "shutdown requested");
        let _ = tx.send(target.max(now));
    }
}

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.loglevel.to_lowercase()));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // lapin's error line for a missing queue's depth (an expected 404) stays out of the log.
    #[cfg(feature = "amqp")]
    let quiet = broker_amqp::QuietNotFound;
    #[cfg(not(feature = "amqp"))]
    let quiet = tracing_subscriber::layer::Identity::new();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match &cli.logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .finish()
                .with(quiet)
                .init();
        }
        None => builder
            .with_writer(std::io::stderr)
            .finish()
            .with(quiet)
            .init(),
    }
    Ok(())
}

/// Re-run ourselves without --detach in a new process group, detached from the terminal.
fn detach() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the detached worker")?;
    println!("{}", child.id());
    Ok(())
}
