//! Issue 3, remote control: the real `celery inspect` / `celery control` (Celery 5.7) against a Rust worker,
//! compared with a Python worker in the same test; a mixed cluster seen by both command lines; mingle in both
//! directions; bad input on the pidbox channel. Each test owns a Redis database (testkit::RedisDb).

mod rc_common;

use rc_common::{celeriac, celery, inspect, keys, py_json, python_worker_with_events};
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{
    python_or_skip, python_worker, redis_db_or_skip, run_python, rust_worker, wait_until,
};

const T: Duration = Duration::from_secs(120);

/// Every inspect command of celery-wire.md 6.5, asked by Python's API of both workers: the Rust worker's
/// reply has the shape of the Python worker's, and `celery inspect <cmd>` parses and prints it.
#[test]
fn celery_inspect_commands_match_python_worker_shapes() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _rs = rust_worker(&db.url, "rs@rc", &["-Q", "rsq", "-c", "2"]);
    let _pw = python_worker(&py, &db.url, "py@rc", &["-Q", "pyq", "-c", "2"]);
    let out = run_python(
        &py,
        &db.url,
        r#"
import json, time
from pytasks import app
ids = {}
ids['rs_sched'] = app.send_task('celeriac.add', args=(2, 3), queue='rsq', countdown=300).id
ids['py_sched'] = app.send_task('tasks.add', args=(2, 3), queue='pyq', countdown=300).id
ids['rs_active'] = app.send_task('celeriac.sleep', args=(600,), queue='rsq').id
ids['py_active'] = app.send_task('tasks.sleep', args=(600,), queue='pyq').id
i = app.control.inspect(timeout=1)
deadline = time.time() + 60
while time.time() < deadline:
    a = i.active() or {}
    s = i.scheduled() or {}
    if all(len(a.get(n, [])) == 1 and len(s.get(n, [])) == 1 for n in ('rs@rc', 'py@rc')):
        break
    time.sleep(0.3)
res = {'ids': ids}
for cmd in ['ping', 'stats', 'active', 'reserved', 'scheduled', 'revoked', 'registered', 'active_queues', 'conf', 'report', 'clock']:
    res[cmd] = getattr(i, cmd)()
res['registered_items'] = i.registered('acks_late', 'rate_limit')
res['active_safe'] = i.active(safe=True)
res['query_task'] = i.query_task(ids['rs_active'], ids['py_active'], ids['rs_sched'], ids['py_sched'])
for t in ('rs_active', 'py_active'):
    app.control.revoke(ids[t], terminate=True)
print(json.dumps(res))
"#,
        T,
    );
    let r = py_json(&out);
    let (rs, pyn) = ("rs@rc", "py@rc");
    for cmd in [
        "ping",
        "stats",
        "active",
        "reserved",
        "scheduled",
        "revoked",
        "registered",
        "active_queues",
        "conf",
        "report",
        "clock",
        "query_task",
    ] {
        assert!(
            r[cmd].get(rs).is_some(),
            "{cmd}: no reply from the Rust worker: {}",
            r[cmd]
        );
        assert!(
            r[cmd].get(pyn).is_some(),
            "{cmd}: no reply from the Python worker: {}",
            r[cmd]
        );
    }
    assert_eq!(r["ping"][rs], json!({"ok": "pong"}));
    let stats = &r["stats"][rs];
    for k in [
        "total",
        "pid",
        "clock",
        "uptime",
        "pool",
        "broker",
        "prefetch_count",
        "rusage",
    ] {
        assert!(stats.get(k).is_some(), "stats lacks {k}: {stats}");
    }
    assert!(
        stats["clock"].is_string(),
        "stats.clock is a string in Celery"
    );
    assert_eq!(keys(&stats["broker"]), keys(&r["stats"][pyn]["broker"]));
    assert_eq!(keys(&stats["rusage"]), keys(&r["stats"][pyn]["rusage"]));
    assert!(stats["pool"]["max-concurrency"].as_u64() == Some(2));
    assert!(stats["uptime"].is_u64() && stats["prefetch_count"].is_u64());
    for cmd in ["active", "active_safe"] {
        let (a, b) = (&r[cmd][rs], &r[cmd][pyn]);
        assert_eq!(a.as_array().map(Vec::len), Some(1), "{cmd}: {a}");
        assert_eq!(keys(&a[0]), keys(&b[0]), "{cmd} RequestInfo keys");
        assert_eq!(keys(&a[0]["delivery_info"]), keys(&b[0]["delivery_info"]));
        assert_eq!(a[0]["id"], r["ids"]["rs_active"]);
        assert_eq!(a[0]["acknowledged"], json!(true));
    }
    assert_eq!(r["active"][rs][0]["args"], json!([600]));
    assert_eq!(
        r["active_safe"][rs][0]["args"],
        json!("(600,)"),
        "safe=True gives repr strings"
    );
    assert!(r["reserved"][rs].is_array());
    let (s, ps) = (&r["scheduled"][rs][0], &r["scheduled"][pyn][0]);
    assert_eq!(keys(s), keys(ps), "scheduled entry keys");
    assert_eq!(keys(&s["request"]), keys(&ps["request"]));
    assert_eq!(s["request"]["id"], r["ids"]["rs_sched"]);
    assert!(s["eta"].as_str().is_some_and(|e| e.ends_with("+00:00")));
    assert!(r["revoked"][rs].is_array());
    let reg: Vec<&str> = r["registered"][rs]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(reg.contains(&"celeriac.add") && reg.contains(&"celeriac.sleep"));
    assert!(reg.windows(2).all(|w| w[0] <= w[1]), "registered is sorted");
    assert!(
        r["registered_items"][rs]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "celeriac.add [acks_late=False]"),
        "{}",
        r["registered_items"][rs]
    );
    let (q, pq) = (&r["active_queues"][rs], &r["active_queues"][pyn]);
    assert_eq!(keys(&q[0]), keys(&pq[0]), "QueueDict keys");
    assert_eq!(keys(&q[0]["exchange"]), keys(&pq[0]["exchange"]));
    let names: Vec<&str> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"rsq") && names.contains(&"rs@rc.dq2"),
        "{names:?}"
    );
    let qt = &r["query_task"][rs];
    let active_id = r["ids"]["rs_active"].as_str().unwrap();
    let sched_id = r["ids"]["rs_sched"].as_str().unwrap();
    assert_eq!(qt[active_id][0], json!("active"), "{}", r["query_task"]);
    assert_eq!(qt[sched_id][0], json!("scheduled"));
    let py_active = r["ids"]["py_active"].as_str().unwrap();
    assert_eq!(
        keys(&qt[active_id][1]),
        keys(&r["query_task"][pyn][py_active][1])
    );
    assert!(r["conf"][rs]["broker_url"].is_string());
    assert!(
        r["report"][rs]["ok"]
            .as_str()
            .is_some_and(|s| s.contains("celeriac"))
    );
    assert!(r["clock"][rs]["clock"].is_u64());

    // The real `celery inspect` command line parses and prints every reply of the Rust worker.
    for cmd in [
        vec!["ping"],
        vec!["stats"],
        vec!["active"],
        vec!["reserved"],
        vec!["scheduled"],
        vec!["revoked"],
        vec!["registered"],
        vec!["active_queues"],
        vec!["query_task", active_id],
        vec!["conf"],
        vec!["report"],
        vec!["clock"],
    ] {
        let mut args = vec!["inspect"];
        args.extend(cmd.iter().copied());
        args.extend(["-d", rs, "-t", "2"]);
        let o = celery(&py, &db.url, &args);
        assert!(o.ok, "celery {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
        assert!(
            o.stdout.contains("->  rs@rc: OK"),
            "celery {args:?}:\n{}",
            o.stdout
        );
        assert!(
            o.stdout.contains("1 node online."),
            "celery {args:?}:\n{}",
            o.stdout
        );
    }
    let o = celery(&py, &db.url, &["inspect", "stats", "-d", rs, "--json"]);
    let v: Value =
        serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", o.stdout));
    assert!(v[rs]["total"].is_object());
}

