//! Benchmark helper: times ways of writing `raw_events` rows (run by `bench/loader/insert_modes.sh`).
//!
//! Modes, each on an emptied table, `N` rows in batches of `B`:
//! - `unnest`: one `INSERT … SELECT FROM unnest($1::…[], …) ON CONFLICT DO NOTHING` per batch (raw_events only);
//! - `values`: diesel's multi-row `INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING` per batch;
//! - `full`: the loader's real path, [`store::ingest::commit_batch`] (events, session upsert, files, cursor),
//!   and its variant [`store::ingest::commit_batch_sql_aggregate`];
//! - it also writes `rows.csv` for a `COPY` comparison done with psql by the script.
//!
//! Usage: `insert_modes DATABASE_URL N B OUT_DIR`.

use std::io::Write;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use diesel::ExpressionMethods;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use store::ingest::{Batch, CursorPos, EventRow, StreamRef, commit_batch};
use store::schema::raw_events;

fn rows(n: usize) -> Vec<EventRow> {
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2024-01-10T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    (0..n)
        .map(|i| {
            let sid = format!("{:012x}", i / 8);
            let ts = t0 + Duration::milliseconds(i as i64 * 37);
            let et = ["cowrie.session.connect", "cowrie.client.version", "cowrie.login.failed", "cowrie.session.closed"][i % 4];
            let payload = format!(
                r#"{{"eventid":"{et}","username":"root","password":"12345{i}","message":"login attempt [root/12345{i}] failed","sensor":"","timestamp":"{}","src_ip":"192.0.2.{}","session":"{sid}"}}"#,
                ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                i % 250
            );
            EventRow {
                offset: i as i64 * 300,
                line: i as i64,
                payload_hash: format!("{i:032x}"),
                payload,
                session_id: Some(sid),
                event_type: et.into(),
                timestamp: ts,
                src_ip: Some(format!("192.0.2.{}", i % 250)),
                protocol: None,
                username: Some("root".into()),
                password: Some(format!("12345{i}")),
                client_version: None,
                hassh: None,
                duration_seconds: None,
                file: None,
                sensor: "bench".into(),
                risk_score: 0,
                quarantined: false,
            }
        })
        .collect()
}

fn stream() -> StreamRef {
    StreamRef {
        stream_id: "bench:x".into(),
        first_line_hash: "x".into(),
        generation: 0,
        source: "/bench".into(),
        inode: None,
        sensor: "bench".into(),
    }
}

async fn reset(c: &mut AsyncPgConnection) {
    diesel::sql_query("TRUNCATE raw_events, session_summaries, files, ingest_cursors")
        .execute(c)
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, n, b, out) = (
        &args[1],
        args[2].parse().unwrap(),
        args[3].parse::<usize>().unwrap(),
        &args[4],
    );
    let data = rows(n);
    let mut c = AsyncPgConnection::establish(url).await.unwrap();

    // unnest: the events part of the loader's statement alone
    reset(&mut c).await;
    let t = Instant::now();
    for chunk in data.chunks(b) {
        let batch = Batch {
            ingest_id: "b".into(),
            stream: stream(),
            events: chunk.to_vec(),
            dead_letters: vec![],
            cursor: CursorPos {
                offset: 0,
                line: 0,
                finished: false,
            },
        };
        store::ingest::insert_raw_events_only(&mut c, &batch)
            .await
            .unwrap();
    }
    report("unnest (raw_events only)", n, b, t);

    // values: diesel multi-row insert
    reset(&mut c).await;
    let t = Instant::now();
    for chunk in data.chunks(b) {
        let vals: Vec<_> = chunk
            .iter()
            .map(|e| {
                (
                    raw_events::ingest_id.eq("b"),
                    raw_events::source.eq("/bench"),
                    raw_events::stream_id.eq("bench:x"),
                    raw_events::source_generation.eq(0),
                    raw_events::source_offset.eq(e.offset),
                    raw_events::source_line.eq(e.line),
                    raw_events::payload
                        .eq(serde_json::from_str::<serde_json::Value>(&e.payload).unwrap()),
                    raw_events::payload_hash.eq(&e.payload_hash),
                    raw_events::session_id.eq(&e.session_id),
                    raw_events::event_type.eq(&e.event_type),
                    raw_events::event_timestamp.eq(e.timestamp),
                    raw_events::src_ip.eq(&e.src_ip),
                    raw_events::sensor.eq(&e.sensor),
                )
            })
            .collect();
        diesel::insert_into(raw_events::table)
            .values(vals)
            .on_conflict_do_nothing()
            .execute(&mut c)
            .await
            .unwrap();
    }
    report("multi-row VALUES (raw_events only)", n, b, t);

    // full: the loader's real transaction, then the variant aggregating in SQL
    for (name, sql_agg) in [
        (
            "loader transaction, sessions aggregated in Rust (default)",
            false,
        ),
        (
            "loader transaction, sessions aggregated in one SQL statement",
            true,
        ),
    ] {
        reset(&mut c).await;
        let t = Instant::now();
        for (i, chunk) in data.chunks(b).enumerate() {
            let batch = Batch {
                ingest_id: "b".into(),
                stream: stream(),
                events: chunk.to_vec(),
                dead_letters: vec![],
                cursor: CursorPos {
                    offset: (i * b) as i64,
                    line: 0,
                    finished: false,
                },
            };
            if sql_agg {
                store::ingest::commit_batch_sql_aggregate(&mut c, &batch)
                    .await
                    .unwrap();
            } else {
                commit_batch(&mut c, &batch).await.unwrap();
            }
        }
        report(name, n, b, t);
    }
    reset(&mut c).await;

    // CSV for COPY
    let mut f = std::io::BufWriter::new(std::fs::File::create(format!("{out}/rows.csv")).unwrap());
    for e in &data {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        writeln!(
            f,
            "b,/bench,bench:x,0,{},{},{},{},{},{},{},{},bench",
            e.offset,
            e.line,
            q(&e.payload),
            e.payload_hash,
            e.session_id.as_deref().unwrap_or(""),
            e.event_type,
            e.timestamp.to_rfc3339(),
            e.src_ip.as_deref().unwrap_or("")
        )
        .unwrap();
    }
    f.flush().unwrap();
}

fn report(name: &str, n: usize, b: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!("| {name} | {n} | {b} | {s:.2} | {:.0} |", n as f64 / s);
}
