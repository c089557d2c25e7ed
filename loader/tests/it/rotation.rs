//! Rotation, truncation and replacement of `cowrie.json` under `delta`.

use std::io::Write;

use store::test_support::TestDb;

use crate::common::*;

fn append(path: &std::path::Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_rotation_never_reingests_and_loads_new_lines() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let live = dir.path().join("cowrie.json");
    let n1 = gen_log(&live, 800, 21);
    let s1 = delta(&db.url, "rot", dir.path()).await;
    assert_eq!(s1.events_inserted, n1);

    // Lines written after the last run but before midnight, then Cowrie's rename.
    let late = dir.path().join("late.tmp");
    let n_late = gen_log(&late, 50, 22);
    append(&live, &std::fs::read_to_string(&late).unwrap());
    let rotated = dir.path().join("cowrie.json.2024-01-10");
    std::fs::rename(&live, &rotated).unwrap();
    let n2 = gen_log(&live, 300, 23);

    let s2 = delta(&db.url, "rot", dir.path()).await;
    assert_eq!(s2.events_inserted, n_late + n2, "only new lines");
    assert_eq!(s2.duplicates, 0);
    let snap = snapshot(&db.url).await;
    assert_eq!(snap.counts.raw_events as u64, n1 + n_late + n2);

    // Nothing new: nothing changes. Then the rotated day is bzip2'd by the operator.
    let s3 = delta(&db.url, "rot", dir.path()).await;
    assert_eq!(s3.events_inserted, 0);
    let bz = dir.path().join("cowrie.json.2024-01-10.bz2");
    {
        let mut w = bzip2::write::BzEncoder::new(
            std::fs::File::create(&bz).unwrap(),
            bzip2::Compression::default(),
        );
        w.write_all(&std::fs::read(&rotated).unwrap()).unwrap();
        w.finish().unwrap();
    }
    // An older, shorter compressed snapshot of the same day holds nothing new either.
    let head: String = std::fs::read_to_string(&rotated)
        .unwrap()
        .lines()
        .take(10)
        .map(|l| format!("{l}\n"))
        .collect();
    {
        let gz = std::fs::File::create(dir.path().join("cowrie.json.2024-01-10.part.gz")).unwrap();
        let mut w = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
        w.write_all(head.as_bytes()).unwrap();
        w.finish().unwrap();
    }
    std::fs::remove_file(&rotated).unwrap();
    let s4 = delta(&db.url, "rot", dir.path()).await;
    assert_eq!(
        (s4.events_inserted, s4.duplicates, s4.files_failed),
        (0, 0, 0)
    );
    assert_eq!(snapshot(&db.url).await, snap);
    drop(dir);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_and_replacement_are_detected() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let live = dir.path().join("cowrie.json");
    let na = gen_log(&live, 300, 31);
    assert_eq!(delta(&db.url, "tr", dir.path()).await.events_inserted, na);

    // copytruncate-style: emptied, then written again (new first line).
    std::fs::File::create(&live).unwrap();
    assert_eq!(delta(&db.url, "tr", dir.path()).await.files_waiting, 1);
    let nb = gen_log(&live, 300, 32);
    assert_eq!(delta(&db.url, "tr", dir.path()).await.events_inserted, nb);

    // Truncated below the cursor but keeping its first line, then appended to.
    let text = std::fs::read_to_string(&live).unwrap();
    let keep: String = text.lines().take(100).map(|l| format!("{l}\n")).collect();
    std::fs::write(&live, &keep).unwrap();
    let extra = dir.path().join("c.tmp");
    let nc = gen_log(&extra, 40, 33);
    append(&live, &std::fs::read_to_string(&extra).unwrap());
    let s = delta(&db.url, "tr", dir.path()).await;
    assert_eq!(s.truncations, 1);
    // The kept lines are recognised as stored; only the appended ones are new.
    assert_eq!(s.duplicates, 100);
    let new_bytes = std::fs::metadata(&live).unwrap().len() as usize - keep.len();
    assert_eq!(new_bytes, std::fs::read_to_string(&extra).unwrap().len());
    assert_eq!(s.events_inserted, nc);

    // Replaced under the same name by different content.
    std::fs::remove_file(&live).unwrap();
    let nd = gen_log(&live, 200, 34);
    assert_eq!(delta(&db.url, "tr", dir.path()).await.events_inserted, nd);
    assert_eq!(delta(&db.url, "tr", dir.path()).await.events_inserted, 0);

    let snap = snapshot(&db.url).await;
    assert_eq!(snap.counts.raw_events as u64, na + nb + nc + nd);
    let total_session_events: i64 = snap.sessions.iter().map(|s| s.event_count as i64).sum();
    assert_eq!(total_session_events as u64, na + nb + nc + nd);
    drop(dir);
    db.drop_db().await;
}
