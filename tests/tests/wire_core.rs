//! Issue 2, proven against the real thing: Python Celery 5.7 clients and workers, real Redis, and the
//! `celeriac-worker` / `celeriac` binaries. Each test owns a Redis database (testkit::RedisDb).

use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use testkit::{
    Child, py_json, python_or_skip, redis_db_or_skip, run_python, rust_worker, wait_meta,
    wait_until,
};

const T: Duration = Duration::from_secs(90);

/// Every built-in task, called from Python with `send_task`; results and re-raised exception types.
#[test]
fn python_client_calls_every_builtin() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _w = rust_worker(&db.url, "builtins@%h", &["-c", "4"]);
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
res = {}
res['ping'] = app.send_task('celeriac.ping').get(timeout=20)
res['echo'] = app.send_task('celeriac.echo', args=('ünï€ode', 1, None), kwargs={'k': [1, 2.5]}).get(timeout=20)
res['add_int'] = app.send_task('celeriac.add', args=(2, 3)).get(timeout=20)
res['add_float'] = app.send_task('celeriac.add', kwargs={'x': 0.5, 'y': 2}).get(timeout=20)
res['sleep'] = app.send_task('celeriac.sleep', args=(0.2,)).get(timeout=20)
for name, kwargs in [('value', {}), ('key', {'exc_type': 'KeyError'})]:
    try:
        app.send_task('celeriac.fail', args=('boom ' + name,), kwargs=kwargs).get(timeout=20)
        res['fail_' + name] = 'no exception'
    except Exception as e:
        res['fail_' + name] = [type(e).__name__, type(e).__module__, str(e)]
try:
    app.send_task('celeriac.add', args=(1,)).get(timeout=20)
except Exception as e:
    res['type_error'] = [type(e).__name__, str(e)]
print(json.dumps(res))
"#,
        T,
    );
    let r = py_json(&out);
    assert_eq!(r["ping"], json!("pong"));
    assert_eq!(
        r["echo"],
        json!({"args": ["ünï€ode", 1, null], "kwargs": {"k": [1, 2.5]}})
    );
    assert_eq!(r["add_int"], json!(5));
    assert_eq!(r["add_float"], json!(2.5));
    assert_eq!(r["sleep"], json!(0.2));
    assert_eq!(
        r["fail_value"],
        json!(["ValueError", "builtins", "boom value"])
    );
    assert_eq!(r["fail_key"][0], json!("KeyError"));
    assert_eq!(
        r["type_error"],
        json!([
            "TypeError",
            "celeriac.add() missing 1 required positional argument: 'y'"
        ])
    );
}

/// Retry then success, countdown, eta, expires (REVOKED "expired"), from Python.
#[test]
fn retry_countdown_eta_expires() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _w = rust_worker(&db.url, "timing@%h", &["-c", "2"]);
    let out = run_python(
        &py,
        &db.url,
        r#"
import json, datetime, time
from celery.exceptions import TaskRevokedError
from pytasks import app
res = {}
r = app.send_task('celeriac.flaky', kwargs={'succeed_on': 2, 'countdown': 0.2})
res['flaky'] = r.get(timeout=20)
t0 = time.time()
res['countdown'] = app.send_task('celeriac.add', args=(1, 1), countdown=1.5).get(timeout=20)
res['countdown_waited'] = time.time() - t0 >= 1.4
eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
res['eta'] = app.send_task('celeriac.add', args=(2, 2), eta=eta).get(timeout=20)
r = app.send_task('celeriac.add', args=(3, 3), expires=-1)
try:
    r.get(timeout=20)
    res['expired'] = 'ran'
except TaskRevokedError as e:
    res['expired'] = [r.state, str(e)]
print(json.dumps(res))
"#,
        T,
    );
    let r = py_json(&out);
    assert_eq!(r["flaky"], json!("ok after 2 retries"));
    assert_eq!(r["countdown"], json!(2));
    assert_eq!(r["countdown_waited"], json!(true));
    assert_eq!(r["eta"], json!(4));
    assert_eq!(r["expired"], json!(["REVOKED", "expired"]));
}

