//! Store tests against a real PostgreSQL: batch commits are idempotent, and the
//! analysis reads and writes round-trip.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use store::analysis::{
    NewLongtailAnalysis, NewLongtailDetection, insert_botnet_detection, insert_longtail_analysis,
    insert_snowshoe_detection, sessions_in_window,
};
use store::ingest::{Batch, CursorPos, EventRow, FileRef, StreamRef, commit_batch, load_cursor};
use store::test_support::TestDb;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-01-10T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn ev(
    offset: i64,
    session: &str,
    sensor: &str,
    et: &str,
    secs: i64,
    extra: serde_json::Value,
) -> EventRow {
    let mut payload = json!({"eventid": et, "session": session, "src_ip": "192.0.2.7"});
    if let (Some(p), Some(x)) = (payload.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            p.insert(k.clone(), v.clone());
        }
    }
    let s = |k: &str| extra.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    EventRow {
        offset,
        line: offset,
        payload_hash: format!("{offset:032x}"),
        payload: payload.to_string(),
        session_id: Some(session.into()),
        event_type: et.into(),
        timestamp: t0() + Duration::seconds(secs),
        src_ip: Some("192.0.2.7".into()),
        protocol: s("protocol"),
        username: s("username"),
        password: s("password"),
        client_version: s("version"),
        hassh: s("hassh"),
        duration_seconds: extra.get("duration").and_then(|v| v.as_f64()),
        file: s("shasum").map(|sha| FileRef {
            shasum: sha,
            direction: "download".into(),
            url: s("url"),
            ..FileRef::default()
        }),
        sensor: sensor.into(),
        risk_score: 0,
        quarantined: false,
    }
}

fn batch(events: Vec<EventRow>, end: i64) -> Batch {
    Batch {
        ingest_id: "test".into(),
        stream: StreamRef {
            stream_id: "s1:abc".into(),
            first_line_hash: "abc".into(),
            generation: 0,
            source: "/tmp/cowrie.json".into(),
            inode: Some("1:2".into()),
            sensor: "s1".into(),
        },
        events,
        dead_letters: vec![],
        cursor: CursorPos {
            offset: end,
            line: end,
            finished: false,
        },
    }
}

