//! Issue 12 proven against the real thing: Python Celery 5.7 clients, workers, `celery inspect`/`control` and
//! Flower 2.2, the `celeriac-worker` binary and the `celeriac` command line on one RabbitMQ (a private vhost per
//! test, testkit::AmqpVhost), with the Redis result backend (a database per test, testkit::RedisDb) or `rpc://`.

mod rc_common;

use rc_common::{celeriac, celery_with, free_port, http_get};
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{
    amqp_vhost_or_skip, py_json, python_or_skip, rabbit_node_or_skip, redis_db_or_skip,
    run_python_with, rust_worker, wait_meta,
};

const T: Duration = Duration::from_secs(90);

/// Python's `send_task` to the Rust built-ins on RabbitMQ: results through Redis, the failure re-raised as the
/// right exception, retry, countdown, expires, a chain, unicode and a 1 MB argument.
#[test]
fn python_client_calls_rust_builtins_on_rabbitmq() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _w = rust_worker(
        &vhost.url,
        "amqp@%h",
        &["-c", "4", "--result-backend", &db.url],
    );
    python_calls_the_builtins(&py, &vhost.url, &db.url);
}

/// Python's `send_task` to the Rust built-ins with the given broker and result backend, and what must come back:
/// values, the failure re-raised as `ValueError`, a retried task, a countdown, an expired task as REVOKED, a chain,
/// unicode and a 1 MB argument.
fn python_calls_the_builtins(py: &std::path::Path, broker: &str, backend: &str) {
    let out = run_python_with(
        py,
        broker,
        backend,
        r#"
import json, time
from celery import chain
from celery.exceptions import TaskRevokedError
from pytasks import app
res = {}
res['ping'] = app.send_task('celeriac.ping').get(timeout=20)
res['echo'] = app.send_task('celeriac.echo', args=('ünï€ode', 1, None), kwargs={'k': [1, 2.5]}).get(timeout=20)
res['add'] = app.send_task('celeriac.add', args=(2, 3)).get(timeout=20)
try:
    app.send_task('celeriac.fail', args=('boom',)).get(timeout=20)
    res['fail'] = 'no exception'
except Exception as e:
    res['fail'] = [type(e).__name__, str(e)]
res['flaky'] = app.send_task('celeriac.flaky', kwargs={'succeed_on': 2, 'countdown': 0.2}).get(timeout=20)
t0 = time.time()
res['countdown'] = app.send_task('celeriac.add', args=(1, 1), countdown=1.5).get(timeout=20)
res['countdown_waited'] = time.time() - t0 >= 1.4
r = app.send_task('celeriac.add', args=(3, 3), expires=-1)
try:
    r.get(timeout=20)
    res['expired'] = 'ran'
except TaskRevokedError as e:
    res['expired'] = [r.state, str(e)]
c = chain(app.signature('celeriac.add', args=(2, 3)), app.signature('celeriac.add', args=(10,)),
          app.signature('celeriac.add', args=(100,))).apply_async()
res['chain'] = c.get(timeout=20)
big = 'x' * (1024 * 1024)
res['big'] = app.send_task('celeriac.echo', args=(big,)).get(timeout=30)['args'][0] == big
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
    assert_eq!(r["add"], json!(5));
    assert_eq!(r["fail"], json!(["ValueError", "boom"]));
    assert_eq!(r["flaky"], json!("ok after 2 retries"));
    assert_eq!(r["countdown"], json!(2));
    assert_eq!(r["countdown_waited"], json!(true));
    assert_eq!(r["expired"], json!(["REVOKED", "expired"]));
    assert_eq!(r["chain"], json!(115));
    assert_eq!(r["big"], json!(true));
}

/// A backlog on an `x-max-priority` queue is served in RabbitMQ's order: the higher number first, first in first
/// out among equals (the opposite of kombu on Redis).
#[test]
fn priorities_on_an_x_max_priority_queue_are_served_highest_first() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let prios = [9, 0, 5, 3, 8, 1, 6, 2, 4, 7];
    // Publish first, with no worker running; Python declares `celery` with x-max-priority 10.
    let out = run_python_with(
        &py,
        &vhost.url,
        &db.url,
        &format!(
            r#"
import json
from pytasks import app
app.conf.task_queue_max_priority = 10
ids = [app.send_task('celeriac.echo', args=(p,), priority=p).id for p in {prios:?}]
print(json.dumps(ids))
"#
        ),
        T,
    );
    let ids: Vec<String> = serde_json::from_value(py_json(&out)).unwrap();
    let _w = rust_worker(
        &vhost.url,
        "prio@%h",
        &[
            "-c",
            "1",
            "--prefetch-multiplier",
            "1",
            "--task-queue-max-priority",
            "10",
            "--result-backend",
            &db.url,
        ],
    );
    let mut done: Vec<(String, u8)> = ids
        .iter()
        .zip(prios)
        .map(|(id, p)| {
            let meta = wait_meta(&db, id, T);
            assert_eq!(meta["status"], json!("SUCCESS"), "{meta}");
            (meta["date_done"].as_str().unwrap().to_string(), p)
        })
        .collect();
    done.sort();
    let served: Vec<u8> = done.iter().map(|(_, p)| *p).collect();
    assert_eq!(served, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
}

/// A Python and a Rust worker share the `celery` queue on RabbitMQ; both do some of the work.
#[test]
fn python_and_rust_workers_share_a_queue_on_rabbitmq() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _pw = testkit::python_worker_with(&py, &vhost.url, &db.url, "pyshare@%h", &["-c", "2"]);
    let _rw = rust_worker(
        &vhost.url,
        "rsshare@%h",
        &[
            "-c",
            "2",
            "--result-extended",
            "--prefetch-multiplier",
            "1",
            "--result-backend",
            &db.url,
        ],
    );
    let out = run_python_with(
        &py,
        &vhost.url,
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

/// `kill -9` of a Rust worker with acks_late tasks in flight: RabbitMQ redelivers them when the connection dies,
/// and a second worker completes every one.
#[test]
fn kill_9_with_acks_late_loses_nothing_on_rabbitmq() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let args = ["-c", "3", "--acks-late", "--result-backend", &db.url];
    let mut w = rust_worker(&vhost.url, "late@%h", &args);
    let out = run_python_with(
        &py,
        &vhost.url,
        &db.url,
        r#"
import json
from pytasks import app
print(json.dumps([app.send_task('celeriac.sleep', args=(2,)).id for _ in range(9)]))
"#,
        T,
    );
    let ids: Vec<String> = serde_json::from_value(py_json(&out)).unwrap();
    // Kill while the first three run (each takes 2 s; the worker prefetched the rest).
    std::thread::sleep(Duration::from_millis(1000));
    w.signal("KILL");
    w.wait_timeout(Duration::from_secs(10));
    let mut conn = db.conn();
    let finished = ids
        .iter()
        .filter(|id| {
            redis::cmd("EXISTS")
                .arg(format!("celery-task-meta-{id}"))
                .query::<i64>(&mut conn)
                .unwrap()
                == 1
        })
        .count();
    assert!(
        finished < ids.len(),
        "every task had finished before the kill; nothing was in flight"
    );
    let _w2 = rust_worker(&vhost.url, "late2@%h", &args);
    for id in &ids {
        assert_eq!(wait_meta(&db, id, T)["status"], json!("SUCCESS"));
    }
}

/// Bad input on AMQP: a body that is not JSON, a task message without headers, a content type the worker does
/// not accept, and an unknown task. The first three are kept in the durable `celeriac:dead_letter` queue, the
/// unknown task fails with `NotRegistered`, and the worker goes on consuming.
#[test]
fn bad_input_on_rabbitmq_is_dead_lettered_and_the_worker_keeps_consuming() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let w = rust_worker(&vhost.url, "bad@%h", &["--result-backend", &db.url]);
    let out = run_python_with(
        &py,
        &vhost.url,
        &db.url,
        r#"
import json, time
from pytasks import app
with app.connection_for_write() as conn:
    p = conn.Producer()
    p.publish(b'{not json', exchange='', routing_key='celery', content_type='application/json',
              content_encoding='utf-8')
    p.publish(b'[[1, 2], {}, {}]', exchange='', routing_key='celery', content_type='application/json',
              content_encoding='utf-8')
    p.publish(b'\x80\x03}q\x00.', exchange='', routing_key='celery',
              content_type='application/x-python-serialize', content_encoding='binary',
              headers={'task': 'celeriac.add', 'id': 'pickled', 'lang': 'py'})
res = {}
try:
    app.send_task('no.such.task').get(timeout=20)
    res['unknown'] = 'ran'
except Exception as e:
    res['unknown'] = type(e).__name__
res['after'] = app.send_task('celeriac.add', args=(1, 2)).get(timeout=20)
with app.connection_for_write() as conn:
    deadline = time.time() + 20
    while True:
        n = conn.default_channel.queue_declare('celeriac:dead_letter', passive=True).message_count
        if n >= 4 or time.time() > deadline:
            break
        time.sleep(0.2)
res['dead_letters'] = n
print(json.dumps(res))
"#,
        T,
    );
    let r = py_json(&out);
    assert_eq!(r["unknown"], json!("NotRegistered"));
    assert_eq!(r["after"], json!(3), "the worker must keep consuming");
    // The three unreadable messages, and the unregistered task's message, kept so it can be replayed once a worker
    // has the task (docs/dead-letters.md).
    assert_eq!(r["dead_letters"], json!(4));
    assert!(w.output().contains("rejecting message"));
}