/// Priorities 0..9 are served like kombu on Redis: bucket 0 (0-2) first, then 3-5, 6-8, 9; FIFO in a bucket.
#[test]
fn priorities_served_in_celery_order() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    // Publish first, with no worker running, in a shuffled priority order.
    let prios = [9, 0, 5, 3, 8, 1, 6, 2, 4, 7];
    let out = run_python(
        &py,
        &db.url,
        &format!(
            r#"
import json
from pytasks import app
ids = [app.send_task('celeriac.echo', args=(p,), priority=p).id for p in {prios:?}]
print(json.dumps(ids))
"#
        ),
        T,
    );
    let ids: Vec<String> = serde_json::from_value(py_json(&out)).unwrap();
    let _w = rust_worker(
        &db.url,
        "prio@%h",
        &["-c", "1", "--prefetch-multiplier", "1"],
    );
    let mut conn = db.conn();
    let mut done: Vec<(String, u8)> = Vec::new();
    assert!(wait_until(T, || {
        done.clear();
        for (id, p) in ids.iter().zip(prios) {
            let raw: Option<String> = redis::cmd("GET")
                .arg(format!("celery-task-meta-{id}"))
                .query(&mut conn)
                .unwrap();
            match raw {
                Some(r) => {
                    let v: Value = serde_json::from_str(&r).unwrap();
                    done.push((v["date_done"].as_str().unwrap().to_string(), p));
                }
                None => return false,
            }
        }
        true
    }));
    done.sort();
    let served: Vec<u8> = done.iter().map(|(_, p)| *p).collect();
    // Expected: by bucket, then publish order within the bucket.
    let bucket = |p: u8| [0, 0, 0, 3, 3, 3, 6, 6, 6, 9][p as usize];
    let mut expected: Vec<(u8, usize, u8)> = prios
        .iter()
        .enumerate()
        .map(|(i, p)| (bucket(*p), i, *p))
        .collect();
    expected.sort();
    let expected: Vec<u8> = expected.into_iter().map(|(_, _, p)| p).collect();
    assert_eq!(served, expected);
}

/// A protocol 1 message (everything in the body) is accepted like Celery's hybrid_to_proto2 does.
#[test]
fn protocol_v1_message_runs() {
    let db = redis_db_or_skip!();
    let _w = rust_worker(&db.url, "v1@%h", &[]);
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"task": "celeriac.add", "id": id, "args": [7, 8], "kwargs": {}, "retries": 0, "eta": null,
        "expires": null, "utc": true, "callbacks": null, "errbacks": null, "timelimit": [null, null], "taskset": null, "chord": null});
    let env = json!({"body": body.to_string(), "content-encoding": "utf-8", "content-type": "application/json", "headers": {},
        "properties": {"correlation_id": id, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"},
            "priority": 0, "body_encoding": "utf-8", "delivery_tag": uuid::Uuid::new_v4().to_string()}});
    let mut conn = db.conn();
    let _: i64 = redis::cmd("LPUSH")
        .arg("celery")
        .arg(env.to_string())
        .query(&mut conn)
        .unwrap();
    let meta = wait_meta(&db, &id, T);
    assert_eq!(
        (meta["status"].as_str(), &meta["result"]),
        (Some("SUCCESS"), &json!(15))
    );
}

/// Unicode and a 1 MB argument survive the round trip through Python, base64 and the Rust worker.
#[test]
fn unicode_and_large_arguments() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _w = rust_worker(&db.url, "big@%h", &[]);
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
big = 'ß€😀x' * (1024 * 1024 // 10)
r = app.send_task('celeriac.echo', args=(big,), kwargs={'ключ': 'значение\x00'}).get(timeout=60)
print(json.dumps({'same': r['args'][0] == big, 'len': len(r['args'][0]), 'kw': r['kwargs']}))
"#,
        T,
    );
    let r = py_json(&out);
    assert_eq!(r["same"], json!(true), "{r}");
    assert!(r["len"].as_u64().unwrap() >= 400_000);
    assert_eq!(r["kw"], json!({"ключ": "значение\u{0}"}));
}

