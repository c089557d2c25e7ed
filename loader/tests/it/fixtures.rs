//! Every real sample loads with no event lost; sessions agree with the original's
//! golden output wherever the original was right; re-runs change nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDateTime;
use store::test_support::TestDb;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_samples_load_with_no_event_lost_and_reruns_change_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let plain = plain_samples();
    let k = fixtures().join("kareiva-cowrie-logs");
    let mut all = plain.clone();
    all.push(k.join("cowrie.json.2018-05-06.gz"));
    all.push(k.join("cowrie.json.2018-05-06.bz2"));

    let stats = bulk(&db.url, "fx", &all).await;
    let evs: Vec<_> = plain.iter().flat_map(|p| read_events(p)).collect();
    assert_eq!(stats.events_read, evs.len() as u64);
    assert_eq!(stats.events_inserted, evs.len() as u64);
    assert_eq!(stats.dead_letters, 0);

    let mut c = connect(&db.url).await;
    let by_type: BTreeMap<_, _> = store::inspect::event_type_counts(&mut c)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(by_type, count_by(&evs, eventid), "events per type");
    let by_session: BTreeMap<_, _> = store::inspect::session_event_counts(&mut c)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let expect_sessions = count_by(&evs, session);
    assert_eq!(by_session, expect_sessions, "events per session");
    let rows = store::inspect::session_rows(&mut c).await.unwrap();
    assert_eq!(rows.len(), expect_sessions.len());
    for r in &rows {
        assert_eq!(
            r.event_count as i64, expect_sessions[&r.session_id],
            "{}",
            r.session_id
        );
    }
    // The DShield samples carry "sensor": "" -> the --sensor name is used.
    assert!(rows.iter().any(|r| r.sensor == "fx"));
    assert!(rows.iter().any(|r| r.sensor == "920497a79896"));

    // Re-running bulk, then delta over the directories, changes nothing.
    let before = snapshot(&db.url).await;
    let again = bulk(&db.url, "fx", &all).await;
    assert_eq!(again.events_inserted, 0);
    for dir in ["kareiva-cowrie-logs", "lucasfaudman-honeypot-ai"] {
        let d = delta(&db.url, "fx", &fixtures().join(dir)).await;
        assert_eq!(d.events_inserted, 0, "{dir}");
    }
    assert_eq!(snapshot(&db.url).await, before);
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_bzip2_load_exactly_like_the_plain_file() {
    let k = fixtures().join("kareiva-cowrie-logs");
    let plain = read_events(&k.join("cowrie.json.2018-05-06"));
    for name in ["cowrie.json.2018-05-06.gz", "cowrie.json.2018-05-06.bz2"] {
        let Some(db) = TestDb::create().await else {
            return;
        };
        let stats = bulk(&db.url, "fx", &[k.join(name)]).await;
        assert_eq!(stats.events_inserted, plain.len() as u64, "{name}");
        let mut c = connect(&db.url).await;
        let by_type: BTreeMap<_, _> = store::inspect::event_type_counts(&mut c)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(by_type, count_by(&plain, eventid), "{name}");
        drop(c);
        db.drop_db().await;
    }
}

