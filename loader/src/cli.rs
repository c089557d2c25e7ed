//! The command line of `cowrie-loader` and its `run` entry point (used by `main` and tests).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::engine::{Engine, IngestOptions, ensure_schema, expand_logdir, expand_paths};
use crate::generate::{CowrieFormat, GenOptions, generate_file};
use crate::status::exit;

#[derive(Debug, Parser)]
#[command(
    name = "cowrie-loader",
    version,
    about = "Load Cowrie JSON logs into PostgreSQL, exactly once"
)]
pub struct Cli {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", default_value = store::DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,
    /// Read KEY=VALUE lines from this file before the flags (variables already set win); refused unless mode 600.
    #[arg(long, env = "CELERIAC_ENV_FILE", global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending schema migrations.
    Migrate,
    /// Copy an original cowrieprocessor database (SQLite or PostgreSQL) into this schema, exactly once.
    ImportOriginal(crate::import_original::ImportArgs),
    /// Load the given files (and the Cowrie logs in given directories).
    Bulk {
        #[command(flatten)]
        common: CommonArgs,
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Load what is new in a Cowrie log directory (for cron), or in every sensor's with `--all`.
    #[command(mut_arg("sensor", |a| a
        .required(false)
        .required_unless_present("all")
        .default_value("")
        .hide_default_value(true)))]
    Delta {
        #[command(flatten)]
        common: CommonArgs,
        /// Directory holding cowrie.json and its rotated copies.
        #[arg(long, required_unless_present = "all")]
        logdir: Option<PathBuf>,
        #[command(flatten)]
        all: AllArgs,
    },
    /// The lines that could not be stored as events: list, show, replay (parse again, store once), resolve.
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(subcommand)]
        command: crate::dead_letters_cmd::DeadLettersCommand,
    },
    /// Check a sensors file, or print a K3s CronJob per sensor from it.
    Sensors {
        #[command(subcommand)]
        command: crate::sensors_cmd::SensorsCommand,
    },
    /// Write synthetic Cowrie logs (`.gz`/`.bz2` names are compressed).
    Generate {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Approximate number of events (whole sessions are written).
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Cowrie log format: 1, 2 or 3.
        #[arg(long, default_value = "2")]
        format: CowrieFormat,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Value of the events' `sensor` field.
        #[arg(long, default_value = "")]
        sensor: String,
        /// Time of the first event (RFC 3339).
        #[arg(long, default_value = "2024-01-10T00:00:00Z")]
        start: DateTime<Utc>,
    },
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Sensor name, used for events whose `sensor` is empty and to key cursors.
    #[arg(long)]
    pub sensor: String,
    /// Records per transaction.
    #[arg(long, default_value_t = 2000)]
    pub batch_size: usize,
    /// Read and parse, but write nothing (no database needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to keep retrying while PostgreSQL is unreachable.
    #[arg(long, default_value_t = 600)]
    pub max_wait: u64,
    /// Also write the status JSON to this file (atomically).
    #[arg(long)]
    pub status_file: Option<PathBuf>,
    /// Never draw a progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Do not create the schema in an empty database.
    #[arg(long)]
    pub no_migrate: bool,
    /// Testing aid: milliseconds to sleep after each committed batch.
    #[arg(long, default_value_t = 0, hide = true)]
    pub pause_after_batch_ms: u64,
    /// How many files (of different log streams) are read and written at the same time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub files_in_flight: u16,
}

/// `delta --all`: every sensor of a sensors file.
#[derive(Debug, Args)]
pub struct AllArgs {
    /// Load every sensor of the sensors file (instead of `--sensor` and `--logdir`).
    #[arg(long, conflicts_with_all = ["logdir", "sensor"])]
    pub all: bool,
    /// The sensors file of `--all`.
    #[arg(
        long,
        env = "CELERIAC_SENSORS",
        default_value = "sensors.yaml",
        value_name = "FILE"
    )]
    pub sensors: PathBuf,
    /// With `--all`: how many sensors load at the same time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// With `--all`: run again this long after each run ends (`15m`, `1h`), until SIGTERM.
    #[arg(long, requires = "all", value_parser = parse_every, value_name = "DURATION")]
    pub every: Option<Duration>,
    /// With `--all`: serve Prometheus metrics at `http://0.0.0.0:PORT/metrics` while running.
    #[arg(long, requires = "all", value_name = "PORT")]
    pub metrics_port: Option<u16>,
}

fn parse_every(text: &str) -> Result<Duration, String> {
    match crate::sensors::parse_duration(text)? {
        d if d.is_zero() => Err("must be longer than 0".into()),
        d => Ok(d),
    }
}

