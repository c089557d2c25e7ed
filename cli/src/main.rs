//! `celeriac`: Rust equivalents of the `celery` command line for people without Python:
//! `call`, `result`, `purge` (and `inspect`, `control`, `events` with the remote-control work).

mod call;
mod control;
mod events;
mod inspect;
mod request;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "celeriac",
    version,
    about = "Celery-compatible command line (Redis broker)."
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
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
