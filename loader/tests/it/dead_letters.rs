//! `cowrie-loader dead-letters` over `dead_letter_events` on a real PostgreSQL: a line the parser refuses is
//! listed and shown with its bytes; replaying it while the parser still refuses it changes nothing; a dead letter
//! whose line the parser now reads (as one an older loader refused) is stored as an event exactly once and becomes
//! resolved; `resolve` marks the rest handled.

use std::process::Command;

use store::test_support::TestDb;

use crate::common::*;

fn loader(url: &str, args: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_cowrie-loader"))
        .args(["dead-letters"])
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

const GOOD: &str = r#"{"eventid": "cowrie.session.connect", "timestamp": "2024-01-10T00:00:01.000000Z", "session": "abcd0001", "src_ip": "198.51.100.7", "src_port": 4000, "dst_ip": "10.0.0.1", "dst_port": 22, "sensor": "dls"}"#;
const BAD_TIME: &str = r#"{"eventid": "cowrie.session.closed", "timestamp": "yesterday-ish", "session": "abcd0001", "src_ip": "198.51.100.7", "sensor": "dls"}"#;
const LATER: &str = r#"{"eventid": "cowrie.session.closed", "timestamp": "2024-01-10T00:00:09.000000Z", "session": "abcd0001", "src_ip": "198.51.100.7", "duration": 8.0, "sensor": "dls"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_replay_exactly_once_and_resolve() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let file = dir.path().join("cowrie.json");
    std::fs::write(&file, format!("{GOOD}\n{BAD_TIME}\n")).unwrap();
    let s = bulk(&db.url, "dls", std::slice::from_ref(&file)).await;
    assert_eq!((s.events_inserted, s.dead_letters), (1, 1), "{s:?}");

    let (code, lines) = loader(&db.url, &["list"]);
    assert_eq!(code, 0);
    assert_eq!(lines.last().unwrap()["count"], 1, "{lines:?}");
    let bad = &lines[0];
    assert_eq!(bad["reason"], "invalid_timestamp", "{bad}");
    assert_eq!(
        (bad["line"].as_i64(), bad["resolved"].as_bool()),
        (Some(1), Some(false))
    );
    let bad_id = bad["id"].as_i64().unwrap().to_string();
    let (code, shown) = loader(&db.url, &["show", &bad_id]);
    assert_eq!(code, 0);
    assert_eq!(shown[0]["raw_line"], BAD_TIME);

    // The parser still refuses it: nothing changes.
    let (code, out) = loader(&db.url, &["replay", &bad_id]);
    assert_eq!(code, 1);
    assert_eq!(out[0]["outcome"], "still_fails");
    assert_eq!(out[0]["reason"], "invalid_timestamp");
    assert_eq!(snapshot(&db.url).await.counts.raw_events, 1);

    // A dead letter an older loader left for a line today's parser reads, on the same stream.
    let stream = store::ingest::StreamRef {
        stream_id: bad["stream_id"].as_str().unwrap().into(),
        first_line_hash: String::new(),
        generation: bad["generation"].as_i64().unwrap() as i32,
        source: bad["source"].as_str().unwrap().into(),
        inode: None,
        sensor: "dls".into(),
    };
    let offset = (GOOD.len() + 1 + BAD_TIME.len() + 1) as i64;
    let mut c = connect(&db.url).await;
    store::ingest::commit_batch(
        &mut c,
        &store::ingest::Batch {
            ingest_id: "older-loader".into(),
            stream,
            events: Vec::new(),
            dead_letters: vec![store::ingest::DeadLetterRow {
                offset,
                line: 2,
                reason: "not_cowrie_event".into(),
                detail: Some("refused by an older parser".into()),
                raw: LATER.as_bytes().to_vec(),
                payload: None,
            }],
            // Behind the stream's cursor: the cursor does not move.
            cursor: store::ingest::CursorPos {
                offset: 0,
                line: 0,
                finished: false,
            },
        },
    )
    .await
    .unwrap();
    drop(c);
    let (_, lines) = loader(&db.url, &["list"]);
    assert_eq!(lines.last().unwrap()["count"], 2);
    let later_id = lines[0]["id"].as_i64().unwrap().to_string();
    assert_ne!(later_id, bad_id);

    let (code, out) = loader(&db.url, &["replay", &later_id]);
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out[0]["outcome"], "replayed");
    assert_eq!(out[0]["inserted"], 1);
    let snap = snapshot(&db.url).await;
    assert_eq!(snap.counts.raw_events, 2, "stored once");
    let session = snap
        .sessions
        .iter()
        .find(|s| s.session_id == "abcd0001")
        .expect("session");
    assert_eq!(session.event_count, 2, "{session:?}");
    // Again: it is resolved now, and the event is not stored twice.
    let (code, out) = loader(&db.url, &["replay", &later_id]);
    assert_eq!(
        (code, out[0]["outcome"].as_str()),
        (0, Some("already_resolved"))
    );
    assert_eq!(snapshot(&db.url).await.counts.raw_events, 2);

    // resolve the one the parser refuses; then nothing is open, and --all lists both as resolved.
    let (code, out) = loader(&db.url, &["resolve", &bad_id, "999999"]);
    assert_eq!(code, 1, "an unknown id is reported");
    assert_eq!(out[0]["outcome"], "resolved");
    assert_eq!(out[1]["outcome"], "not_open");
    let (_, open) = loader(&db.url, &["list"]);
    assert_eq!(open.last().unwrap()["count"], 0);
    let (_, all) = loader(&db.url, &["list", "--all"]);
    assert_eq!(all.last().unwrap()["count"], 2);
    assert!(all[..2].iter().all(|d| d["resolved"] == true), "{all:?}");
    let (code, _) = loader(&db.url, &["show", "999999"]);
    assert_eq!(code, 1);
    db.drop_db().await;
}