/// Celery's `rpc://` backend with a Rust worker: Python's `AsyncResult.get()` gets every result from its reply
/// queue (value, the failure re-raised, a retried task, countdown, an expired task as REVOKED, a chain, unicode,
/// 1 MB), and the Rust client gets them too.
#[test]
fn rpc_results_from_the_rust_worker_reach_python_and_rust_callers() {
    let vhost = amqp_vhost_or_skip!();
    let py = python_or_skip!();
    let _w = rust_worker(
        &vhost.url,
        "rpcw@%h",
        &["-c", "4", "--result-backend", "rpc://"],
    );
    python_calls_the_builtins(&py, &vhost.url, "rpc://");

    // The Rust client (through the CLI) on rpc:// too: a value, and a failure with exit status 1.
    let ok = celeriac(
        &vhost.url,
        &[
            "--result-backend",
            "rpc://",
            "call",
            "celeriac.add",
            "-a",
            "[20, 22]",
            "--wait",
        ],
    );
    assert!(ok.ok, "{}\n{}", ok.stdout, ok.stderr);
    assert_eq!(ok.stdout.trim(), "42");
    let bad = celeriac(
        &vhost.url,
        &[
            "--result-backend",
            "rpc://",
            "call",
            "celeriac.fail",
            "-a",
            "[\"boom\"]",
            "--wait",
        ],
    );
    assert_eq!(bad.code, Some(1), "{}\n{}", bad.stdout, bad.stderr);
    assert!(
        bad.stdout.contains("FAILURE") && bad.stdout.contains("ValueError: boom"),
        "{}",
        bad.stdout
    );
}

