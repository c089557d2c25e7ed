//! `celeriac dead-letters list | show ID | replay ID... | drop ID... | purge --older-than AGE`: the messages the
//! workers could not process (`docs/dead-letters.md`), through `jobs::DeadLetters` (the same code as the API's
//! admin routes). `--json` prints the entries or outcomes as JSON.

use clap::{Args, Subcommand};
use std::process::ExitCode;

use crate::Cli;

#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    /// The dead-letter store (the workers' default unless they were given another).
    #[arg(long, default_value = celery_proto::keys::DEAD_LETTERS)]
    pub store: String,
    #[command(subcommand)]
    pub command: DeadLettersCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// The newest entries: id, time, queue, worker, reason.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Skip this many of the newest first.
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// One entry with its whole message.
    Show { id: String },
    /// Republish each entry's original message, unchanged, to the queue it came from, and remove the entry.
    Replay {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove entries.
    Drop {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove every entry older than an age (90, 15m, 12h, 7d, 2w).
    Purge {
        #[arg(long, value_parser = transport::parse_age)]
        older_than: std::time::Duration,
    },
}

async fn store(cli: &Cli, name: &str) -> anyhow::Result<jobs::DeadLetters> {
    use anyhow::Context as _;
    use celeriac_client::connect::{self, BrokerConnection};
    let conns = match connect::broker(&cli.broker, cli.amqp())
        .await
        .with_context(|| format!("connecting to {}", transport::redact_url(&cli.broker)))?
    {
        BrokerConnection::Redis(b) => jobs::Connections::from(b),
        c @ BrokerConnection::Amqp(_) => jobs::Connections {
            transport: c.transport(),
            broker_redis: None,
        },
    };
    Ok(jobs::DeadLetters::new(&conns, name))
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

pub async fn dead_letters(cli: &Cli, a: &DeadLettersArgs) -> anyhow::Result<ExitCode> {
    let store = store(cli, &a.store).await?;
    match &a.command {
        DeadLettersCommand::List { limit, offset } => {
            let (count, entries) = store.list(*offset, *limit).await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"count": count, "entries": entries})
                );
            } else {
                for d in &entries {
                    println!(
                        "{}  {}  {}  {}  {}",
                        d.id,
                        d.time.as_deref().unwrap_or("-"),
                        d.queue.as_deref().unwrap_or("-"),
                        d.node.as_deref().unwrap_or("-"),
                        one_line(&d.reason, 100)
                    );
                }
                println!("{count} dead letter(s).");
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadLettersCommand::Show { id } => match store.show(id).await? {
            Some(d) if cli.json => {
                println!("{}", serde_json::to_string(&d)?);
                Ok(ExitCode::SUCCESS)
            }
            Some(d) => {
                println!("id:      {}", d.id);
                println!("reason:  {}", d.reason);
                println!("queue:   {}", d.queue.as_deref().unwrap_or("-"));
                println!("worker:  {}", d.node.as_deref().unwrap_or("-"));
                println!("time:    {}", d.time.as_deref().unwrap_or("-"));
                println!("size:    {} bytes", d.size);
                match &d.message_base64 {
                    Some(b) => println!("message (base64, not UTF-8):\n{b}"),
                    None => println!("message:\n{}", d.message),
                }
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("Error: no dead letter {id}");
                Ok(ExitCode::from(1))
            }
        },
        DeadLettersCommand::Replay { ids } | DeadLettersCommand::Drop { ids } => {
            let out = if matches!(a.command, DeadLettersCommand::Replay { .. }) {
                store.replay(ids).await?
            } else {
                store.drop_ids(ids).await?
            };
            if cli.json {
                println!("{}", serde_json::to_string(&out)?);
            } else {
                for o in &out {
                    match &o.detail {
                        Some(d) => println!("{}: {} ({d})", o.id, o.outcome),
                        None => println!("{}: {}", o.id, o.outcome),
                    }
                }
            }
            let all_done = out
                .iter()
                .all(|o| o.outcome == "replayed" || o.outcome == "dropped");
            Ok(if all_done {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        DeadLettersCommand::Purge { older_than } => {
            let n = store.purge_older_than(*older_than).await?;
            if cli.json {
                println!("{}", serde_json::json!({"purged": n}));
            } else {
                println!("purged {n} dead letter(s).");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
