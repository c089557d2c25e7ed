//! Dead letters as a feature (issue 15, `docs/dead-letters.md`), against real Redis, `celeriac-worker`, the
//! `celeriac` command and a Python Celery 5.7 client and worker: a worker keeps what it cannot process with an id,
//! reason, queue, worker, time and the original bytes; `celeriac dead-letters` lists, shows, drops, purges and
//! replays them (the original bytes, unchanged, to their queue); a task a Python client sent before any worker had
//! it runs once replayed to a worker that has it; the worker's size bound drops the oldest, logs and counts it.

use base64::Engine as _;
use redis::Commands;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;
use testkit::{py_json, python_or_skip, redis_db_or_skip, run_python, rust_worker, wait_until};

const T: Duration = Duration::from_secs(60);
const STORE: &str = "celeriac:dead_letter";

/// Run `celeriac -b url dead-letters ARGS --json`: exit code and parsed stdout (Null when it printed nothing).
fn dl(url: &str, args: &[&str]) -> (i32, Value) {
    let out = Command::new(testkit::bin("celeriac"))
        .args(["-b", url, "--json", "dead-letters"])
        .args(args)
        .output()
        .expect("celeriac");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
    assert!(
        !text.trim().is_empty() || out.status.code() != Some(0),
        "no output from {args:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), v)
}

fn entries(url: &str) -> (u64, Vec<Value>) {
    let (code, v) = dl(url, &["list", "--limit", "100"]);
    assert_eq!(code, 0, "{v}");
    (
        v["count"].as_u64().expect("count"),
        v["entries"].as_array().expect("entries").clone(),
    )
}

fn find<'a>(list: &'a [Value], reason_start: &str) -> &'a Value {
    list.iter()
        .find(|e| e["reason"].as_str().unwrap_or("").starts_with(reason_start))
        .unwrap_or_else(|| panic!("no entry with reason {reason_start:?} in {list:#?}"))
}