/// `link` callbacks get the parent's result prepended; a chain passes results along.
#[test]
fn link_callback_and_chain() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _w = rust_worker(&db.url, "canvas@%h", &["-c", "2"]);
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from celery import chain
from pytasks import app
cb = app.signature('celeriac.add', args=(10,))
cb.freeze()
r = app.send_task('celeriac.add', args=(2, 3), link=cb)
first = r.get(timeout=20)
callback = app.AsyncResult(cb.id).get(timeout=20)
c = chain(app.signature('celeriac.add', args=(2, 3)), app.signature('celeriac.add', args=(10,)),
          app.signature('celeriac.add', args=(100,))).apply_async()
res = c.get(timeout=20)
parent = c.parent.get(timeout=20)
print(json.dumps({'first': first, 'callback': callback, 'chain': res, 'chain_parent': parent}))
"#,
        T,
    );
    assert_eq!(
        py_json(&out),
        json!({"first": 5, "callback": 15, "chain": 115, "chain_parent": 15})
    );
}

/// The Rust CLI and client call a Python worker, also with priority and countdown.
#[test]
fn rust_client_calls_python_worker() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _pw = testkit::python_worker(&py, &db.url, "py@%h", &["-P", "solo"]);
    let cli = testkit::bin("celeriac");
    let out = Command::new(&cli)
        .args([
            "-b",
            &db.url,
            "call",
            "tasks.add",
            "-a",
            "[2, 3]",
            "-k",
            "{\"x\": 10}",
            "--wait",
            "--timeout",
            "30",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "15");
    let out = Command::new(&cli)
        .args([
            "-b",
            &db.url,
            "call",
            "tasks.fail",
            "-a",
            "[\"bad\"]",
            "--wait",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(meta["result"]["exc_type"], json!("ValueError"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = celeriac_client::Client::connect(&db.url, None)
            .await
            .unwrap();
        let mut req = celery_proto::TaskRequest::new("tasks.add");
        req.args = vec![json!(20), json!(22)];
        req.priority = 7;
        req.eta = Some(chrono_now_plus(1.0));
        let t0 = std::time::Instant::now();
        let meta = client.call(&req, Duration::from_secs(30)).await.unwrap();
        assert_eq!(meta.result, json!(42));
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "countdown not honoured: {:?}",
            t0.elapsed()
        );
        // The Python worker stored result_extended fields: it really ran there.
        let raw = client.raw_meta(&req.id).await.unwrap().unwrap();
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert!(v["worker"].as_str().unwrap().starts_with("py@"), "{v}");
    });
}

fn chrono_now_plus(secs: f64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::milliseconds((secs * 1000.0) as i64)
}

/// A Python and a Rust worker on the same queue share the work.
#[test]
fn python_and_rust_workers_share_a_queue() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _pw = testkit::python_worker(&py, &db.url, "pyshare@%h", &["-c", "2"]);
    let _rw = rust_worker(
        &db.url,
        "rsshare@%h",
        &["-c", "2", "--result-extended", "--prefetch-multiplier", "1"],
    );
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
rs = [app.send_task('celeriac.add', args=(i, i)) for i in range(200)]
vals = [r.get(timeout=60) for r in rs]
workers = sorted({app.backend.get_task_meta(r.id)['worker'].split('@')[0] for r in rs})
print(json.dumps({'ok': vals == [2 * i for i in range(200)], 'workers': workers}))
"#,
        T,
    );
    assert_eq!(
        py_json(&out),
        json!({"ok": true, "workers": ["pyshare", "rsshare"]})
    );
}