/// The Rust command line and client against Python workers on RabbitMQ: results through Redis and through
/// `rpc://`, `celeriac inspect` sees the Python workers, `celeriac purge` empties a queue.
#[test]
fn the_rust_cli_calls_python_workers_on_rabbitmq() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _redis_side = testkit::python_worker_with(
        &py,
        &vhost.url,
        &db.url,
        "pyredis@amqp",
        &["-c", "1", "-Q", "viaredis", "-E"],
    );
    let _rpc_side = testkit::python_worker_with(
        &py,
        &vhost.url,
        "rpc://",
        "pyrpc@amqp",
        &["-c", "1", "-Q", "viarpc"],
    );

    let via_redis = celeriac(
        &vhost.url,
        &[
            "--result-backend",
            &db.url,
            "--json",
            "call",
            "tasks.whoami",
            "-a",
            "[\"r\"]",
            "-Q",
            "viaredis",
            "--wait",
        ],
    );
    assert!(via_redis.ok, "{}\n{}", via_redis.stdout, via_redis.stderr);
    let meta: Value = serde_json::from_str(via_redis.stdout.trim()).unwrap();
    assert_eq!(meta["status"], json!("SUCCESS"));
    assert_eq!(
        meta["result"],
        json!({"hostname": "pyredis@amqp", "tag": "r"})
    );
    // It really went through Redis: the Python worker stored it there.
    let stored = wait_meta(&db, meta["task_id"].as_str().unwrap(), T);
    assert_eq!(stored["worker"], json!("pyredis@amqp"));

    let via_rpc = celeriac(
        &vhost.url,
        &[
            "--result-backend",
            "rpc://",
            "call",
            "tasks.add",
            "-a",
            "[2, 3]",
            "-k",
            "{\"x\": 37}",
            "-Q",
            "viarpc",
            "--wait",
        ],
    );
    assert!(via_rpc.ok, "{}\n{}", via_rpc.stdout, via_rpc.stderr);
    assert_eq!(via_rpc.stdout.trim(), "42");
    let failed = celeriac(
        &vhost.url,
        &[
            "--result-backend",
            "rpc://",
            "call",
            "tasks.fail",
            "-a",
            "[\"nope\"]",
            "-Q",
            "viarpc",
            "--wait",
        ],
    );
    assert_eq!(failed.code, Some(1), "{}\n{}", failed.stdout, failed.stderr);
    assert!(
        failed.stdout.contains("ValueError: nope"),
        "{}",
        failed.stdout
    );

    let ping = celeriac(&vhost.url, &["--json", "inspect", "ping"]);
    assert!(ping.ok, "{}\n{}", ping.stdout, ping.stderr);
    let replies: Value = serde_json::from_str(ping.stdout.trim()).unwrap();
    assert_eq!(replies["pyredis@amqp"], json!({"ok": "pong"}), "{replies}");
    assert_eq!(replies["pyrpc@amqp"], json!({"ok": "pong"}), "{replies}");

    // With RabbitMQ and no result backend a task can be sent, but waiting for it says what is missing.
    let no_backend = celeriac(
        &vhost.url,
        &[
            "call",
            "tasks.add",
            "-a",
            "[1, 2]",
            "-Q",
            "viaredis",
            "--wait",
        ],
    );
    assert!(!no_backend.ok, "{}", no_backend.stdout);
    assert!(
        no_backend.stderr.contains("no result backend configured"),
        "{}",
        no_backend.stderr
    );

    // `celeriac control` steers a Python worker on RabbitMQ.
    let rl = celeriac(
        &vhost.url,
        &[
            "--json",
            "control",
            "rate_limit",
            "tasks.add",
            "100/m",
            "-d",
            "pyredis@amqp",
        ],
    );
    assert!(rl.ok, "{}\n{}", rl.stdout, rl.stderr);
    let replies: Value = serde_json::from_str(rl.stdout.trim()).unwrap();
    assert_eq!(
        replies["pyredis@amqp"],
        json!({"ok": "new rate limit set successfully"}),
        "{replies}"
    );

    // `celeriac events` receives a Python worker's task events from RabbitMQ's `celeryev` exchange.
    let mut events = std::process::Command::new(testkit::bin("celeriac"));
    events
        .args(["-b", &vhost.url, "events", "--dump", "--duration", "6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let events = events.spawn().expect("celeriac events");
    std::thread::sleep(Duration::from_secs(2));
    let again = celeriac(
        &vhost.url,
        &[
            "--result-backend",
            &db.url,
            "call",
            "tasks.add",
            "-a",
            "[4, 4]",
            "-Q",
            "viaredis",
            "--wait",
        ],
    );
    assert_eq!(again.stdout.trim(), "8", "{}", again.stderr);
    let dumped = testkit::wait_output(events, T);
    let text = String::from_utf8_lossy(&dumped.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("pyredis@amqp") && l.contains("task succeeded")),
        "no task-succeeded from pyredis@amqp in:\n{text}\n{}",
        String::from_utf8_lossy(&dumped.stderr)
    );

    for _ in 0..3 {
        let sent = celeriac(
            &vhost.url,
            &["call", "tasks.add", "-a", "[1, 1]", "-Q", "idle"],
        );
        assert!(sent.ok, "{}", sent.stderr);
    }
    let purged = celeriac(&vhost.url, &["--json", "purge", "-f", "-Q", "idle"]);
    assert!(purged.ok, "{}", purged.stderr);
    let p: Value = serde_json::from_str(purged.stdout.trim()).unwrap();
    assert_eq!(p["purged"], json!(3), "{p}");
}