fn sample() -> Vec<EventRow> {
    let sha = "ab".repeat(32);
    vec![
        ev(
            0,
            "aaaaaaaaaaaa",
            "s1",
            "cowrie.session.connect",
            0,
            json!({"protocol": "ssh"}),
        ),
        ev(
            1,
            "aaaaaaaaaaaa",
            "s1",
            "cowrie.client.version",
            1,
            json!({"version": "SSH-2.0-Go"}),
        ),
        ev(
            2,
            "aaaaaaaaaaaa",
            "s1",
            "cowrie.client.kex",
            1,
            json!({"hassh": "h1"}),
        ),
        ev(
            3,
            "aaaaaaaaaaaa",
            "s1",
            "cowrie.login.failed",
            2,
            json!({"username": "root", "password": "1"}),
        ),
        ev(
            4,
            "aaaaaaaaaaaa",
            "s1",
            "cowrie.login.success",
            3,
            json!({"username": "root", "password": "2"}),
        ),
        ev(
            5,
            "aaaaaaaaaaaa",
            "s1",
            "cowrie.command.input",
            4,
            json!({"input": "uname -a"}),
        ),
        ev(
            6,
            "aaaaaaaaaaaa",
            "s1",
            "cowrie.command.input",
            5,
            json!({"input": "wget http://x/y"}),
        ),
        ev(
            7,
            "aaaaaaaaaaaa",
            "s1",
            "cowrie.session.file_download",
            6,
            json!({"url": "http://x/y", "shasum": sha}),
        ),
        ev(
            8,
            "aaaaaaaaaaaa",
            "s1",
            "cowrie.session.closed",
            7,
            json!({"duration": 7.0}),
        ),
        ev(
            9,
            "bbbbbbbbbbbb",
            "s2",
            "cowrie.session.connect",
            100,
            json!({"protocol": "telnet"}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_twice_counts_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut c = db.connect().await;
    let b = batch(sample(), 900);
    let first = commit_batch(&mut c, &b).await.unwrap();
    assert_eq!(
        (
            first.inserted,
            first.duplicates,
            first.sessions_touched,
            first.files_inserted
        ),
        (10, 0, 2, 1)
    );
    let second = commit_batch(&mut c, &b).await.unwrap();
    assert_eq!(
        (second.inserted, second.duplicates, second.sessions_touched),
        (0, 10, 0)
    );
    let rows = store::inspect::session_rows(&mut c).await.unwrap();
    let a = &rows[0];
    assert_eq!(
        (
            a.event_count,
            a.command_count,
            a.login_attempts,
            a.file_downloads
        ),
        (9, 2, 2, 1)
    );
    assert_eq!(
        (
            a.username.as_deref(),
            a.password.as_deref(),
            a.login_success
        ),
        (Some("root"), Some("2"), true)
    );
    assert_eq!(
        (a.client_version.as_deref(), a.hassh.as_deref()),
        (Some("SSH-2.0-Go"), Some("h1"))
    );
    assert_eq!(
        (a.protocol.as_deref(), a.duration_seconds),
        (Some("ssh"), Some(7.0))
    );
    assert_eq!(rows[1].sensor, "s2");
    let cur = load_cursor(&mut c, "s1:abc").await.unwrap().unwrap();
    assert_eq!((cur.last_offset, cur.generation), (900, 0));
    // The cursor never moves backwards.
    let mut back = batch(vec![], 100);
    back.cursor.offset = 100;
    commit_batch(&mut c, &back).await.unwrap();
    assert_eq!(
        load_cursor(&mut c, "s1:abc")
            .await
            .unwrap()
            .unwrap()
            .last_offset,
        900
    );
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_reads_sessions_and_stores_results() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut c = db.connect().await;
    commit_batch(&mut c, &batch(sample(), 900)).await.unwrap();

    let all = sessions_in_window(&mut c, None, t0(), t0() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let s1 = sessions_in_window(&mut c, Some("s1"), t0(), t0() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(s1.len(), 1);
    let s = &s1[0];
    assert_eq!(s.commands, ["uname -a", "wget http://x/y"]);
    assert_eq!(s.logins.len(), 2);
    assert!(!s.logins[0].success && s.logins[1].success);
    assert_eq!(s.downloads[0].url.as_deref(), Some("http://x/y"));
    assert_eq!(s.src_ip.as_deref(), Some("192.0.2.7"));
    // The window is half-open on first_event_at.
    let none = sessions_in_window(
        &mut c,
        Some("s1"),
        t0() + Duration::seconds(1),
        t0() + Duration::hours(1),
    )
    .await
    .unwrap();
    assert!(none.is_empty());

    let id = insert_longtail_analysis(
        &mut c,
        &NewLongtailAnalysis {
            sensor: Some("s1".into()),
            window_start: t0(),
            window_end: t0() + Duration::hours(1),
            lookback_days: Some(7),
            confidence_score: Some(0.0),
            total_events_analyzed: 10,
            rare_command_count: 1,
            anomalous_sequence_count: 0,
            outlier_session_count: 0,
            emerging_pattern_count: 0,
            high_entropy_payload_count: 0,
            analysis_results: json!({"rare_commands": [{"command": "uname -a"}]}),
            statistical_summary: None,
            recommendation: None,
            analysis_duration_seconds: Some(0.1),
            memory_usage_mb: None,
        },
        &[NewLongtailDetection {
            detection_type: "rare_command".into(),
            session_id: Some("aaaaaaaaaaaa".into()),
            detection_data: json!({"command": "uname -a"}),
            confidence_score: None,
            severity_score: None,
            timestamp: t0(),
            source_ip: Some("192.0.2.7".into()),
        }],
    )
    .await
    .unwrap();
    assert!(id > 0);
    let snow = json!({"is_likely_snowshoe": false, "confidence_score": 0.367, "single_attempt_ips": ["1.1.1.1"],
        "low_volume_ips": [], "coordinated_timing": false, "geographic_spread": 0.0, "recommendation": "NO DETECTION",
        "indicators": {"volume": {"total_ips": 78}}, "analysis_metadata": {"total_sessions": 739}});
    assert!(
        insert_snowshoe_detection(&mut c, Some("s1"), t0(), t0() + Duration::hours(1), &snow)
            .await
            .unwrap()
            > 0
    );
    let bot = json!({"is_likely_botnet": true, "coordination_score": 0.744584, "credential_reuse_ips": ["1.1.1.1"],
        "similar_command_ips": [], "coordinated_timing": true, "geographic_clustering": true, "recommendation": "MODERATE",
        "indicators": {}, "analysis_metadata": {}});
    assert!(
        insert_botnet_detection(&mut c, None, t0(), t0() + Duration::hours(1), &bot)
            .await
            .unwrap()
            > 0
    );
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_sql_session_aggregation_agree_with_partial_duplicates() {
    let Some(a) = TestDb::create().await else {
        return;
    };
    let Some(b) = TestDb::create().await else {
        return;
    };
    let all = sample();
    // First a batch with every other event, then the whole batch (half are duplicates).
    let half: Vec<EventRow> = all.iter().step_by(2).cloned().collect();
    let mut ca = a.connect().await;
    let mut cb = b.connect().await;
    for events in [half, all] {
        let bt = batch(events, 900);
        let ra = commit_batch(&mut ca, &bt).await.unwrap();
        let rb = store::ingest::commit_batch_sql_aggregate(&mut cb, &bt)
            .await
            .unwrap();
        assert_eq!(
            (ra.inserted, ra.duplicates, ra.files_inserted),
            (rb.inserted, rb.duplicates, rb.files_inserted)
        );
    }
    let sa = store::inspect::session_rows(&mut ca).await.unwrap();
    let sb = store::inspect::session_rows(&mut cb).await.unwrap();
    assert_eq!(sa, sb);
    assert_eq!(sa[0].event_count, 9);
    assert_eq!(
        store::inspect::file_rows(&mut ca).await.unwrap(),
        store::inspect::file_rows(&mut cb).await.unwrap()
    );
    drop((ca, cb));
    a.drop_db().await;
    b.drop_db().await;
}

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct Pair {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    rolled: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    raw: i64,
}

async fn pair(c: &mut diesel_async::AsyncPgConnection, sql: &str) -> Pair {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(sql).get_result(c).await.unwrap()
}

/// The hourly rollups count exactly the inserted rows: a batch committed twice (and again through the SQL-aggregate
/// path) leaves them equal to an aggregation over `raw_events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_count_each_event_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut c = db.connect().await;
    let b = batch(sample(), 900);
    commit_batch(&mut c, &b).await.unwrap();
    commit_batch(&mut c, &b).await.unwrap();
    store::ingest::commit_batch_sql_aggregate(&mut c, &b)
        .await
        .unwrap();
    let mut later = sample();
    for e in &mut later {
        e.offset += 10_000;
        e.timestamp += Duration::hours(3);
    }
    store::ingest::commit_batch_sql_aggregate(&mut c, &batch(later, 20_000))
        .await
        .unwrap();
    let events = pair(
        &mut c,
        "SELECT (SELECT sum(events) FROM stats_event_hours)::int8 AS rolled, (SELECT count(*) FROM raw_events)::int8 AS raw",
    )
    .await;
    assert_eq!(
        events,
        Pair {
            rolled: 20,
            raw: 20
        }
    );
    let logins = pair(
        &mut c,
        "SELECT (SELECT coalesce(sum(attempts), 0) FROM stats_login_hours)::int8 AS rolled,
                (SELECT count(*) FROM raw_events WHERE event_type LIKE 'cowrie.login.%')::int8 AS raw",
    )
    .await;
    assert_eq!(logins.rolled, logins.raw);
    assert!(logins.raw > 0);
    let commands = pair(
        &mut c,
        "SELECT (SELECT coalesce(sum(count), 0) FROM stats_command_hours)::int8 AS rolled,
                (SELECT count(*) FROM raw_events WHERE event_type = 'cowrie.command.input')::int8 AS raw",
    )
    .await;
    assert_eq!(commands.rolled, commands.raw);
    assert!(commands.raw > 0);
}

/// Longtail's narrow read gives the same sessions, features and commands (in log order) as the full read, also for
/// a session that started before the window and typed commands inside it (left out: it starts earlier), a session
/// running past the window's end (all its commands, even after the end), a second sensor, and a non-string input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longtail_reads_only_features_and_commands_like_the_full_read() {
    use store::analysis::longtail_sessions_in_window;
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut c = db.connect().await;
    let cmd = |o: i64, s: &str, sensor: &str, secs: i64, input: serde_json::Value| {
        ev(
            o,
            s,
            sensor,
            "cowrie.command.input",
            secs,
            json!({"input": input}),
        )
    };
    let mut events = sample();
    events.extend([
        // Started 10 minutes before the window, commands inside it.
        ev(
            100,
            "bbbbbbbbbbbb",
            "s1",
            "cowrie.session.connect",
            -600,
            json!({}),
        ),
        cmd(101, "bbbbbbbbbbbb", "s1", 30, json!("ls")),
        // Starts in the window, runs two hours past its end; one command has a number for input.
        ev(
            200,
            "cccccccccccc",
            "s1",
            "cowrie.session.connect",
            60,
            json!({}),
        ),
        cmd(201, "cccccccccccc", "s1", 9000, json!("late command")),
        cmd(202, "cccccccccccc", "s1", 120, json!("early command")),
        cmd(203, "cccccccccccc", "s1", 130, json!(5)),
        ev(
            204,
            "cccccccccccc",
            "s1",
            "cowrie.login.failed",
            61,
            json!({"username": "a", "password": "b"}),
        ),
        // Another sensor.
        ev(
            300,
            "dddddddddddd",
            "s2",
            "cowrie.session.connect",
            10,
            json!({}),
        ),
        cmd(301, "dddddddddddd", "s2", 11, json!("id")),
    ]);
    commit_batch(&mut c, &batch(events, 900)).await.unwrap();
    for sensor in [None, Some("s1"), Some("s2")] {
        let (start, end) = (t0(), t0() + Duration::hours(1));
        let full = sessions_in_window(&mut c, sensor, start, end)
            .await
            .unwrap();
        let narrow = longtail_sessions_in_window(&mut c, sensor, start, end)
            .await
            .unwrap();
        let mut full_by_id: Vec<_> = full.iter().collect();
        full_by_id.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        assert_eq!(narrow.len(), full.len(), "{sensor:?}");
        for (n, f) in narrow.iter().zip(full_by_id) {
            assert_eq!(n.session_id, f.session_id);
            assert_eq!(n.commands, f.commands, "{}", n.session_id);
            assert_eq!(
                (&n.src_ip, n.first_event_at, n.last_event_at),
                (&f.src_ip, f.first_event_at, f.last_event_at)
            );
            assert_eq!(
                (n.login_attempts, n.file_downloads),
                (f.login_attempts, f.file_downloads)
            );
        }
    }
    let all = longtail_sessions_in_window(&mut c, None, t0(), t0() + Duration::hours(1))
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, ["aaaaaaaaaaaa", "cccccccccccc", "dddddddddddd"]);
    assert_eq!(all[1].commands, ["early command", "late command"]);
    assert!(
        longtail_sessions_in_window(
            &mut c,
            None,
            t0() + Duration::hours(5),
            t0() + Duration::hours(6)
        )
        .await
        .unwrap()
        .is_empty()
    );
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_run_prunes_the_sensors_runs_older_than_the_retention_but_not_its_last_success()
{
    use store::loader_runs::{KEEP_DAYS, NewRun, Outcome, all_runs, record};
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut c = db.connect().await;
    let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
    let run = |sensor: &str, days_ago: i64, outcome: Outcome| NewRun {
        sensor: sensor.to_string(),
        mode: "delta".to_string(),
        ingest_id: None,
        started_at: now - Duration::days(days_ago) - Duration::seconds(5),
        finished_at: now - Duration::days(days_ago),
        outcome,
        exit_code: if outcome == Outcome::Ok { 0 } else { 3 },
        events_loaded: days_ago,
        dead_letters: 0,
        error: None,
    };
    let keep = i64::from(KEEP_DAYS);
    for r in [
        run("a", keep + 110, Outcome::Ok), // older, and not the newest success: pruned
        run("a", keep + 100, Outcome::Ok), // the newest success, however old: kept
        run("a", keep + 10, Outcome::Failed), // pruned
        run("a", keep - 1, Outcome::Failed), // within the retention: kept
        run("b", keep + 50, Outcome::Failed), // another sensor's: untouched by a's run
    ] {
        record(&mut c, &r).await.unwrap();
    }
    record(&mut c, &run("a", 0, Outcome::Failed)).await.unwrap();
    let left: Vec<(String, i64)> = all_runs(&mut c)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.sensor, r.events_loaded))
        .collect();
    assert_eq!(
        left,
        vec![
            ("a".to_string(), keep + 100),
            ("a".to_string(), keep - 1),
            ("b".to_string(), keep + 50),
            ("a".to_string(), 0),
        ]
    );
    drop(c);
    db.drop_db().await;
}