/// `celery control` commands act on a Rust worker as on a Python one: revoke (pending, unknown id, and
/// terminate of a running `celeriac.sleep`), rate_limit, time_limit, add/cancel_consumer, events switches, pool
/// commands, unknown commands, bad arguments, garbage on the channel, and finally shutdown.
#[test]
fn celery_control_commands_act_on_rust_worker() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let mut rs = rust_worker(&db.url, "rs@ctl", &["-c", "2"]);
    let ok = |args: &[&str], want: &str| {
        let mut a = vec!["control"];
        a.extend_from_slice(args);
        a.extend(["-d", "rs@ctl", "-t", "2"]);
        let o = celery(&py, &db.url, &a);
        assert!(
            o.stdout.contains("->  rs@ctl: ") && o.stdout.contains(want),
            "celery {a:?}: want {want:?}\n{}\n{}",
            o.stdout,
            o.stderr
        );
        o.stdout
    };
    // revoke a scheduled task: stored REVOKED, listed by `inspect revoked`, never run.
    let out = run_python(
        &py,
        &db.url,
        "from pytasks import app\nprint(app.send_task('celeriac.add', args=(1, 1), countdown=300).id)",
        T,
    );
    let sched = out.trim().lines().last().unwrap().to_string();
    assert!(wait_until(T, || {
        inspect(&db.url, "scheduled", json!({}), None)
            .get("rs@ctl")
            .is_some_and(|v| v.to_string().contains(&sched))
    }));
    ok(
        &["revoke", &sched],
        &format!("tasks {{'{sched}'}} flagged as revoked"),
    );
    let state = |id: &str| {
        py_json(&run_python(
            &py,
            &db.url,
            &format!(
                "import json\nfrom pytasks import app\nr = app.AsyncResult('{id}')\nprint(json.dumps([r.state, str(r.result)]))"
            ),
            T,
        ))
    };
    assert!(
        wait_until(T, || state(&sched)[0] == "REVOKED"),
        "{}",
        state(&sched)
    );
    let revoked = inspect(&db.url, "revoked", json!({}), None);
    assert!(revoked["rs@ctl"].to_string().contains(&sched));
    // An id this worker never saw: REVOKED is stored all the same (Celery 5.6+).
    let unknown = uuid::Uuid::new_v4().to_string();
    ok(&["revoke", &unknown], "flagged as revoked");
    assert!(wait_until(T, || state(&unknown)[0] == "REVOKED"));
    let raw = db_get(&db, &format!("celery-task-meta-{unknown}"));
    assert!(
        raw.contains(r#""exc_message": ["revoked"]"#) && raw.contains(r#""children": null"#),
        "{raw}"
    );

    // terminate a running celeriac.sleep.
    let sleeper = run_python(
        &py,
        &db.url,
        "from pytasks import app\nprint(app.send_task('celeriac.sleep', args=(60,)).id)",
        T,
    );
    let sleeper = sleeper.trim().lines().last().unwrap().to_string();
    assert!(wait_until(T, || inspect(
        &db.url,
        "active",
        json!({}),
        None
    )
    .get("rs@ctl")
    .is_some_and(|v| v.to_string().contains(&sleeper))));
    ok(
        &["terminate", "SIGTERM", &sleeper],
        &format!("terminate: {sleeper}"),
    );
    assert!(
        wait_until(T, || state(&sleeper)[0] == "REVOKED"),
        "{}",
        state(&sleeper)
    );
    let raw = db_get(&db, &format!("celery-task-meta-{sleeper}"));
    assert!(raw.contains(r#""exc_message": ["terminated"]"#), "{raw}");
    assert!(
        raw.contains(r#""children": null"#),
        "REVOKED has children null: {raw}"
    );
    // The Python API's revoke(terminate=True) as well.
    let out = run_python(
        &py,
        &db.url,
        r#"
import json, time
from pytasks import app
r = app.send_task('celeriac.sleep', args=(60,))
i = app.control.inspect(timeout=1)
for _ in range(200):
    if r.id in json.dumps(i.active() or {}):
        break
    time.sleep(0.2)
rep = app.control.revoke(r.id, terminate=True, reply=True, timeout=2)
for _ in range(200):
    if r.state == 'REVOKED':
        break
    time.sleep(0.1)
print(json.dumps({'reply': rep, 'state': r.state}))
"#,
        T,
    );
    let v = py_json(&out);
    assert_eq!(v["state"], json!("REVOKED"), "{v}");
    assert!(v["reply"].to_string().contains("terminate: "), "{v}");

    // revoke_by_stamped_headers: a running task stamped mystamp=v1 is terminated, another one is not touched.
    let out = run_python(
        &py,
        &db.url,
        r#"
import json, time
from pytasks import app
hit = app.send_task('celeriac.sleep', args=(60,), headers={'stamped_headers': ['mystamp'], 'stamps': {'mystamp': ['v1']}})
other = app.send_task('celeriac.add', args=(1, 2), countdown=300, headers={'stamped_headers': ['mystamp'], 'stamps': {'mystamp': ['v2']}})
i = app.control.inspect(timeout=1)
for _ in range(200):
    if hit.id in json.dumps(i.active() or {}) and other.id in json.dumps(i.scheduled() or {}):
        break
    time.sleep(0.2)
rep = app.control.revoke_by_stamped_headers({'mystamp': 'v1'}, terminate=True, reply=True, timeout=2)
for _ in range(200):
    if hit.state == 'REVOKED':
        break
    time.sleep(0.1)
print(json.dumps({'reply': rep, 'hit': hit.state, 'other': other.state, 'other_id': other.id}))
"#,
        T,
    );
    let v = py_json(&out);
    assert_eq!(v["hit"], json!("REVOKED"), "{v}");
    assert_eq!(v["other"], json!("PENDING"), "{v}");
    assert!(v["reply"].to_string().contains("revoked"), "{v}");
    let other = v["other_id"].as_str().unwrap();
    assert!(
        inspect(&db.url, "scheduled", json!({}), None)["rs@ctl"]
            .to_string()
            .contains(other)
    );

    // rate_limit / time_limit with their error replies.
    ok(
        &["rate_limit", "celeriac.add", "10/m"],
        "new rate limit set successfully",
    );
    ok(
        &["rate_limit", "celeriac.add", "0"],
        "rate limit disabled successfully",
    );
    ok(&["rate_limit", "no.such.task", "1/s"], "unknown task");
    ok(
        &["rate_limit", "celeriac.add", "ten/x"],
        "Invalid rate limit string",
    );
    ok(
        &["time_limit", "celeriac.sleep", "0.5", "1"],
        "time limits set successfully",
    );
    ok(&["time_limit", "no.such.task", "1"], "unknown task");
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
try:
    app.send_task('celeriac.sleep', args=(30,)).get(timeout=60)
    print(json.dumps(['no exception']))
except Exception as e:
    print(json.dumps([type(e).__name__, str(e)]))
"#,
        T,
    );
    let exc = py_json(&out);
    assert!(
        exc[0] == json!("SoftTimeLimitExceeded") || exc[0] == json!("TimeLimitExceeded"),
        "time_limit set by remote control must stop the task: {exc}"
    );

    // add_consumer / cancel_consumer.
    ok(&["add_consumer", "extra"], "add consumer extra");
    let queues = |db: &testkit::RedisDb| {
        inspect(&db.url, "active_queues", json!({}), None)["rs@ctl"].to_string()
    };
    assert!(queues(&db).contains("\"name\":\"extra\""));
    let out = run_python(
        &py,
        &db.url,
        "import json\nfrom pytasks import app\nprint(json.dumps(app.send_task('celeriac.add', args=(2, 3), queue='extra').get(timeout=60)))",
        T,
    );
    assert_eq!(py_json(&out), json!(5));
    ok(
        &["cancel_consumer", "extra"],
        "no longer consuming from extra",
    );
    assert!(!queues(&db).contains("\"name\":\"extra\""));

    // Event switches, pool commands, heartbeat.
    ok(&["enable_events"], "task events enabled");
    ok(&["enable_events"], "task events already enabled");
    ok(&["disable_events"], "task events disabled");
    ok(&["disable_events"], "task events already disabled");
    ok(&["pool_grow", "2"], "pool will grow");
    assert_eq!(
        inspect(&db.url, "stats", json!({}), None)["rs@ctl"]["pool"]["max-concurrency"],
        json!(4)
    );
    ok(&["pool_shrink", "1"], "pool will shrink");
    ok(&["autoscale", "4", "1"], "Autoscale not enabled");
    ok(&["heartbeat"], "None");

    // The Lamport clock is adjusted by a request's clock header.
    rc_common::block_on(async {
        let b = broker::Broker::connect(&db.url).await.unwrap();
        let req = celery_proto::control::ControlRequest::new("ping", Default::default());
        let channel = celery_proto::kombu_redis::fanout_channel(b.db(), "celery.pidbox", "");
        b.publish_fanout(&channel, &req.envelope(100_000, 0.0).encode())
            .await
            .unwrap();
    });
    assert!(wait_until(T, || inspect(&db.url, "clock", json!({}), None)
        ["rs@ctl"]["clock"]
        .as_u64()
        .is_some_and(|c| c > 100_000)));

    // Unknown commands and wrong argument types get error replies; garbage is dropped; the worker keeps working.
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
res = {}
res['unknown'] = app.control.broadcast('nonexistent_cmd', reply=True, timeout=2)
res['bad_revoke'] = app.control.broadcast('revoke', arguments={'task_id': 42}, reply=True, timeout=2)
res['bad_time_limit'] = app.control.broadcast('time_limit', arguments={'task_name': 'celeriac.add', 'soft': [1]}, reply=True, timeout=2)
res['bad_pool'] = app.control.broadcast('pool_grow', arguments={'n': 'many'}, reply=True, timeout=2)
res['bad_query'] = app.control.broadcast('query_task', arguments={'ids': {'x': 1}}, reply=True, timeout=2)
print(json.dumps(res))
"#,
        T,
    );
    let v = py_json(&out);
    assert_eq!(
        v["unknown"],
        json!([{"rs@ctl": {"error": "KeyError('nonexistent_cmd')"}}])
    );
    for k in ["bad_revoke", "bad_time_limit", "bad_pool", "bad_query"] {
        assert!(
            v[k][0]["rs@ctl"]["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("TypeError(")),
            "{k}: {}",
            v[k]
        );
    }
    let mut conn = db.conn();
    let channel = format!("/{}.celery.pidbox", db.db);
    for garbage in [
        "not json at all".to_string(),
        "{\"body\": \"!!!\", \"properties\": {\"body_encoding\": \"base64\"}}".to_string(),
        "[1, 2, 3]".to_string(),
        "{\"body\": \"e30=\", \"content-type\": \"application/json\", \"properties\": {\"body_encoding\": \"base64\"}}".to_string(),
    ] {
        let _: i64 = redis::cmd("PUBLISH").arg(&channel).arg(garbage).query(&mut conn).unwrap();
    }
    assert!(wait_until(T, || rs
        .output()
        .contains("dropping unreadable pidbox message")));
    assert!(wait_until(T, || rs
        .output()
        .contains("not a control request")));
    assert_eq!(
        inspect(&db.url, "ping", json!({}), None).get("rs@ctl"),
        Some(&json!({"ok": "pong"}))
    );

    // shutdown: no reply (as from Python), and the worker stops warm.
    let o = celery(
        &py,
        &db.url,
        &["control", "shutdown", "-d", "rs@ctl", "-t", "1"],
    );
    assert!(
        !o.stdout.contains("rs@ctl: OK"),
        "shutdown has no reply: {}",
        o.stdout
    );
    let status = rs
        .wait_timeout(Duration::from_secs(60))
        .expect("worker exits after shutdown");
    assert!(status.success(), "warm shutdown exits 0: {status:?}");
    assert!(rs.output().contains("shutdown requested by remote control"));
    assert!(inspect(&db.url, "ping", json!({}), None).is_empty());
}

fn db_get(db: &testkit::RedisDb, key: &str) -> String {
    let mut c = db.conn();
    let v: Option<String> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    v.unwrap_or_default()
}

/// One Python and one Rust worker: `celery inspect ping` and `celeriac inspect ping` list both; the celeriac CLI
/// steers the Python worker; pattern/matcher addressing; mingle shares revoked ids in both directions (floats).
#[test]
fn mixed_cluster_both_clis_and_mingle() {
    let db = redis_db_or_skip!();
    let py = python_or_skip!();
    let _p1 = python_worker_with_events(&py, &db.url, "py1@mix", &[]);
    // Revoked on the Python worker only; a Rust worker starting later learns it through mingle.
    let from_py = uuid::Uuid::new_v4().to_string();
    let o = celery(&py, &db.url, &["control", "revoke", &from_py]);
    assert!(o.stdout.contains("flagged as revoked"), "{}", o.stdout);
    let rs = rust_worker(&db.url, "rs1@mix", &[]);
    assert!(
        rs.output().contains("mingle: sync with 1 nodes"),
        "{}",
        rs.output()
    );
    assert!(
        inspect(&db.url, "revoked", json!({}), Some(vec!["rs1@mix".into()]))["rs1@mix"]
            .to_string()
            .contains(&from_py)
    );

    let o = celery(&py, &db.url, &["inspect", "ping", "-t", "2"]);
    assert!(o.ok, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("->  rs1@mix: OK") && o.stdout.contains("->  py1@mix: OK"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("2 nodes online."));
    let o = celeriac(&db.url, &["inspect", "ping"]);
    assert!(o.ok, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("->  rs1@mix: OK") && o.stdout.contains("->  py1@mix: OK"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("        pong") && o.stdout.contains("2 nodes online."));
    let o = celeriac(&db.url, &["--json", "inspect", "ping"]);
    let v: Value =
        serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", o.stdout));
    assert_eq!(
        v,
        json!({"py1@mix": {"ok": "pong"}, "rs1@mix": {"ok": "pong"}})
    );

    // celeriac against the Python worker.
    let o = celeriac(&db.url, &["--json", "inspect", "stats", "-d", "py1@mix"]);
    let v: Value =
        serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", o.stdout));
    assert!(
        v["py1@mix"]["pool"]["implementation"]
            .as_str()
            .unwrap()
            .contains("celery")
    );
    let o = celeriac(
        &db.url,
        &["control", "rate_limit", "tasks.add", "5/s", "-d", "py1@mix"],
    );
    assert!(
        o.stdout.contains("->  py1@mix: OK")
            && o.stdout.contains("new rate limit set successfully"),
        "{}",
        o.stdout
    );
    let o = celeriac(&db.url, &["inspect", "registered", "-d", "py1@mix"]);
    assert!(o.stdout.contains("    * tasks.add"), "{}", o.stdout);
    let o = celeriac(&db.url, &["control", "nonexistent_cmd"]);
    assert!(
        o.stdout.contains("->  rs1@mix: ERROR") && o.stdout.contains("KeyError('nonexistent_cmd')"),
        "{}",
        o.stdout
    );
    let o = celeriac(
        &db.url,
        &["inspect", "ping", "-d", "nobody@nowhere", "-t", "0.5"],
    );
    assert_eq!(
        o.code,
        Some(69),
        "no reply: exit 69 like celery\n{}{}",
        o.stdout,
        o.stderr
    );

    // pattern + matcher (glob and pcre), from Python.
    let out = run_python(
        &py,
        &db.url,
        r#"
import json
from pytasks import app
print(json.dumps({
  'pcre': sorted((app.control.inspect(timeout=1, pattern='rs.*', matcher='pcre').ping() or {}).keys()),
  'glob': sorted((app.control.inspect(timeout=1, pattern='py?@*', matcher='glob').ping() or {}).keys()),
  'none': app.control.inspect(timeout=1, pattern='zz*', matcher='glob').ping(),
}))
"#,
        T,
    );
    assert_eq!(
        py_json(&out),
        json!({"pcre": ["rs1@mix"], "glob": ["py1@mix"], "none": null})
    );

    // Revoked on the Rust worker only; a Python worker starting later takes it (Celery needs float stamps).
    let from_rs = uuid::Uuid::new_v4().to_string();
    let o = celeriac(&db.url, &["control", "revoke", &from_rs, "-d", "rs1@mix"]);
    assert!(o.stdout.contains("flagged as revoked"), "{}", o.stdout);
    let p2 = python_worker_with_events(&py, &db.url, "py2@mix", &[]);
    assert!(
        p2.output().contains("mingle: sync with 2 nodes"),
        "{}",
        p2.output()
    );
    assert!(!p2.output().contains("ValueError"), "{}", p2.output());
    // A worker that has just started may miss the first broadcast (its pidbox consumer comes up after "ready"):
    // ask until it answers.
    let mut seen = std::collections::BTreeMap::new();
    assert!(
        testkit::wait_until(T, || {
            seen = inspect(&db.url, "revoked", json!({}), Some(vec!["py2@mix".into()]));
            seen.contains_key("py2@mix")
        }),
        "py2@mix never answered inspect revoked"
    );
    assert!(seen["py2@mix"].to_string().contains(&from_rs), "{seen:?}");
}