/// `celery inspect` and `celery control` (Celery 5.7) steer a Rust worker on RabbitMQ, and Flower 2.2 on RabbitMQ
/// lists it and its tasks.
#[test]
fn celery_inspect_control_and_flower_see_the_rust_worker_on_rabbitmq() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let node = "rsctl@amqphost";
    let w = rust_worker(
        &vhost.url,
        node,
        &[
            "-c",
            "2",
            "-Q",
            "celery,longtail",
            "--result-backend",
            &db.url,
        ],
    );
    let inspect = |cmd: &str| -> Value {
        let o = celery_with(
            &py,
            &vhost.url,
            &db.url,
            &["inspect", cmd, "-d", node, "--json"],
        );
        assert!(o.ok, "celery inspect {cmd}: {}\n{}", o.stdout, o.stderr);
        let v: Value = serde_json::from_str(o.stdout.trim())
            .unwrap_or_else(|e| panic!("celery inspect {cmd} printed no JSON ({e}): {}", o.stdout));
        v[node].clone()
    };
    assert_eq!(inspect("ping"), json!({"ok": "pong"}));
    let stats = inspect("stats");
    assert_eq!(stats["broker"]["transport"], json!("amqp"), "{stats}");
    assert_eq!(stats["pool"]["max-concurrency"], json!(2));
    let queues = inspect("active_queues");
    let names: Vec<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    let dq2 = format!("{node}.dq2");
    assert!(
        names.contains(&"celery") && names.contains(&"longtail") && names.contains(&dq2.as_str()),
        "{names:?}"
    );
    let direct = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == dq2.as_str())
        .unwrap();
    assert_eq!(direct["exchange"]["name"], json!("C.dq2"));
    assert_eq!(direct["routing_key"], json!(node));
    assert!(
        inspect("registered")
            .as_array()
            .unwrap()
            .contains(&json!("celeriac.add"))
    );

    let rl = celery_with(
        &py,
        &vhost.url,
        &db.url,
        &[
            "control",
            "rate_limit",
            "celeriac.add",
            "100/m",
            "-d",
            node,
            "--json",
        ],
    );
    assert!(rl.ok, "{}\n{}", rl.stdout, rl.stderr);
    assert!(
        rl.stdout.contains("new rate limit set successfully"),
        "{}",
        rl.stdout
    );

    // revoke a scheduled task: stored REVOKED, never run.
    let sent = run_python_with(
        &py,
        &vhost.url,
        &db.url,
        r#"
import json
from pytasks import app
print(json.dumps({"id": app.send_task('celeriac.add', args=(1, 2), countdown=60).id}))
"#,
        T,
    );
    let id = py_json(&sent)["id"].as_str().unwrap().to_string();
    assert!(
        testkit::wait_until(T, || { inspect("scheduled").to_string().contains(&id) }),
        "the countdown task was never scheduled"
    );
    let rv = celery_with(&py, &vhost.url, &db.url, &["control", "revoke", &id]);
    assert!(rv.ok, "{}\n{}", rv.stdout, rv.stderr);
    assert_eq!(wait_meta(&db, &id, T)["status"], json!("REVOKED"));
    assert!(inspect("revoked").to_string().contains(&id));

    // Flower 2.2 on the same RabbitMQ vhost.
    let port = free_port();
    let mut cmd = std::process::Command::new(&py);
    cmd.args([
        "-m",
        "celery",
        "-b",
        &vhost.url,
        "flower",
        &format!("--port={port}"),
        "--address=127.0.0.1",
    ])
    .current_dir(testkit::repo_root().join("tests/python"))
    .env("CELERY_RESULT_BACKEND", &db.url)
    .env("FLOWER_UNAUTHENTICATED_API", "true")
    .env("PYTHONUNBUFFERED", "1");
    let flower = testkit::Child::spawn("flower-amqp", &mut cmd);
    let get_json = |path: &str| -> Value {
        http_get(port, path)
            .filter(|(c, _)| *c == 200)
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null)
    };
    let mut workers = Value::Null;
    assert!(
        testkit::wait_until(T, || {
            workers = get_json("/api/workers?refresh=1");
            workers[node]["stats"].is_object() && workers[node]["registered"].is_array()
        }),
        "Flower does not list {node}: {workers}\n{}",
        flower.output()
    );
    assert_eq!(workers[node]["stats"]["broker"]["transport"], json!("amqp"));
    assert!(testkit::wait_until(T, || w
        .output()
        .contains("task events enabled by remote control")));
    let v = py_json(&run_python_with(
        &py,
        &vhost.url,
        &db.url,
        r#"
import json
from pytasks import app
ok = app.send_task('celeriac.add', args=(2, 3))
print(json.dumps([ok.get(timeout=60), ok.id]))
"#,
        T,
    ));
    assert_eq!(v[0], json!(5));
    let ok_id = v[1].as_str().unwrap().to_string();
    let mut tasks = Value::Null;
    assert!(
        testkit::wait_until(T, || {
            tasks = get_json("/api/tasks");
            tasks[&ok_id]["state"] == "SUCCESS"
        }),
        "Flower never saw {ok_id} succeed: {tasks}\n{}",
        flower.output()
    );
    assert_eq!(tasks[&ok_id]["worker"], json!(node));
    assert_eq!(tasks[&ok_id]["result"], json!("5"));
}

