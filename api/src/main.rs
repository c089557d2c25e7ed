//! `celeriac-api`: flags and subcommands only; the service is `celeriac_api::run`.

use anyhow::Context as _;
use celeriac_api::auth::{self, KeyInfo};
use celeriac_api::limits::{KeyLimits, RatePolicy};
use celeriac_api::{Settings, db};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "celeriac-api",
    version,
    about = "The public API: statistics over Cowrie data, findings, analyses as jobs, API keys, OpenAPI, MCP."
)]
struct Cli {
    #[arg(long, env = "DATABASE_URL", default_value = store::DEFAULT_DATABASE_URL, global = true, hide_env_values = true)]
    database_url: String,
    /// Read replica; reads fall back to the primary while it is down.
    #[arg(long, env = "DATABASE_READ_URL", global = true, hide_env_values = true)]
    database_read_url: Option<String>,
    #[arg(
        short = 'b',
        long,
        env = "CELERY_BROKER_URL",
        default_value = "redis://127.0.0.1:6379/0",
        global = true,
        hide_env_values = true
    )]
    broker: String,
    #[arg(
        long,
        env = "CELERY_RESULT_BACKEND",
        global = true,
        hide_env_values = true
    )]
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
    /// Serve the API (the default).
    Serve(ServeArgs),
    /// API keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Probe a running API's /healthz on 127.0.0.1 and exit 0 if it answers 2xx (the image's HEALTHCHECK).
    Healthcheck {
        #[arg(long, default_value_t = 8081)]
        port: u16,
        /// `/readyz` also asks PostgreSQL.
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "0.0.0.0:8081")]
    bind: std::net::SocketAddr,
    /// Also serve on this address (the dashboard's UI service, e.g. 0.0.0.0:8080); same routes and keys.
    #[arg(long)]
    ui_bind: Option<std::net::SocketAddr>,
    /// PostgreSQL connections per pool (primary and replica each).
    #[arg(long, default_value_t = 16)]
    pool_size: u32,
    /// Statement timeout of every read, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    statement_timeout_ms: u64,
    /// Seconds between replica health probes.
    #[arg(long, default_value_t = 2.0)]
    replica_probe_interval: f64,
    /// Default limit of the statistics class.
    #[arg(long, default_value = "100/minute")]
    statistics_rate_limit: String,
    /// Default limit of the analyses class (job submissions).
    #[arg(long, default_value = "5/minute")]
    analyses_rate_limit: String,
    /// Seconds a key look-up is cached (a revocation takes effect within it); 0 = no cache.
    #[arg(long, default_value_t = 2.0)]
    key_cache_secs: f64,
    /// Seconds a read's answer is reused for the same query (0 = every request queries PostgreSQL).
    #[arg(long, default_value_t = 5.0)]
    answer_cache_secs: f64,
    /// Seconds without ingest after which a sensor is `stale`.
    #[arg(long, default_value_t = 7200)]
    stale_after_secs: u64,
    /// HTTP worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    http_workers: usize,
    /// Do not apply pending migrations at start.
    #[arg(long)]
    no_migrate: bool,
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Create a key and print its secret (only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: statistics:read, jobs:write, admin.
        #[arg(long, default_value = "statistics:read")]
        scopes: String,
        /// Days until it expires (default: never).
        #[arg(long)]
        ttl_days: Option<u32>,
        /// `100/minute` (statistics) or `statistics=1000/minute,analyses=10/minute`.
        #[arg(long)]
        rate_limit: Option<String>,
        /// Print JSON (with the secret) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

fn main() -> anyhow::Result<()> {
    startup::init_or_exit();
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { port, path }) = &cli.command {
        startup::probe::run_and_exit(*port, path);
    }
    // rmcp logs every MCP request at info; its warnings and errors are what an operator wants.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},rmcp=warn", cli.loglevel.to_lowercase()))
    });
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
        .enable_all()
        .build()?;
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or_else(|| {
        Command::Serve(ServeArgs {
            bind: "0.0.0.0:8081".parse().expect("address"),
            ui_bind: None,
            pool_size: 16,
            statement_timeout_ms: 10_000,
            replica_probe_interval: 2.0,
            statistics_rate_limit: "100/minute".into(),
            analyses_rate_limit: "5/minute".into(),
            key_cache_secs: 2.0,
            answer_cache_secs: 5.0,
            stale_after_secs: 7200,
            http_workers: 0,
            no_migrate: false,
        })
    });
    match command {
        Command::Healthcheck { .. } => unreachable!("answered in main"),
        Command::Openapi => {
            use utoipa::OpenApi;
            println!(
                "{}",
                celeriac_api::openapi::ApiDoc::openapi().to_pretty_json()?
            );
            Ok(())
        }
        Command::Key { action } => key_command(&cli.database_url, action).await,
        Command::Serve(a) => {
            let mut settings = Settings::new(&cli.database_url, &cli.broker, cli.config);
            settings.bind = a.bind;
            settings.ui_bind = a.ui_bind;
            settings.db = db::DbSettings {
                primary_url: cli.database_url.clone(),
                replica_url: cli.database_read_url.filter(|u| !u.is_empty()),
                pool_size: a.pool_size.max(1),
                statement_timeout: Duration::from_millis(a.statement_timeout_ms.max(1)),
                connect_timeout: Duration::from_secs(5),
                probe_interval: Duration::from_secs_f64(a.replica_probe_interval.max(0.1)),
            };
            settings.result_backend = cli.result_backend.filter(|u| *u != cli.broker);
            settings.statistics_limit = RatePolicy::parse(&a.statistics_rate_limit)
                .map_err(anyhow::Error::msg)
                .context("--statistics-rate-limit")?;
            settings.analyses_limit = RatePolicy::parse(&a.analyses_rate_limit)
                .map_err(anyhow::Error::msg)
                .context("--analyses-rate-limit")?;
            settings.key_cache_ttl = Duration::from_secs_f64(a.key_cache_secs.max(0.0));
            settings.answer_cache_ttl = Duration::from_secs_f64(a.answer_cache_secs.max(0.0));
            settings.stale_after = Duration::from_secs(a.stale_after_secs);
            settings.http_workers = a.http_workers;
            settings.migrate = !a.no_migrate;
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
            celeriac_api::run(settings, rx).await?;
            Ok(())
        }
    }
}