#[test]
fn list_show_drop_purge_and_replay_round_trip_on_redis() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let mut r = db.conn();
    // An entry as a worker before dead-letter ids wrote it (the plain list), kept in 2020: adopted, then purged.
    let old = r#"{"reason": "written by an old worker", "queue": "dlq", "node": "old@host", "time": "2020-01-02T03:04:05.000000", "message": "{}"}"#;
    let _: () = r.lpush(STORE, old).unwrap();

    let mut w = rust_worker(&db.url, "dl@test", &["-Q", "dlq"]);
    // A task only the Python worker has, sent by a Python client to the queue the Rust worker consumes.
    let sent = py_json(&run_python(
        &py,
        &db.url,
        "import json\nfrom pytasks import app\nr = app.send_task('tasks.add', args=(2, 3), queue='dlq')\nprint(json.dumps({'id': r.id}))",
        T,
    ));
    let task_id = sent["id"].as_str().unwrap().to_string();
    // Bytes that are no message at all, one of them not UTF-8.
    let _: () = r.lpush("dlq", "this is not json {").unwrap();
    let binary: &[u8] = b"\xff\xfe\x00binary";
    let _: () = r.lpush("dlq", binary).unwrap();

    assert!(
        wait_until(T, || entries(&db.url).0 == 4),
        "four dead letters; have {:#?}\nworker log:\n{}",
        entries(&db.url),
        w.output()
    );
    let (_, list) = entries(&db.url);
    let ids: std::collections::HashSet<&str> =
        list.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "distinct ids: {list:#?}");
    let unregistered = find(&list, "unregistered task: tasks.add").clone();
    assert_eq!(unregistered["queue"], "dlq");
    assert_eq!(unregistered["node"], "dl@test");
    assert!(
        unregistered["time"].as_str().unwrap().starts_with("20"),
        "{unregistered}"
    );
    assert!(unregistered["message"].as_str().unwrap().contains(&task_id));
    find(&list, "written by an old worker");
    // Newest first: the old entry is last.
    assert_eq!(list[3]["reason"], "written by an old worker", "{list:#?}");

    // show: the exact bytes, base64 when they are not UTF-8.
    let bin_id = list
        .iter()
        .find(|e| e["message_base64"].is_string())
        .unwrap_or_else(|| panic!("a base64 entry in {list:#?}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, shown) = dl(&db.url, &["show", &bin_id]);
    assert_eq!(code, 0);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(shown["message_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, binary);
    assert!(
        shown["reason"]
            .as_str()
            .unwrap()
            .starts_with("undecodable message")
    );

    // drop: gone once; a second drop and a show say not found.
    let garbage_id = find(&list, "undecodable message")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_bad: Vec<String> = list
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .unwrap()
                .starts_with("undecodable message")
        })
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(other_bad.len(), 2);
    let (code, out) = dl(&db.url, &["drop", &other_bad[0], &other_bad[1]]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out[0]["outcome"], "dropped");
    assert_eq!(out[1]["outcome"], "dropped");
    let (code, out) = dl(&db.url, &["drop", &garbage_id]);
    assert_eq!((code, out[0]["outcome"].as_str()), (1, Some("not_found")));
    assert_eq!(dl(&db.url, &["show", &garbage_id]).0, 1);

    // purge --older-than 7d: only the 2020 entry.
    let (code, out) = dl(&db.url, &["purge", "--older-than", "7d"]);
    assert_eq!((code, out["purged"].as_u64()), (0, Some(1)), "{out}");
    let (count, list) = entries(&db.url);
    assert_eq!(count, 1, "{list:#?}");
    assert_eq!(list[0]["id"], unregistered["id"]);
    let hlen: u64 = redis::cmd("HLEN")
        .arg(format!("{STORE}:entries"))
        .query(&mut r)
        .unwrap();
    assert_eq!(hlen, 1, "hash and sorted set agree");
    let old_list: u64 = r.llen(STORE).unwrap();
    assert_eq!(old_list, 0, "the old list was adopted");

    // Replay once the Rust worker is gone: the original bytes, unchanged, are in the queue.
    w.signal("TERM");
    assert!(w.wait_timeout(T).is_some(), "worker stopped");
    let id = unregistered["id"].as_str().unwrap();
    let (code, out) = dl(&db.url, &["replay", id]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out[0]["outcome"], "replayed");
    assert_eq!(out[0]["detail"], "dlq");
    let waiting: Vec<Vec<u8>> = r.lrange("dlq", 0, -1).unwrap();
    assert_eq!(
        waiting,
        vec![
            unregistered["message"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec()
        ],
        "the original message, unchanged"
    );
    let (code, out) = dl(&db.url, &["replay", id]);
    assert_eq!(
        (code, out[0]["outcome"].as_str()),
        (1, Some("not_found")),
        "replayed once"
    );
    assert_eq!(entries(&db.url).0, 0);

    // A worker that has the task runs it.
    let _pw = testkit::python_worker(&py, &db.url, "py-dl@test", &["-Q", "dlq", "-c", "1"]);
    let key = format!("celery-task-meta-{task_id}");
    let ok = wait_until(T, || {
        let meta: Option<String> = r.get(&key).unwrap();
        meta.and_then(|m| serde_json::from_str::<Value>(&m).ok())
            .is_some_and(|m| m["status"] == "SUCCESS" && m["result"] == 5)
    });
    let meta: Option<String> = r.get(&key).unwrap();
    assert!(ok, "the replayed task ran: {meta:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn metrics(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_worker_keeps_at_most_dead_letter_max_and_logs_and_counts_what_it_drops() {
    let db = redis_db_or_skip!();
    let mut r = db.conn();
    let port = free_port();
    let w = rust_worker(
        &db.url,
        "bound@test",
        &[
            "-Q",
            "dlb",
            "--dead-letter-max",
            "2",
            "--metrics-port",
            &port.to_string(),
        ],
    );
    for i in 0..5 {
        let _: () = r.rpush("dlb", format!("junk {i}")).unwrap();
    }
    let dropped_line = "celeriac_worker_dead_letters_dropped_total{reason=\"too_many\"} 3";
    assert!(
        wait_until(T, || metrics(port).contains(dropped_line)),
        "metrics:\n{}\nlog:\n{}",
        metrics(port),
        w.output()
    );
    assert!(metrics(port).contains("celeriac_worker_dead_letters_total 5"));
    assert!(
        w.output()
            .contains("dropped the oldest dead letters to stay within the bounds"),
        "{}",
        w.output()
    );
    let (count, list) = entries(&db.url);
    assert_eq!(count, 2);
    // The five were handled concurrently, so which two were kept last is not fixed; two distinct ones remain.
    let kept: std::collections::BTreeSet<&str> = list
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|m| m.starts_with("junk ")), "{kept:?}");
    let n: u64 = r.zcard(format!("{STORE}:by_time")).unwrap();
    assert_eq!(n, 2);
}