/// Messages a Rust worker held unacked when it was killed are restored by a Python worker after the
/// visibility timeout, and the reverse: a killed Python worker's messages are restored by a Rust worker.
#[test]
fn unacked_messages_restored_across_languages() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    // Rust worker, one slot, busy with a long sleep; the next messages wait unacked in its prefetch.
    let mut rw = rust_worker(
        &db.url,
        "holder@%h",
        &["-c", "1", "--prefetch-multiplier", "4"],
    );
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
blocker = app.send_task('celeriac.sleep', args=(30,))
ids = [app.send_task('celeriac.add', args=(i, 1)).id for i in range(3)]
print(json.dumps({'ids': ids}))
"#,
        T,
    );
    let ids: Vec<String> = serde_json::from_value(py_json(&out)["ids"].clone()).unwrap();
    let mut conn = db.conn();
    assert!(wait_until(T, || unacked(&mut conn) >= 3));
    rw.signal("KILL");
    rw.wait_timeout(Duration::from_secs(10));
    // Python restores at start-up the messages older than its visibility timeout (3 s).
    std::thread::sleep(Duration::from_secs(4));
    let mut pw = Child::spawn(
        "python-restorer",
        python_cmd(&py, &db.url, "restorer@%h", "3").as_mut(),
    );
    for id in &ids {
        let m = wait_meta(&db, id, T);
        assert_eq!(m["status"], json!("SUCCESS"), "{m}");
        assert!(
            m["worker"].as_str().unwrap().starts_with("restorer@"),
            "{m}"
        );
    }
    drop(rw);

    // Reverse: the Python worker holds messages unacked (busy solo pool), gets killed; Rust restores them.
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
app.send_task('tasks.sleep', args=(30,))
ids = [app.send_task('celeriac.add', args=(i, 2)).id for i in range(3)]
print(json.dumps({'ids': ids}))
"#,
        T,
    );
    let ids: Vec<String> = serde_json::from_value(py_json(&out)["ids"].clone()).unwrap();
    assert!(wait_until(T, || unacked(&mut conn) >= 3));
    pw.signal("KILL");
    pw.wait_timeout(Duration::from_secs(10));
    let _rw2 = rust_worker(
        &db.url,
        "rescuer@%h",
        &["--visibility-timeout", "3", "--result-extended"],
    );
    for id in &ids {
        let m = wait_meta(&db, id, T);
        assert_eq!(m["status"], json!("SUCCESS"), "{m}");
        assert!(m["worker"].as_str().unwrap().starts_with("rescuer@"), "{m}");
    }
}

fn python_cmd(py: &std::path::Path, broker: &str, node: &str, visibility: &str) -> Box<Command> {
    let mut cmd = Command::new(py);
    // The threads pool keeps prefetching while a task runs (solo blocks its event loop), like prefork.
    cmd.args([
        "-m",
        "celery",
        "-A",
        "pytasks",
        "worker",
        "-n",
        node,
        "-P",
        "threads",
        "-c",
        "1",
        "-l",
        "info",
        "--without-heartbeat",
    ])
    .current_dir(testkit::repo_root().join("tests/python"))
    .env("CELERY_BROKER_URL", broker)
    .env("VISIBILITY_TIMEOUT", visibility)
    .env("PYTHONUNBUFFERED", "1");
    Box::new(cmd)
}

/// `kill -9` while acks_late tasks run: after a restart every task completes, none is lost.
#[test]
fn kill_9_with_acks_late_loses_nothing() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let mut w = rust_worker(&db.url, "late@%h", &["-c", "3", "--acks-late"]);
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
print(json.dumps([app.send_task('celeriac.sleep', args=(1.5,)).id for _ in range(9)]))
"#,
        T,
    );
    let ids: Vec<String> = serde_json::from_value(py_json(&out)).unwrap();
    let mut conn = db.conn();
    // Kill while the first batch is running.
    assert!(wait_until(T, || unacked(&mut conn) >= 9));
    std::thread::sleep(Duration::from_millis(500));
    w.signal("KILL");
    w.wait_timeout(Duration::from_secs(10));
    let held = unacked(&mut conn);
    assert!(
        held > 0,
        "acks_late messages must still be unacked after kill -9"
    );
    let _w2 = rust_worker(
        &db.url,
        "late2@%h",
        &["-c", "3", "--acks-late", "--visibility-timeout", "2"],
    );
    for id in &ids {
        assert_eq!(wait_meta(&db, id, T)["status"], json!("SUCCESS"));
    }
    assert!(wait_until(T, || unacked(&mut conn) == 0));
}