fn golden(name: &str) -> serde_json::Value {
    let p = fixtures()
        .join("golden")
        .join(format!("bulk_default_{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Would the original's validator have dead-lettered this event (F1, F2)?
fn original_rejected(e: &serde_json::Value, unknown: &BTreeSet<String>) -> bool {
    let id = e["eventid"].as_str().unwrap_or("");
    if unknown.contains(id) {
        return true;
    }
    id.starts_with("cowrie.direct-tcpip")
        && e["dst_ip"]
            .as_str()
            .is_some_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_err())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_match_the_original_golden_output_where_it_was_right() {
    for path in plain_samples() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let g = golden(&name);
        let Some(db) = TestDb::create().await else {
            return;
        };
        bulk(&db.url, "fx", std::slice::from_ref(&path)).await;
        let mut c = connect(&db.url).await;
        let ours: BTreeMap<String, store::inspect::SessionRow> =
            store::inspect::session_rows(&mut c)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.session_id.clone(), r))
                .collect();
        let evs = read_events(&path);
        let unknown: BTreeSet<String> = g["dead_letters"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.ends_with("|unknown_event_type"))
            .map(|k| k.split('|').nth(1).unwrap().to_owned())
            .collect();
        let golden_sessions = g["session_summaries"].as_array().unwrap();
        assert_eq!(golden_sessions.len(), ours.len(), "{name}: session count");
        for gs in golden_sessions {
            let sid = gs["session_id"].as_str().unwrap();
            let r = &ours[sid];
            let mine: Vec<_> = evs.iter().filter(|e| e["session"] == sid).collect();
            let kept = mine
                .iter()
                .filter(|e| !original_rejected(e, &unknown))
                .count();
            // Same events once the original's wrongly rejected ones (F1, F2) are removed.
            assert_eq!(
                gs["event_count"].as_i64().unwrap(),
                kept as i64,
                "{name} {sid} golden vs file"
            );
            assert_eq!(
                r.event_count as usize,
                mine.len(),
                "{name} {sid} ours vs file"
            );
            assert_eq!(
                r.login_attempts as i64,
                gs["login_attempts"].as_i64().unwrap(),
                "{name} {sid}"
            );
            assert_eq!(
                r.command_count as i64,
                gs["command_count"].as_i64().unwrap(),
                "{name} {sid}"
            );
            // We also count failed downloads, which the original dead-lettered (F1).
            let failed = mine
                .iter()
                .filter(|e| e["eventid"] == "cowrie.session.file_download.failed")
                .count();
            assert_eq!(
                r.file_downloads as i64,
                gs["file_downloads"].as_i64().unwrap() + failed as i64,
                "{name} {sid}"
            );
            // Risk score: the original's event score (via the analysis crate's defanger), maximum per session.
            assert_eq!(
                r.risk_score.map(i64::from),
                gs["risk_score"].as_i64(),
                "{name} {sid} risk"
            );
            // Sensor: the event's own name, or --sensor where events carry "" (F13).
            assert_eq!(
                r.sensor,
                gs["matcher"].as_str().unwrap_or("fx"),
                "{name} {sid}"
            );
            // Times: equal unless the original dropped the first or last event.
            let parse = |v: &serde_json::Value| {
                NaiveDateTime::parse_from_str(v.as_str().unwrap(), "%Y-%m-%d %H:%M:%S%.f")
                    .unwrap()
                    .and_utc()
            };
            assert!(
                r.first_event_at <= parse(&gs["first_event_at"]),
                "{name} {sid}"
            );
            assert!(
                r.last_event_at >= parse(&gs["last_event_at"]),
                "{name} {sid}"
            );
            let first_kept = mine.iter().position(|e| !original_rejected(e, &unknown));
            if first_kept == Some(0) {
                assert_eq!(
                    r.first_event_at,
                    parse(&gs["first_event_at"]),
                    "{name} {sid}"
                );
            }
        }
        // The same events are quarantined (the original stored them flagged, as we do).
        let quarantined: BTreeMap<String, i64> = store::inspect::quarantined_counts(&mut c)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let golden_q: BTreeMap<String, i64> = g["raw_events_quarantined_by_type"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
            .collect();
        assert_eq!(quarantined, golden_q, "{name}: quarantined per type");
        // Every file the original recorded is here too.
        let files: BTreeSet<(String, String)> = store::inspect::file_rows(&mut c)
            .await
            .unwrap()
            .into_iter()
            .map(|(s, h, _)| (s, h))
            .collect();
        for f in g["files"].as_array().unwrap() {
            let key = (
                f["session_id"].as_str().unwrap().to_owned(),
                f["shasum"].as_str().unwrap().to_owned(),
            );
            assert!(files.contains(&key), "{name}: missing file {key:?}");
        }
        drop(c);
        db.drop_db().await;
    }
}
