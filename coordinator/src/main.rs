//! `celeriac-coordinator`: flags and subcommands only; the service is `celeriac_coordinator::run`.

use anyhow::Context as _;
use celeriac_coordinator::{JobStore, Settings};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "celeriac-coordinator",
    version,
    about = "Routes Celery jobs by worker-config.yaml; worker discovery, registration and the management API."
)]
struct Cli {
    #[arg(
        short = 'b',
        long,
        env = "CELERY_BROKER_URL",
        default_value = "redis://127.0.0.1:6379/0",
        global = true
    )]
    broker: String,
    #[arg(long, env = "CELERY_RESULT_BACKEND", global = true)]
    result_backend: Option<String>,
    #[arg(
        long,
        env = "CELERIAC_CONFIG",
        default_value = "./worker-config.yaml",
        global = true
    )]
    config: PathBuf,
    #[arg(short = 'l', long, default_value = "info", global = true)]
    loglevel: String,
    /// Read KEY=VALUE lines from this file before the flags (variables already set win); refused unless mode 600.
    #[arg(long, env = "CELERIAC_ENV_FILE", global = true, value_name = "PATH")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the coordinator (the default).
    Serve {
        #[arg(long, default_value = "0.0.0.0:8082")]
        bind: std::net::SocketAddr,
        /// Key for the admin endpoints; without it they answer `admin_disabled`.
        #[arg(long, env = "CELERIAC_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
        /// Key for submitting and revoking jobs (`POST`/`DELETE /api/v1/jobs`); the admin key works there too.
        /// Without either, job submission answers `jobs_disabled`.
        #[arg(long, env = "CELERIAC_JOB_KEY", hide_env_values = true)]
        job_key: Option<String>,
        /// Seconds between inspect rounds.
        #[arg(long, default_value_t = 5.0)]
        inspect_interval: f64,
        /// Seconds of silence that end an inspect collection.
        #[arg(long, default_value_t = 1.0)]
        inspect_timeout: f64,
        /// Seconds the leader lease lasts without renewal (several coordinators on one broker: a dead leader is
        /// replaced within about this long).
        #[arg(long, env = "CELERIAC_LEASE_TTL", default_value_t = 4.0)]
        lease_ttl: f64,
    },
    /// Validate a worker-config.yaml and print what it defines (exit 1 with line and column if invalid).
    CheckConfig { path: Option<PathBuf> },
    /// Register this machine with a coordinator (worker side): detected cores, memory and accelerator.
    Register {
        /// The coordinator, http://host:8082.
        #[arg(long, env = "CELERIAC_COORDINATOR_URL")]
        url: String,
        #[arg(long, env = "CELERIAC_REGISTRATION_TOKEN", hide_env_values = true)]
        token: String,
        /// The worker's Celery node name (name@host).
        #[arg(long)]
        node: String,
        #[arg(short = 'Q', long, value_delimiter = ',')]
        queues: Vec<String>,
        #[arg(short = 'c', long)]
        concurrency: Option<u32>,
        /// Free-form labels to advertise, comma separated.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
    /// Probe a running coordinator's /healthz on 127.0.0.1 and exit 0 if it answers 2xx (the image's HEALTHCHECK).
    Healthcheck {
        #[arg(long, default_value_t = 8082)]
        port: u16,
        /// `/readyz` also asks the broker.
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
    /// Registration tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token and print it once.
    Create {
        #[arg(long)]
        name: String,
        /// Lifetime in seconds (default 30 days).
        #[arg(long, default_value_t = 30 * 86_400)]
        ttl_secs: u64,
    },
    List,
    /// Replace a token by a new one (the old one is revoked).
    Rotate {
        id: String,
    },
    Revoke {
        id: String,
    },
}

fn main() -> anyhow::Result<()> {
    startup::init_or_exit();
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { port, path }) = &cli.command {
        startup::probe::run_and_exit(*port, path);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.loglevel.to_lowercase()));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .finish()
        .with(broker_amqp::QuietNotFound)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve {
        bind: "0.0.0.0:8082".parse()?,
        admin_key: std::env::var("CELERIAC_ADMIN_KEY").ok(),
        job_key: std::env::var("CELERIAC_JOB_KEY").ok(),
        inspect_interval: 5.0,
        inspect_timeout: 1.0,
        lease_ttl: std::env::var("CELERIAC_LEASE_TTL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4.0),
    });
    match command {
        Command::Healthcheck { .. } => unreachable!("answered in main"),
        Command::CheckConfig { path } => {
            let path = path.unwrap_or(cli.config);
            let c = routing::WorkerConfig::load(&path)?;
            println!(
                "{}: ok ({} workers, profiles: {}, default strategy {})",
                path.display(),
                c.workers.len(),
                c.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
                c.routing.default_strategy.as_str()
            );
            Ok(())
        }
        Command::Register {
            url,
            token,
            node,
            queues,
            concurrency,
            labels,
        } => {
            let mut caps = celeriac_coordinator::register_client::detect();
            caps.labels = labels;
            let answer = celeriac_coordinator::register_client::register(
                &url,
                &token,
                &node,
                &queues,
                concurrency,
                &caps,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Command::Token { action } => {
            // Tokens live with the coordinator's records: in the broker's Redis, or with an AMQP broker in the
            // result backend's.
            let state_url = match &cli.result_backend {
                Some(url) if broker_amqp::is_amqp_url(&cli.broker) => url.as_str(),
                _ => cli.broker.as_str(),
            };
            let broker = broker::Broker::connect(state_url)
                .await
                .context("connecting to Redis")?;
            let store = JobStore::new(broker, 0);
            match action {
                TokenAction::Create { name, ttl_secs } => {
                    let t = store.create_token(&name, ttl_secs, None).await?;
                    println!("{}", serde_json::to_string_pretty(&t)?);
                }
                TokenAction::List => {
                    for t in store.tokens().await? {
                        println!(
                            "{}  {:<20} expires_at={:.0} revoked={}",
                            t.id, t.name, t.expires_at, t.revoked
                        );
                    }
                }
                TokenAction::Rotate { id } => match store.rotate_token(&id).await? {
                    Some(t) => println!("{}", serde_json::to_string_pretty(&t)?),
                    None => anyhow::bail!("no token {id}"),
                },
                TokenAction::Revoke { id } => {
                    if !store.revoke_token(&id).await? {
                        anyhow::bail!("no token {id}");
                    }
                    println!("revoked {id}");
                }
            }
            Ok(())
        }
        Command::Serve {
            bind,
            admin_key,
            job_key,
            inspect_interval,
            inspect_timeout,
            lease_ttl,
        } => {
            let mut settings = Settings::new(cli.config);
            settings.bind = bind;
            settings.admin_key = admin_key.filter(|k| !k.is_empty());
            settings.job_key = job_key.filter(|k| !k.is_empty());
            settings.result_backend = cli.result_backend.filter(|u| *u != cli.broker);
            settings.inspect_interval = Duration::from_secs_f64(inspect_interval.max(0.2));
            settings.inspect_timeout = Duration::from_secs_f64(inspect_timeout.max(0.05));
            settings.lease_ttl = Duration::from_secs_f64(lease_ttl.max(0.5));
            let broker = celeriac_coordinator::Connections::connect(&cli.broker)
                .await
                .with_context(|| format!("connecting to {}", broker::redact(&cli.broker)))?;
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                if let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    tracing::warn!("shutting down");
                    let _ = tx.send(true);
                }
            });
            celeriac_coordinator::run(settings, broker, rx).await?;
            Ok(())
        }
    }
}
