//! Broken input goes to the dead-letter table with a reason and the rest of the file
//! still loads; pretty-printed JSON is recovered; a line still being written waits.

use std::io::Write;

use store::test_support::TestDb;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_lines_are_dead_lettered_and_the_rest_loads() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let good = dir.path().join("good.json");
    let n = gen_log(&good, 300, 11);
    let good_lines: Vec<String> = std::fs::read_to_string(&good)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let pretty_obj: serde_json::Value = serde_json::from_str(&good_lines[5]).unwrap();
    let pretty = serde_json::to_string_pretty(&pretty_obj).unwrap();

    let path = dir.path().join("cowrie.json");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut expected_events = 0u64;
    for (i, l) in good_lines.iter().enumerate() {
        if i == 5 {
            // replaced by its pretty-printed form below
            writeln!(f, "{pretty}").unwrap();
        } else {
            writeln!(f, "{l}").unwrap();
        }
        expected_events += 1;
        if i == 10 {
            f.write_all(b"{\"eventid\": \"cowrie.login.failed\", \"username\": \"r\xffoot\"}\n")
                .unwrap();
            f.write_all(b"{\"eventid\": \"cowrie.session.connect\", \"timesta\n")
                .unwrap();
            f.write_all(b"\n   \n").unwrap();
            f.write_all(
                b"{\"eventid\": \"dionaea.connection\", \"timestamp\": \"2024-01-10T00:00:00Z\"}\n",
            )
            .unwrap();
            f.write_all(b"not json at all\n").unwrap();
            f.write_all(b"{\"eventid\": \"cowrie.session.connect\", \"timestamp\": \"never\"}\n")
                .unwrap();
        }
    }
    drop(f);
    let stats = bulk(&db.url, "s", std::slice::from_ref(&path)).await;
    assert_eq!(stats.events_inserted, expected_events);
    assert_eq!(expected_events, n);
    assert_eq!(stats.blank_lines, 2);
    let mut c = connect(&db.url).await;
    let dead = store::inspect::dead_letters(&mut c).await.unwrap();
    let reasons: Vec<&str> = dead.iter().map(|(_, r, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "invalid_utf8",
            "json_parse_error",
            "not_cowrie_event",
            "json_parse_error",
            "invalid_timestamp"
        ]
    );
    // The raw bytes are kept exactly, invalid UTF-8 included.
    assert_eq!(
        dead[0].2,
        b"{\"eventid\": \"cowrie.login.failed\", \"username\": \"r\xffoot\"}".to_vec()
    );
    // Line numbers point at the file's lines (0-based; the pretty object spans several).
    let pretty_lines = pretty.lines().count() as i64;
    assert_eq!(dead[0].0, 11 + pretty_lines - 1);
    // A second run stores nothing twice, dead letters included.
    let again = bulk(&db.url, "s", &[path]).await;
    assert_eq!((again.events_inserted, again.dead_letters_inserted), (0, 0));
    assert_eq!(store::inspect::dead_letters(&mut c).await.unwrap().len(), 5);
    drop(c);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_last_line_waits_for_its_end() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let path = dir.path().join("cowrie.json");
    let n = gen_log(&path, 200, 12);
    let extra_src = dir.path().join("extra");
    gen_log(&extra_src, 20, 13);
    let extra = std::fs::read_to_string(&extra_src).unwrap();
    let first_extra = extra.lines().next().unwrap().to_owned();
    let (head, tail) = first_extra.split_at(first_extra.len() / 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(head.as_bytes())
        .unwrap();

    let s1 = delta(&db.url, "s", dir.path()).await;
    assert_eq!(s1.events_inserted, n);
    assert_eq!(s1.dead_letters, 0);
    assert_eq!(s1.incomplete_tails, 1);

    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(format!("{tail}\n").as_bytes())
        .unwrap();
    let s2 = delta(&db.url, "s", dir.path()).await;
    assert_eq!((s2.events_inserted, s2.dead_letters), (1, 0));
    drop(dir);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_logs_of_all_three_cowrie_generations_load_completely() {
    use cowrie_loader::generate::{CowrieFormat, generate_file};
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let mut total = 0;
    let mut sessions = 0;
    let mut paths = Vec::new();
    for (i, f) in [CowrieFormat::V1, CowrieFormat::V2, CowrieFormat::V3]
        .into_iter()
        .enumerate()
    {
        let p = dir.path().join(format!("cowrie.json.v{i}.gz"));
        let st = generate_file(&p, &gen_opts(2000, 70 + i as u64, f)).unwrap();
        total += st.events;
        sessions += st.sessions;
        paths.push(p);
    }
    let s = bulk(&db.url, "g", &paths).await;
    assert_eq!((s.events_inserted, s.dead_letters), (total, 0));
    let snap = snapshot(&db.url).await;
    assert_eq!(snap.sessions.len() as u64, sessions);
    // Every session closed, and its duration was read whatever the encoding.
    assert!(snap.sessions.iter().all(|r| r.duration_seconds.is_some()));
    // The generator's sensor is "": --sensor fills it in.
    assert!(snap.sessions.iter().all(|r| r.sensor == "g"));
    db.drop_db().await;
}
