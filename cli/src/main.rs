//! `celeriac`: Rust equivalents of the `celery` command line for people without Python:
//! `call`, `result`, `purge` (and `inspect`, `control`, `events` with the remote-control work), and
//! `dead-letters` (list, show, replay, drop, purge the messages workers could not process).

mod call;
mod control;
mod dead_letters;
mod events;
mod inspect;
mod request;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "celeriac",
    version,
    about = "Celery-compatible command line (Redis or RabbitMQ broker)."
)]
pub struct Cli {
    /// Broker URL.
    #[arg(
        short = 'b',
        long,
        global = true,
        env = "CELERY_BROKER_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub broker: String,
    /// Result backend URL (default: the broker URL).
    #[arg(long, global = true, env = "CELERY_RESULT_BACKEND")]
    pub result_backend: Option<String>,
    /// RabbitMQ only: `x-max-priority` of the task queues (Celery's `task_queue_max_priority`); must match the
    /// workers' setting, or RabbitMQ refuses the declaration.
    #[arg(long, global = true, value_parser = clap::value_parser!(u8).range(1..=255))]
    pub task_queue_max_priority: Option<u8>,
    /// RabbitMQ only: `classic` or `quorum` task queues (Celery's `task_default_queue_type`).
    #[arg(long, global = true, default_value = "classic", value_parser = ["classic", "quorum"])]
    pub task_default_queue_type: String,
    /// RabbitMQ only: the kind of each task queue's exchange (Celery's `task_default_exchange_type`); `topic` with
    /// quorum queues sends countdowns through RabbitMQ's native delayed delivery, as Celery 5.5+ does.
    #[arg(long, global = true, default_value = "direct", value_parser = ["direct", "topic"])]
    pub task_default_exchange_type: String,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Read KEY=VALUE lines from this file before the flags (variables already set win); refused unless mode 600.
    #[arg(long, global = true, env = "CELERIAC_ENV_FILE", value_name = "PATH")]
    pub env_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
    /// Publish with OpenTelemetry spans and trace headers (set from the OTEL_* variables, not a flag).
    #[arg(skip)]
    pub tracing: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a task by name (like `celery call`); prints its id, or its result with --wait.
    Call(call::CallArgs),
    /// Show a task's state and result (like `celery result`).
    Result(call::ResultArgs),
    /// Delete all messages waiting in queues (like `celery purge`).
    Purge(call::PurgeArgs),
    /// Ask workers (Rust or Python) for their state (like `celery inspect`).
    Inspect(inspect::InspectArgs),
    /// Steer workers (like `celery control`).
    Control(control::ControlArgs),
    /// Watch the cluster's events (like `celery events`; `--dump` prints each event).
    Events(events::EventsArgs),
    /// The messages workers could not process: list, show, replay, drop, purge.
    #[command(name = "dead-letters")]
    DeadLetters(dead_letters::DeadLettersArgs),
}

impl Cli {
    /// The AMQP queue options from the flags (clap has checked their values).
    pub fn amqp(&self) -> celeriac_client::AmqpOptions {
        celeriac_client::AmqpOptions {
            queues: celery_proto::kombu_amqp::TaskQueueOptions::from_settings(
                self.task_queue_max_priority,
                &self.task_default_queue_type,
                &self.task_default_exchange_type,
            )
            .unwrap_or_default(),
            ..celeriac_client::AmqpOptions::default()
        }
    }

    /// Connect to the broker named by `--broker`, Redis or RabbitMQ.
    pub async fn transport(&self) -> anyhow::Result<transport::SharedTransport> {
        use anyhow::Context as _;
        celeriac_client::connect::transport(&self.broker, self.amqp())
            .await
            .with_context(|| format!("connecting to {}", transport::redact_url(&self.broker)))
    }
}

fn main() -> std::process::ExitCode {
    startup::init_or_exit();
    let mut cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // OpenTelemetry traces when the OTEL_* variables ask for them (docs/tracing.md); flushed when `_otel` drops.
    let _otel = match telemetry::init_from_env("celeriac") {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: OpenTelemetry (OTEL_* variables): {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    cli.tracing = _otel.is_some();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match &cli.command {
            Command::Call(a) => call::call(&cli, a).await,
            Command::Result(a) => call::result(&cli, a).await,
            Command::Purge(a) => call::purge(&cli, a).await,
            Command::Inspect(a) => inspect::inspect(&cli, a).await,
            Command::Control(a) => control::control(&cli, a).await,
            Command::Events(a) => events::events(&cli, a).await,
            Command::DeadLetters(a) => dead_letters::dead_letters(&cli, a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