/// Publish `n` tasks `celeriac.sleep(secs)` from Python on `broker`; their ids.
fn publish_sleeps(
    py: &std::path::Path,
    broker: &str,
    backend: &str,
    n: usize,
    secs: f64,
) -> Vec<String> {
    let out = run_python_with(
        py,
        broker,
        backend,
        &format!(
            r#"
import json
from pytasks import app
print(json.dumps([app.send_task('celeriac.sleep', args=({secs},)).id for _ in range({n})]))
"#
        ),
        T,
    );
    serde_json::from_value(py_json(&out)).unwrap()
}

fn count_done(db: &testkit::RedisDb, ids: &[String]) -> usize {
    let mut conn = db.conn();
    ids.iter()
        .filter(|id| {
            let raw: Option<String> = redis::cmd("GET")
                .arg(format!("celery-task-meta-{id}"))
                .query(&mut conn)
                .unwrap();
            raw.is_some_and(|r| r.contains("\"SUCCESS\""))
        })
        .count()
}

/// RabbitMQ restarted under a running worker (a node of the test's own, `rabbitmqctl stop` and start again): the
/// worker reconnects with backoff, declares again and goes on. Every task published before the restart (a backlog
/// the restart cuts through) and after it completes, and the worker answers `celery inspect ping` again.
#[test]
fn the_worker_rides_out_a_rabbitmq_restart() {
    let mut node = rabbit_node_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let w = rust_worker(
        &node.url,
        "restart@amqp",
        &["-c", "2", "--result-backend", &db.url],
    );
    // 60 x 0.25 s on two slots: about 7.5 s of work, so the restart (slow on a loaded machine) cuts through it.
    let before = publish_sleeps(&py, &node.url, &db.url, 60, 0.25);
    assert!(
        testkit::wait_until(T, || count_done(&db, &before) >= 6),
        "the backlog did not start:\n{}",
        w.output()
    );
    node.stop();
    let during = count_done(&db, &before);
    assert!(
        during < before.len(),
        "the whole backlog ran before the restart; nothing was tested"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        node.start_again(),
        "RabbitMQ did not restart:\n{}",
        node.output()
    );

    assert!(
        testkit::wait_until(T, || count_done(&db, &before) == before.len()),
        "{} of {} tasks done after the restart (stopped at {during}):\n{}",
        count_done(&db, &before),
        before.len(),
        w.output()
    );
    let after = publish_sleeps(&py, &node.url, &db.url, 5, 0.0);
    assert!(
        testkit::wait_until(T, || count_done(&db, &after) == after.len()),
        "tasks sent after the restart did not run:\n{}",
        w.output()
    );
    let out = w.output();
    assert!(
        out.contains("AMQP connection lost; connecting again"),
        "the worker never saw the connection go:\n{out}"
    );
    let ping = celery_with(
        &py,
        &node.url,
        &db.url,
        &["inspect", "ping", "-d", "restart@amqp", "--json"],
    );
    assert!(ping.ok, "{}\n{}", ping.stdout, ping.stderr);
    assert!(ping.stdout.contains("pong"), "{}", ping.stdout);
}