/// Runs a parsed command line and returns the process exit code.
/// The status line goes to stdout; logs go to stderr.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Migrate => match store::run_migrations(&cli.database_url).await {
            Ok(applied) => {
                println!("{}", serde_json::json!({"migrations_applied": applied}));
                exit::OK
            }
            Err(e) => {
                eprintln!("cowrie-loader: migrate failed: {e}");
                if e.is_retryable() {
                    exit::DB_UNAVAILABLE
                } else {
                    exit::FAILURE
                }
            }
        },
        Command::ImportOriginal(args) => {
            crate::import_original::run_cli(&cli.database_url, args).await
        }
        Command::Generate {
            out,
            events,
            format,
            seed,
            sensor,
            start,
        } => {
            let opts = GenOptions {
                events,
                format,
                seed,
                start,
                sensor,
            };
            match generate_file(&out, &opts) {
                Ok(s) => {
                    println!(
                        "{}",
                        serde_json::json!({"file": out, "events": s.events, "sessions": s.sessions})
                    );
                    exit::OK
                }
                Err(e) => {
                    eprintln!("cowrie-loader: generate failed: {e}");
                    exit::FAILURE
                }
            }
        }
        Command::Bulk { common, paths } => {
            let files = match expand_paths(&paths) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("cowrie-loader: {e}");
                    return exit::FAILURE;
                }
            };
            ingest(&cli.database_url, "bulk", common, files).await
        }
        Command::Sensors { command } => crate::sensors_cmd::run(command),
        Command::DeadLetters { command } => {
            crate::dead_letters_cmd::run(&cli.database_url, command).await
        }
        Command::Delta { common, all, .. } if all.all => {
            let opts = crate::fleet::FleetOptions {
                database_url: cli.database_url.clone(),
                sensors_file: all.sensors,
                parallel: usize::from(all.parallel),
                template: IngestOptions {
                    mode: "delta".into(),
                    sensor: String::new(),
                    batch_size: common.batch_size,
                    dry_run: common.dry_run,
                    max_wait: Duration::from_secs(common.max_wait),
                    progress: false,
                    status_file: None,
                    pause_after_batch: Duration::from_millis(common.pause_after_batch_ms),
                    files_in_flight: usize::from(common.files_in_flight),
                },
                migrate: !common.no_migrate,
                status_file: common.status_file,
            };
            crate::fleet::run(opts, all.every, all.metrics_port).await
        }
        Command::Delta { common, logdir, .. } => {
            let logdir = logdir.unwrap_or_default();
            let files = match expand_logdir(&logdir) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("cowrie-loader: cannot read {}: {e}", logdir.display());
                    return exit::FAILURE;
                }
            };
            ingest(&cli.database_url, "delta", common, files).await
        }
    }
}

async fn ingest(url: &str, mode: &str, common: CommonArgs, files: Vec<PathBuf>) -> i32 {
    let max_wait = Duration::from_secs(common.max_wait);
    let opts = IngestOptions {
        mode: mode.into(),
        sensor: common.sensor,
        batch_size: common.batch_size,
        dry_run: common.dry_run,
        max_wait,
        progress: !common.no_progress && std::io::stderr().is_terminal(),
        status_file: common.status_file,
        pause_after_batch: Duration::from_millis(common.pause_after_batch_ms),
        files_in_flight: usize::from(common.files_in_flight),
    };
    let pool = if opts.dry_run {
        None
    } else {
        if !common.no_migrate
            && let Err((code, msg)) = ensure_schema(url, max_wait).await
        {
            eprintln!("cowrie-loader: {msg}");
            // Cron still gets a status saying why nothing was loaded.
            let stats = crate::status::Stats {
                mode: opts.mode.clone(),
                sensor: opts.sensor.clone(),
                files_seen: files.len() as u64,
                errors: vec![msg],
                exit_code: code,
                ..Default::default()
            };
            if let Some(p) = &opts.status_file {
                let _ = stats.write_file(p);
            }
            println!("{}", stats.to_json_line());
            return code;
        }
        let size = u32::try_from(opts.files_in_flight).unwrap_or(16).max(2);
        Some(store::build_pool(url, size, Duration::from_secs(5)))
    };
    let started_at = chrono::Utc::now();
    let mut engine = Engine::new(pool.clone(), opts);
    let code = engine.run(&files).await;
    if let Some(pool) = &pool {
        crate::fleet::record_run(pool, &engine.stats, started_at).await;
    }
    println!("{}", engine.stats.to_json_line());
    code
}