/// Redis restarted mid-run (a private server on its own port): the worker reconnects and goes on.
#[test]
fn redis_restart_mid_run() {
    if !testkit::require(
        "redis-server binary",
        Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok(),
    ) {
        return;
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("celeriac-redis-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let start = || {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir);
        let c = Child::spawn("private-redis", &mut cmd);
        c.wait_for_output("Ready to accept connections", Duration::from_secs(20));
        c
    };
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut redis1 = start();
    let w = rust_worker(&url, "reconnect@%h", &[]);
    let call = |n: i64| {
        let out = Command::new(testkit::bin("celeriac"))
            .args([
                "-b",
                &url,
                "call",
                "celeriac.add",
                "-a",
                &format!("[{n}, 1]"),
                "--wait",
                "--timeout",
                "60",
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    assert_eq!(call(1), (true, "2".to_string()));
    redis1.signal("KILL");
    redis1.wait_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    let _redis2 = start();
    assert_eq!(
        call(41),
        (true, "42".to_string()),
        "worker log:\n{}",
        w.output()
    );
    assert!(
        w.output().contains("broker unavailable"),
        "the outage should have been logged"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Bad input: each malformed message is rejected the way Celery does it, kept in the dead-letter list with a
/// reason (nothing lost silently), and the worker keeps consuming.
#[test]
fn bad_input_is_rejected_and_the_worker_keeps_consuming() {
    let db = redis_db_or_skip!();
    let w = rust_worker(&db.url, "bad@%h", &[]);
    let mut conn = db.conn();
    let tag = || uuid::Uuid::new_v4().to_string();
    let good_env = |task: &str, id: &str, headers: Value| {
        let mut h = json!({"lang": "py", "task": task, "id": id, "retries": 0, "timelimit": [null, null], "root_id": id});
        for (k, v) in headers.as_object().unwrap() {
            h[k] = v.clone();
        }
        json!({"body": "W1sxLCAyXSwge30sIHt9XQ==", "content-encoding": "utf-8", "content-type": "application/json", "headers": h,
            "properties": {"correlation_id": id, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"},
                "priority": 0, "body_encoding": "base64", "delivery_tag": tag()}})
    };
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let bad: Vec<(String, &str)> = vec![
        ("{not json".to_string(), "undecodable message"),
        (json!({"body": "%%%", "content-type": "application/json", "headers": {"task": "celeriac.add", "id": "x"},
            "properties": {"body_encoding": "base64", "delivery_tag": tag()}}).to_string(), "body is not valid base64"),
        (json!({"body": "e30=", "headers": {"task": "celeriac.add", "id": "y"}}).to_string(), "no `properties`"),
        (json!({"body": "gAN9cQAu", "content-type": "application/x-python-serialize", "headers": {"task": "celeriac.add", "id": "z"},
            "properties": {"body_encoding": "base64", "delivery_tag": tag()}}).to_string(), "is not accepted"),
        (good_env("celeriac.add", "bad-eta", json!({"eta": "next tuesday"})).to_string(), "invalid eta"),
        (format!("{{\"body\": \"{}\"}}", "A".repeat(10 * 1024 * 1024)), "undecodable message"),
    ];
    for (raw, _) in &bad {
        let _: i64 = redis::cmd("LPUSH")
            .arg("celery")
            .arg(raw)
            .query(&mut conn)
            .unwrap();
    }
    let unknown = good_env("no.such.task", &unknown_id, json!({}));
    let _: i64 = redis::cmd("LPUSH")
        .arg("celery")
        .arg(unknown.to_string())
        .query(&mut conn)
        .unwrap();
    let ok_id = uuid::Uuid::new_v4().to_string();
    let _: i64 = redis::cmd("LPUSH")
        .arg("celery")
        .arg(good_env("celeriac.add", &ok_id, json!({})).to_string())
        .query(&mut conn)
        .unwrap();

    assert_eq!(
        wait_meta(&db, &ok_id, T)["result"],
        json!(3),
        "the worker must keep consuming"
    );
    let nr = wait_meta(&db, &unknown_id, T);
    assert_eq!(nr["status"], json!("FAILURE"));
    assert_eq!(
        nr["result"],
        json!({"exc_type": "NotRegistered", "exc_message": ["no.such.task"], "exc_module": "celery.exceptions"})
    );
    // Dead letters live in the store's hash (docs/dead-letters.md): the bad messages, and the unregistered task's
    // message, kept so it can be replayed once a worker has the task.
    assert!(wait_until(T, || redis::cmd("HLEN")
        .arg("celeriac:dead_letter:entries")
        .query::<i64>(&mut conn)
        .unwrap()
        > bad.len() as i64));
    let letters: Vec<String> = redis::cmd("HVALS")
        .arg("celeriac:dead_letter:entries")
        .query(&mut conn)
        .unwrap();
    for (_, reason) in &bad {
        assert!(
            letters.iter().any(|l| l.contains(reason)),
            "no dead letter with reason {reason:?}"
        );
    }
    assert!(
        letters.iter().any(|l| l.contains(&unknown_id)),
        "the unregistered task's message is kept"
    );
    // Every dead letter keeps the original message.
    assert!(letters.iter().any(|l| l.len() > 10 * 1024 * 1024));
    // Nothing left unacked, nothing left in the queue.
    assert!(wait_until(T, || unacked(&mut conn) == 0));
    let qlen: i64 = redis::cmd("LLEN").arg("celery").query(&mut conn).unwrap();
    assert_eq!(qlen, 0);
    assert!(w.output().contains("rejecting message"));
}

/// Warm shutdown (SIGTERM) gives back reserved messages to the front of the queue and finishes active ones.
#[test]
fn warm_shutdown_restores_reserved_messages() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let mut w = rust_worker(
        &db.url,
        "warm@%h",
        &["-c", "1", "--prefetch-multiplier", "4"],
    );
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
active = app.send_task('celeriac.sleep', args=(1.5,)).id
rest = [app.send_task('celeriac.add', args=(i, i)).id for i in range(3)]
print(json.dumps({'active': active, 'rest': rest}))
"#,
        T,
    );
    let v = py_json(&out);
    let mut conn = db.conn();
    assert!(wait_until(T, || unacked(&mut conn) >= 3));
    w.signal("TERM");
    assert!(
        w.wait_timeout(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        w.output()
    );
    // The active task finished; the reserved ones are back in the queue, flagged redelivered.
    assert_eq!(
        wait_meta(&db, v["active"].as_str().unwrap(), T)["status"],
        json!("SUCCESS")
    );
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg("celery")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(queued.len(), 3, "{}", w.output());
    assert!(queued.iter().all(|m| m.contains("\"redelivered\": true")));
    let held = unacked(&mut conn);
    assert_eq!(held, 0);
}

/// How many messages kombu's `unacked` hash holds.
fn unacked(conn: &mut redis::Connection) -> i64 {
    redis::cmd("HLEN").arg("unacked").query(conn).unwrap()
}

/// Soft and hard time limits from Python's `apply_async(time_limit=, soft_time_limit=)`, `link_error` errbacks,
/// `--track-started` (STARTED visible to Python) and `ignore_result` (nothing stored).
#[test]
fn time_limits_errbacks_track_started_ignore_result() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _w = rust_worker(&db.url, "opts@%h", &["-c", "3", "--track-started"]);
    let out = run_python(
        &py,
        &db.url,
        r#"
import json, time
from pytasks import app
res = {}
for name, opts in [('soft', {'soft_time_limit': 0.3}), ('hard', {'time_limit': 0.3})]:
    try:
        app.send_task('celeriac.sleep', args=(5,), **opts).get(timeout=20)
        res[name] = 'no error'
    except Exception as e:
        res[name] = type(e).__name__
eb = app.signature('celeriac.echo', args=('errback',))
eb.freeze()
try:
    app.send_task('celeriac.fail', args=('x',), link_error=eb).get(timeout=20)
except ValueError:
    pass
res['errback'] = app.AsyncResult(eb.id).get(timeout=20)
r = app.send_task('celeriac.sleep', args=(1.0,))
seen = set()
while not r.ready():
    seen.add(r.state)
    time.sleep(0.02)
res['started_seen'] = 'STARTED' in seen
ig = app.send_task('celeriac.add', args=(1, 2), ignore_result=True)
time.sleep(1.0)
res['ignored_stored'] = app.backend.get(app.backend.get_key_for_task(ig.id)) is not None
print(json.dumps(res))
"#,
        T,
    );
    let r = py_json(&out);
    assert_eq!(r["soft"], json!("SoftTimeLimitExceeded"));
    assert_eq!(r["hard"], json!("TimeLimitExceeded"));
    // Old-style errback: the failed task's id comes first.
    assert_eq!(r["errback"]["args"][1], json!("errback"));
    assert!(
        r["errback"]["args"][0]
            .as_str()
            .is_some_and(|s| s.len() == 36),
        "{r}"
    );
    assert_eq!(r["started_seen"], json!(true));
    assert_eq!(r["ignored_stored"], json!(false));
}

/// Chords join like Celery 5.7's Redis backend: headers on the Rust worker, and a chord whose header runs on a
/// Python and a Rust worker at once; a failing header marks the body FAILURE with ChordError.
#[test]
fn chords_join_across_python_and_rust_workers() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _rw = rust_worker(
        &db.url,
        "chordrs@%h",
        &["-c", "2", "--result-extended", "-Q", "celery,chordrs"],
    );
    let code = r#"
import json
from celery import chord
from pytasks import app
add = lambda *a: app.signature('celeriac.add', args=a)
res = {}
res['rust_only'] = chord([add(1, 1), add(2, 2), add(3, 3)], app.signature('celeriac.echo')).apply_async().get(timeout=30)
import time
r = chord([add(1, 1), app.signature('celeriac.fail', args=('bad',))], app.signature('celeriac.echo')).apply_async()
try:
    r.get(timeout=30)
    res['failing'] = 'no error'
except Exception as e:
    # Celery re-raises the failed header (the parent) first.
    res['failing'] = type(e).__name__
for _ in range(300):
    meta = app.backend.get_task_meta(r.id)
    if meta['status'] != 'PENDING':
        break
    time.sleep(0.05)
res['body'] = [meta['status'], type(meta['result']).__name__, str(meta['result'])]
print(json.dumps(res))
"#;
    let r = py_json(&run_python(&py, &db.url, code, T));
    assert_eq!(r["rust_only"], json!({"args": [[2, 4, 6]], "kwargs": {}}));
    assert_eq!(r["failing"], json!("ValueError"));
    assert_eq!(r["body"][0], json!("FAILURE"));
    assert_eq!(r["body"][1], json!("ChordError"), "{r}");
    assert!(
        r["body"][2].as_str().unwrap().contains("ValueError('bad')"),
        "{r}"
    );

    // Now a Python worker shares the default queue: the 20 header tasks go half to a queue only the Rust worker
    // reads and half to one only the Python worker reads (on one shared queue the Rust worker, faster, could take
    // all 20 before Python's next BRPOP), and whoever finishes last runs the body, which either may take.
    let _pw = testkit::python_worker(
        &py,
        &db.url,
        "chordpy@%h",
        &["-c", "2", "-Q", "celery,chordpy"],
    );
    let code = r#"
import json
from celery import chord
from pytasks import app
header = [app.signature('celeriac.add', args=(i, i), queue=('chordrs' if i % 2 else 'chordpy')) for i in range(20)]
r = chord(header, app.signature('celeriac.echo')).apply_async()
body = r.get(timeout=60)
workers = sorted({app.backend.get_task_meta(c.id).get('worker', '?').split('@')[0] for c in r.parent.results})
print(json.dumps({'body': body, 'workers': workers}))
"#;
    let r = py_json(&run_python(&py, &db.url, code, T));
    assert_eq!(
        r["body"]["args"][0],
        json!((0..20).map(|i| 2 * i).collect::<Vec<i64>>())
    );
    assert_eq!(
        r["workers"],
        json!(["chordpy", "chordrs"]),
        "both workers must have run header tasks: {r}"
    );
}