/// `amqps://` with Celery's `broker_use_ssl` settings, on a RabbitMQ node of the test's own that takes TLS only
/// with a client certificate (a CA made for the test): Python Celery (`broker_use_ssl`) sends to the Rust worker,
/// the `celeriac` CLI calls it, both with the `ssl_*` URL parameters; without the client certificate the broker
/// refuses the connection and the CLI says so.
#[test]
fn tls_with_a_client_certificate_on_amqps() {
    let node = match testkit::RabbitNode::start_tls() {
        Some(n) => n,
        None => {
            testkit::require(
                "a private RabbitMQ node with TLS (rabbitmq-server, rabbitmqctl, openssl)",
                false,
            );
            return;
        }
    };
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let tls = node.tls.clone().unwrap();
    let base = format!("amqps://guest:guest@localhost:{}//", tls.port);
    let url = format!(
        "{base}?ssl_ca_certs={}&ssl_certfile={}&ssl_keyfile={}&ssl_cert_reqs=required",
        tls.ca.display(),
        tls.client_cert.display(),
        tls.client_key.display()
    );
    let w = rust_worker(&url, "tls@amqp", &["-c", "2", "--result-backend", &db.url]);
    let out = run_python_with(
        &py,
        &base,
        &db.url,
        &format!(
            r#"
import json, ssl
from pytasks import app
app.conf.broker_use_ssl = {{'ca_certs': '{}', 'certfile': '{}', 'keyfile': '{}', 'cert_reqs': ssl.CERT_REQUIRED}}
print(json.dumps({{'add': app.send_task('celeriac.add', args=(2, 3)).get(timeout=30)}}))
"#,
            tls.ca.display(),
            tls.client_cert.display(),
            tls.client_key.display()
        ),
        T,
    );
    assert_eq!(py_json(&out)["add"], json!(5), "{}", w.output());
    let ok = celeriac(
        &url,
        &[
            "--result-backend",
            &db.url,
            "call",
            "celeriac.add",
            "-a",
            "[20, 22]",
            "--wait",
        ],
    );
    assert!(ok.ok, "{}\n{}", ok.stdout, ok.stderr);
    assert_eq!(ok.stdout.trim(), "42");

    let no_cert = format!("{base}?ssl_ca_certs={}", tls.ca.display());
    let refused = celeriac(&no_cert, &["inspect", "ping", "--timeout", "1"]);
    assert!(!refused.ok, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("connecting to amqps://"),
        "{}",
        refused.stderr
    );
}