async fn key_command(database_url: &str, action: KeyAction) -> anyhow::Result<()> {
    store::run_migrations(database_url)
        .await
        .context("applying migrations")?;
    let pool = store::build_pool(database_url, 1, Duration::from_secs(5));
    let mut conn = pool.get().await.context("connecting to PostgreSQL")?;
    let now = chrono::Utc::now();
    match action {
        KeyAction::Create {
            name,
            scopes,
            ttl_days,
            rate_limit,
            json,
        } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name is empty");
            let scopes = auth::parse_scopes(&scopes)
                .map_err(anyhow::Error::msg)
                .context("--scopes")?;
            if let Some(r) = &rate_limit {
                KeyLimits::parse(r)
                    .map_err(anyhow::Error::msg)
                    .context("--rate-limit")?;
            }
            anyhow::ensure!(ttl_days != Some(0), "--ttl-days must be at least 1");
            let (row, secret) = auth::new_key(&name, &scopes, ttl_days, rate_limit.as_deref(), now);
            store::api_keys::insert_key(&mut conn, &row).await?;
            let info = KeyInfo::of(&row, now);
            if json {
                let mut v = serde_json::to_value(&info)?;
                v["key"] = secret.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{secret}");
                eprintln!(
                    "created key {} ({}) with scopes {}; the secret above is shown only now",
                    info.id,
                    info.name,
                    info.scopes.join(",")
                );
            }
        }
        KeyAction::List { json } => {
            let rows = store::api_keys::list_keys(&mut conn).await?;
            let infos: Vec<KeyInfo> = rows.iter().map(|r| KeyInfo::of(r, now)).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&infos)?);
            } else {
                for k in infos {
                    println!(
                        "{}  {:<20} {:<8} {:<32} prefix={} expires={} rate_limit={}",
                        k.id,
                        k.name,
                        k.status,
                        k.scopes.join(","),
                        k.prefix,
                        k.expires_at
                            .map(|t| t.to_rfc3339())
                            .unwrap_or("never".into()),
                        k.rate_limit.unwrap_or("default".into())
                    );
                }
            }
        }
        KeyAction::Revoke { id } => {
            if !store::api_keys::revoke_key(&mut conn, &id).await? {
                anyhow::bail!("no key {id}");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}
