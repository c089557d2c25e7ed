//! `cowrie-loader dead-letters list | show ID | replay ID... | resolve ID...`: the lines the loader could not
//! store as events (`dead_letter_events`, `docs/loader.md`). `replay` runs a line through today's parser again and
//! stores the event exactly once, resolving the dead letter in the same transaction (`store::dead_letters`);
//! `resolve` marks lines as handled without storing anything. Output is JSON lines.

use clap::Subcommand;
use serde_json::json;
use std::time::Duration;

use crate::status::exit;
use store::dead_letters::{LoaderDeadLetter, ReplayOutcome};

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// The newest open dead letters (`--all`: resolved ones too), one JSON object a line, then the count.
    List {
        /// Include resolved ones.
        #[arg(long)]
        all: bool,
        /// Only this sensor's.
        #[arg(long)]
        sensor: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// One dead letter with its line (`raw_line`, and `raw_base64` when the bytes are not UTF-8).
    Show { id: i64 },
    /// Parse each line again and store the event exactly once; the dead letter becomes resolved.
    Replay {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Mark dead letters handled without storing anything.
    Resolve {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

fn row_json(d: &LoaderDeadLetter) -> serde_json::Value {
    json!({
        "id": d.id,
        "sensor": d.sensor,
        "source": d.source,
        "stream_id": d.stream_id,
        "generation": d.source_generation,
        "offset": d.source_offset,
        "line": d.source_line,
        "reason": d.reason,
        "detail": d.detail,
        "created_at": d.created_at.to_rfc3339(),
        "resolved": d.resolved,
        "resolved_at": d.resolved_at.map(|t| t.to_rfc3339()),
        "size": d.size,
    })
}

/// The loader's parser, as a replay takes it.
fn parse(bytes: &[u8], sensor: &str) -> Result<store::ingest::EventRow, (String, String)> {
    crate::parse::parse_record(bytes, sensor).map_err(|r| (r.reason.to_string(), r.detail))
}

pub async fn run(database_url: &str, command: DeadLettersCommand) -> i32 {
    let pool = store::build_pool(database_url, 2, Duration::from_secs(5));
    let mut conn = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cowrie-loader: the database is unavailable: {e}");
            return exit::DB_UNAVAILABLE;
        }
    };
    let result: Result<i32, store::StoreError> = async {
        match command {
            DeadLettersCommand::List {
                all,
                sensor,
                limit,
                offset,
            } => {
                let (count, rows) = store::dead_letters::list(
                    &mut conn,
                    all,
                    sensor.as_deref(),
                    limit.clamp(0, 10_000),
                    offset.max(0),
                )
                .await?;
                for r in &rows {
                    println!("{}", row_json(r));
                }
                println!("{}", json!({"count": count}));
                Ok(exit::OK)
            }
            DeadLettersCommand::Show { id } => match store::dead_letters::show(&mut conn, id).await? {
                Some((row, raw)) => {
                    let mut v = row_json(&row);
                    v["raw_line"] = json!(String::from_utf8_lossy(&raw));
                    if std::str::from_utf8(&raw).is_err() {
                        v["raw_base64"] = json!(base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            &raw
                        ));
                    }
                    println!("{v}");
                    Ok(exit::OK)
                }
                None => {
                    eprintln!("cowrie-loader: no dead letter {id}");
                    Ok(exit::FAILURE)
                }
            },
            DeadLettersCommand::Replay { ids } => {
                let mut code = exit::OK;
                for id in ids {
                    let out = store::dead_letters::replay(&mut conn, id, parse).await?;
                    let line = match out {
                        ReplayOutcome::Replayed { inserted } => {
                            json!({"id": id, "outcome": "replayed", "inserted": inserted})
                        }
                        ReplayOutcome::StillFails { reason, detail } => {
                            code = exit::FAILURE;
                            json!({"id": id, "outcome": "still_fails", "reason": reason, "detail": detail})
                        }
                        ReplayOutcome::AlreadyResolved => {
                            json!({"id": id, "outcome": "already_resolved"})
                        }
                        ReplayOutcome::NotFound => {
                            code = exit::FAILURE;
                            json!({"id": id, "outcome": "not_found"})
                        }
                    };
                    println!("{line}");
                }
                Ok(code)
            }
            DeadLettersCommand::Resolve { ids } => {
                let done = store::dead_letters::resolve(&mut conn, &ids).await?;
                for id in &ids {
                    let outcome = if done.contains(id) {
                        "resolved"
                    } else {
                        "not_open"
                    };
                    println!("{}", json!({"id": id, "outcome": outcome}));
                }
                Ok(if done.len() == ids.len() {
                    exit::OK
                } else {
                    exit::FAILURE
                })
            }
        }
    }
    .await;
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cowrie-loader: dead-letters: {e}");
            if e.is_retryable() {
                exit::DB_UNAVAILABLE
            } else {
                exit::FAILURE
            }
        }
    }
}