/// Celery 5.5+'s native delayed delivery (quorum queues on a topic exchange): the Rust worker declares the 28
/// delay levels as Celery's worker does; a countdown sent by Python waits in RabbitMQ's delay queues, not in the
/// worker, and comes back to `celery` when due; the `celeriac` CLI sends its countdowns the same way.
#[test]
fn countdowns_on_quorum_queues_wait_in_rabbitmqs_delay_levels() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let mode = [
        "--task-default-queue-type",
        "quorum",
        "--task-default-exchange-type",
        "topic",
    ];
    let _w = rust_worker(
        &vhost.url,
        "delay@amqp",
        &[&mode[..], &["-c", "2", "--result-backend", &db.url]].concat(),
    );
    let out = run_python_with(
        &py,
        &vhost.url,
        &db.url,
        r#"
import json, time
from pytasks import app
app.conf.task_default_queue_type = 'quorum'
app.conf.task_create_missing_queue_type = 'quorum'
app.conf.task_default_exchange_type = 'topic'
t0 = time.time()
r = app.send_task('celeriac.add', args=(1, 2), countdown=3)
time.sleep(0.5)
with app.connection_for_write() as conn:
    waiting = conn.default_channel.queue_declare('celery_delayed_1', passive=True).message_count
scheduled = app.control.inspect(timeout=1).scheduled() or {}
res = r.get(timeout=30)
print(json.dumps({'waiting': waiting, 'scheduled': scheduled, 'result': res, 'waited': time.time() - t0}))
"#,
        T,
    );
    let r = py_json(&out);
    assert_eq!(r["waiting"], json!(1), "3 s = 0b11: level 1 holds it first");
    assert_eq!(
        r["scheduled"]["delay@amqp"],
        json!([]),
        "the worker must not hold it"
    );
    assert_eq!(r["result"], json!(3));
    assert!(r["waited"].as_f64().unwrap() >= 2.9, "{r}");

    // The CLI: a countdown of 2 s (0b10) waits in level 1 too, and the worker holds nothing meanwhile.
    let sent = celeriac(
        &vhost.url,
        &[
            &mode[..],
            &[
                "--result-backend",
                &db.url,
                "call",
                "celeriac.add",
                "-a",
                "[20, 22]",
                "--countdown",
                "2",
            ],
        ]
        .concat(),
    );
    assert!(sent.ok, "{}\n{}", sent.stdout, sent.stderr);
    let id = sent.stdout.trim().to_string();
    let out = run_python_with(
        &py,
        &vhost.url,
        &db.url,
        r#"
import json
from pytasks import app
with app.connection_for_write() as conn:
    waiting = conn.default_channel.queue_declare('celery_delayed_1', passive=True).message_count
print(json.dumps({'waiting': waiting, 'scheduled': app.control.inspect(timeout=1).scheduled() or {}}))
"#,
        T,
    );
    let r = py_json(&out);
    assert_eq!(r["waiting"], json!(1), "{r}");
    assert_eq!(r["scheduled"]["delay@amqp"], json!([]), "{r}");
    let got = celeriac(
        &vhost.url,
        &["--result-backend", &db.url, "result", &id, "--wait"],
    );
    assert!(got.ok, "{}\n{}", got.stdout, got.stderr);
    assert_eq!(got.stdout.trim(), "42");
}

/// Tasks waiting for their ETA are held unacknowledged outside the prefetch budget: like Celery, the worker
/// raises RabbitMQ's `basic.qos` by as many, so with a prefetch of 1 and three tasks a minute away, a task sent
/// now still runs at once.
#[test]
fn held_eta_tasks_raise_the_prefetch_so_delivery_goes_on() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _w = rust_worker(
        &vhost.url,
        "qos@amqp",
        &[
            "-c",
            "1",
            "--prefetch-multiplier",
            "1",
            "--result-backend",
            &db.url,
        ],
    );
    let out = run_python_with(
        &py,
        &vhost.url,
        &db.url,
        r#"
import json, time
from pytasks import app
later = [app.send_task('celeriac.add', args=(i, i), countdown=60).id for i in range(3)]
time.sleep(1.0)
# Bounded well under the held tasks' minute: without the raised prefetch this get() times out.
now = app.send_task('celeriac.add', args=(2, 3)).get(timeout=15)
scheduled = app.control.inspect(timeout=1).scheduled() or {}
ids = sorted(s['request']['id'] for s in scheduled.get('qos@amqp', []))
print(json.dumps({'now': now, 'held': ids == sorted(later)}))
"#,
        T,
    );
    let r = py_json(&out);
    assert_eq!(r["now"], json!(5));
    assert_eq!(r["held"], json!(true), "{r}");
}

/// Warm shutdown on RabbitMQ: the active task finishes; the messages the worker had prefetched and not started go
/// back to the queue (`basic.reject` with requeue) and the next worker runs them all.
#[test]
fn warm_shutdown_on_rabbitmq_gives_prefetched_messages_back() {
    let vhost = amqp_vhost_or_skip!();
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let flags = [
        "-c",
        "1",
        "--prefetch-multiplier",
        "4",
        "--result-extended",
        "--result-backend",
        db.url.as_str(),
    ];
    let mut first = rust_worker(&vhost.url, "warm1@amqp", &flags);
    let out = run_python_with(
        &py,
        &vhost.url,
        &db.url,
        r#"
import json
from pytasks import app
slow = app.send_task('celeriac.sleep', args=(2,)).id
quick = [app.send_task('celeriac.add', args=(i, i)).id for i in range(5)]
print(json.dumps({'slow': slow, 'quick': quick}))
"#,
        T,
    );
    let ids = py_json(&out);
    std::thread::sleep(Duration::from_millis(800));
    first.signal("TERM");
    let status = first.wait_timeout(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "warm shutdown: {status:?}\n{}",
        first.output()
    );
    let slow = wait_meta(&db, ids["slow"].as_str().unwrap(), T);
    assert_eq!(slow["status"], json!("SUCCESS"), "the active task finishes");
    assert_eq!(slow["worker"], json!("warm1@amqp"));

    let _second = rust_worker(&vhost.url, "warm2@amqp", &flags);
    for id in ids["quick"].as_array().unwrap() {
        let meta = wait_meta(&db, id.as_str().unwrap(), T);
        assert_eq!(meta["status"], json!("SUCCESS"), "{meta}");
        assert_eq!(
            meta["worker"],
            json!("warm2@amqp"),
            "the first worker gave it back without running it: {meta}"
        );
    }
}
