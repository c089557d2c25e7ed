//! The operators' dashboard (issue 11, phase 1) in real headless Chromium: Debian's `chromium` driven by
//! `playwright-core` (`api/ui/tests/dashboard.mjs`) against the real `celeriac-api` binary with the Cowrie samples
//! loaded, a real Rust worker and (when the venv is there, always in CI) a Python Celery worker.
//!
//! Asserted: the overview's totals and top source IPs equal the API's own answers for the same window, and change
//! to the API's per-sensor answers when the sensor filter is switched (the filter is kept in the URL across a
//! reload); the cluster view lists the workers, Rust and Python told apart, with their queues, as
//! `/api/v1/cluster/*` do, and a stopped Python worker turns offline on the open page without a reload (after the
//! inspect window, about 30 s: it sends no heartbeats); axe-core finds no critical or serious violation on the login, overview and
//! cluster views in light and dark; the theme toggle works; nothing is wider than a phone screen; screenshots of
//! each view, light and dark, 1280 px and phone width, are kept under `target/artifacts/dashboard/`. Also: the
//! vendored uPlot equals what `npm ci` installed from the lockfile.
//!
//! Phase 2: a `statistics:read` key sees the analyses form disabled with the reason (from `GET /api/v1/me`, before
//! any submit); a `jobs:write` key submits a longtail analysis from the form (all sensors, 2018-01-01 to
//! 2025-01-01), which a real Rust worker `ml@test` runs; the page follows it over the SSE stream (a progress bar, then
//! SUCCESS) and renders the result: the rare commands listed equal the task result's (`GET /api/v1/jobs/{id}`), the
//! tables sort; a session link of the result opens the session page, whose events (and defanged commands) are those
//! of `GET /api/v1/sessions/{id}`; the overview's latest longtail finding opens the finding with session links; axe
//! and screenshots on the analyses and session views, light and dark.
//!
//! Phase 3: a real `celeriac-coordinator` runs beside the API and a worker registers with it (a token from its CLI);
//! the cluster view follows `GET /api/v1/cluster/stream` (no polling request) and shows the registration and the
//! dead-letter count (malformed messages Rust workers dead-lettered) without a reload; the count links to the
//! dead-letter list, which tells a `statistics:read` key it needs `admin` and lists the entries for an admin key,
//! whose clicks on Replay and Drop (one entry each) are checked in Redis: the replayed entry is gone from the store
//! and its exact bytes are back on its queue, the dropped one is gone and not on the queue, and the count shown
//! fell by two. The
//! workers that could run the form's analysis are held with SIGSTOP until the page follows the job, so the page sees
//! PENDING first and the progress bar takes at least two values before SUCCESS.

mod common;

use common::*;
use serde_json::Value;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use testkit::{redis_db_or_skip, repo_root, require, rust_worker, wait_until};

/// The queue of the dead letters the page replays and drops (no worker consumes it during the browser run).
const DEAD_QUEUE: &str = "dash-dead";

/// `redis-cli -u URL ARGS...`; its raw standard output.
fn redis_cli(url: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new("redis-cli")
        .args(["-u", url])
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    out.stdout
}

fn chromium() -> Option<PathBuf> {
    let from_env = std::env::var("CELERIAC_CHROMIUM")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Into::into);
    from_env
        .into_iter()
        .chain([
            "/usr/bin/chromium".into(),
            "/usr/bin/chromium-browser".into(),
        ])
        .find(|p: &PathBuf| p.exists())
}

fn ui_dir() -> PathBuf {
    repo_root().join("api/ui")
}

/// Node and the packages `npm ci` installs in `api/ui` (scripts/test.sh runs it).
fn node_ready() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    require("node (Node 20)", node)
        && require(
            "api/ui/node_modules (scripts/test.sh runs npm ci there)",
            ui_dir().join("node_modules/playwright-core").exists()
                && ui_dir().join("node_modules/axe-core").exists(),
        )
}

#[test]
fn the_vendored_uplot_is_what_the_lockfile_installs() {
    if !node_ready() {
        return;
    }
    let out = Command::new("node")
        .args(["vendor.mjs", "--check"])
        .current_dir(ui_dir())
        .output()
        .expect("node vendor.mjs --check");
    assert!(
        out.status.success(),
        "api/ui/vendor is stale:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A path segment, percent-encoded.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn numbers(v: &Value, fields: &[&str]) -> Vec<(String, Value)> {
    fields
        .iter()
        .map(|f| {
            let x = &v[*f];
            // The page shows the average rounded to a tenth.
            let x = match (f, x.as_f64()) {
                (&"avg_session_seconds", Some(a)) => {
                    serde_json::json!(((a * 10.0).round() / 10.0))
                }
                _ => x.clone(),
            };
            (f.to_string(), x)
        })
        .collect()
}

const TOTALS: [&str; 7] = [
    "total_sessions",
    "unique_ips",
    "login_attempts",
    "successful_logins",
    "sessions_with_commands",
    "file_downloads",
    "avg_session_seconds",
];

fn assert_same_as_api(page: &Value, sessions: &Value, threats: &Value, what: &str) {
    let shown: Vec<(String, Value)> = TOTALS
        .iter()
        .map(|f| {
            let v = &page["totals"][*f];
            let v = match v.as_f64() {
                Some(x) if x.fract() == 0.0 => serde_json::json!(x as i64),
                Some(x) => serde_json::json!(x),
                None => v.clone(),
            };
            (f.to_string(), v)
        })
        .collect();
    let mut expected = numbers(sessions, &TOTALS);
    for (k, v) in expected.iter_mut() {
        if k == "avg_session_seconds"
            && let Some(x) = v.as_f64()
            && x.fract() == 0.0
        {
            *v = serde_json::json!(x as i64);
        }
    }
    assert_eq!(shown, expected, "{what}: totals on the page vs the API");
    let api_ips: Vec<(String, i64, i64)> = threats["top_source_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ip"].as_str().unwrap().to_string(),
                r["sessions"].as_i64().unwrap(),
                r["events"].as_i64().unwrap(),
            )
        })
        .collect();
    let page_ips: Vec<(String, i64, i64)> = page["top_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ip"].as_str().unwrap().to_string(),
                r["sessions"].as_i64().unwrap(),
                r["events"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(!api_ips.is_empty(), "{what}: the API has no top IPs");
    assert_eq!(page_ips, api_ips, "{what}: top source IPs");
    assert!(
        page["chart_canvas"].as_bool().unwrap(),
        "{what}: no chart drawn"
    );
}

#[test]
fn the_dashboard_shows_the_apis_numbers_and_the_workers_in_headless_chromium() {
    let redis = redis_db_or_skip!();
    let Some(chrome) = chromium() else {
        require("chromium (scripts/ensure-chromium.sh)", false);
        return;
    };
    if !node_ready() {
        return;
    }
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(&db.url, &redis.url, &[]);
    let (key, _) = create_key(&db.url, "statistics:read", &[]);
    let (write_key, _) = create_key(&db.url, "statistics:read,jobs:write", &[]);
    let (admin_key, _) = create_key(&db.url, "statistics:read,admin", &[]);

    // The page and its assets need no key; the API behind them does.
    let r = get_full(&api.url("/"), None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-security-policy").is_some());
    assert!(
        r.body
            .as_str()
            .is_some_and(|b| b.contains("/ui/app.js") && b.contains("uPlot")),
        "{:?}",
        r.body
    );
    for asset in [
        "/ui/app.js",
        "/ui/style.css",
        "/ui/vendor/uPlot.iife.min.js",
        "/ui/vendor/uPlot.min.css",
    ] {
        assert_eq!(get(&api.url(asset), None).0, 200, "{asset}");
    }
    assert_eq!(get(&api.url("/ui/nothing.js"), None).0, 404);
    assert_eq!(get(&api.url("/api/v1/cluster/workers"), None).0, 401);

    let rust_node = "dash-rust@test";
    let _rust = rust_worker(
        &redis.url,
        rust_node,
        &[
            "-Q",
            "celery,longtail",
            "-c",
            "2",
            "--database-url",
            &db.url,
        ],
    );
    // Named like worker-config.yaml's accelerated workstation (`ml@*`), as in api/tests/analyses.rs.
    let _ml = rust_worker(
        &redis.url,
        "ml@test",
        &[
            "-Q",
            "celery,longtail,snowshoe",
            "-c",
            "2",
            "--database-url",
            &db.url,
        ],
    );
    // The coordinator beside the API, on the same Redis and config; `ml@test` registers with it.
    let coordinator = start_coordinator(&redis.url);
    let registered = register_node(&coordinator, &redis.url, "ml@test");
    assert_eq!(registered["registered"]["node"], "ml@test", "{registered}");
    // A malformed message on a queue both Rust workers consume: one of them keeps it as a dead letter.
    redis_cli(&redis.url, &["LPUSH", "celery", "{not json"]);
    // Two more, from a queue whose one consumer is then stopped: the page replays one and drops the other (with
    // nobody consuming the queue, the replayed message stays there for the checks after the run).
    let (replay_message, drop_message) = ("replay-me {not json \u{e9}", "drop-me {not json");
    let mut dead_worker = rust_worker(&redis.url, "dash-dead@test", &["-Q", DEAD_QUEUE]);
    redis_cli(
        &redis.url,
        &["RPUSH", DEAD_QUEUE, replay_message, drop_message],
    );
    let dead_list = api.url("/api/v1/cluster/dead-letters");
    let kept = || get(&dead_list, Some(&admin_key)).1["count"] == 3;
    assert!(
        wait_until(Duration::from_secs(60), kept),
        "three dead letters: {}\n{}",
        get(&dead_list, Some(&admin_key)).1,
        dead_worker.output()
    );
    dead_worker.signal("TERM");
    assert!(
        dead_worker.wait_timeout(Duration::from_secs(60)).is_some(),
        "dash-dead@test stopped"
    );
    let (s, before) = get(&dead_list, Some(&admin_key));
    assert_eq!((s, &before["count"]), (200, &Value::from(3)), "{before}");
    let id_of = |message: &str| {
        before["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["message"] == message)
            .and_then(|e| e["id"].as_str())
            .unwrap_or_else(|| panic!("{message:?} in {before}"))
            .to_string()
    };
    let (replay_id, drop_id) = (id_of(replay_message), id_of(drop_message));
    let mut nodes = vec![rust_node.to_string()];
    let python = testkit::python();
    let _py = python.as_ref().map(|py| {
        let node = "dash-py@test";
        nodes.push(node.to_string());
        testkit::python_worker(py, &redis.url, node, &["-Q", "pyq"])
    });
    if python.is_none() {
        require("the Python venv (scripts/python-env.sh)", false);
    }

    let all = |path: &str| {
        let (s, b) = get(&api.url(&format!("{path}?{ALL_TIME}")), Some(&key));
        assert_eq!(s, 200, "{path}: {b}");
        b
    };
    // The sensor with the most sessions (events may name their own sensor rather than the loader's --sensor).
    let sensors = all("/api/v1/statistics/sensors");
    let sensor = sensors["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["sessions"].as_i64().unwrap_or(0))
        .and_then(|s| s["sensor"].as_str())
        .expect("a sensor")
        .to_string();
    let sensor = sensor.as_str();
    let one = |path: &str| {
        let (s, b) = get(
            &api.url(&format!("{path}?{ALL_TIME}&sensor={sensor}")),
            Some(&key),
        );
        assert_eq!(s, 200, "{path}: {b}");
        b
    };
    let sessions_all = all("/api/v1/statistics/sessions");
    let threats_all = all("/api/v1/statistics/threats");
    let sessions_one = one("/api/v1/statistics/sessions");
    let threats_one = one("/api/v1/statistics/threats");
    assert_ne!(
        sessions_all["total_sessions"], sessions_one["total_sessions"],
        "the samples' sensors must differ for the filter check to mean anything"
    );

    let artifacts = repo_root().join("target/artifacts/dashboard");
    let _ = std::fs::remove_dir_all(&artifacts);
    let out = Command::new("node")
        .arg(ui_dir().join("tests/dashboard.mjs"))
        .current_dir(ui_dir())
        .env("DASH_BASE", &api.base)
        .env("DASH_KEY", &key)
        .env("DASH_CHROMIUM", &chrome)
        .env("DASH_ARTIFACTS", &artifacts)
        .env("DASH_WINDOW", ALL_TIME)
        .env("DASH_SENSOR", sensor)
        .env("DASH_NODES", nodes.join(","))
        .env("DASH_WRITE_KEY", &write_key)
        .env("DASH_ADMIN_KEY", &admin_key)
        .env("DASH_DEAD_REPLAY", &replay_id)
        .env("DASH_DEAD_DROP", &drop_id)
        .env("DASH_REGISTERED_NODE", "ml@test")
        .env("DASH_PAUSE_PIDS", format!("{},{}", _rust.pid(), _ml.pid()))
        .envs(
            _py.as_ref()
                .map(|c| {
                    [
                        ("DASH_STOP_PID", c.pid().to_string()),
                        ("DASH_STOP_NODE", "dash-py@test".to_string()),
                    ]
                })
                .into_iter()
                .flatten(),
        )
        .output()
        .expect("run node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dashboard.mjs failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(
        report.get("failure").is_none(),
        "the browser run failed: {}\n{}\nreport: {report:#}",
        report["failure"].as_str().unwrap_or_default(),
        api.child.output()
    );

    // Sign-in: a wrong key is refused with the API's message.
    assert!(
        report["wrong_key_message"]
            .as_str()
            .is_some_and(|m| m.contains("Sign-in failed")),
        "{report:#}"
    );

    // The overview shows the API's numbers, for all sensors and for one, and the URL keeps the filter.
    assert_same_as_api(
        &report["overview_all"],
        &sessions_all,
        &threats_all,
        "all sensors",
    );
    assert_same_as_api(
        &report["overview_sensor"],
        &sessions_one,
        &threats_one,
        sensor,
    );
    assert_ne!(
        report["overview_all"]["totals"],
        report["overview_sensor"]["totals"]
    );
    let hash = report["overview_sensor"]["hash"].as_str().unwrap();
    assert!(hash.contains(&format!("sensor={sensor}")), "{hash}");
    assert_eq!(
        report["overview_reloaded"]["totals"],
        report["overview_sensor"]["totals"]
    );
    // Every total links to the query that produced it.
    let link = report["overview_sensor"]["total_links"]["total_sessions"]
        .as_str()
        .unwrap();
    assert!(
        link.starts_with("/api/v1/statistics/sessions?") && link.contains(sensor),
        "{link}"
    );
    let (s, b) = get(&api.url(link), Some(&key));
    assert_eq!(s, 200);
    assert_eq!(b["total_sessions"], sessions_one["total_sessions"]);
    let badges = report["overview_all"]["sensors"].as_array().unwrap();
    for (name, _) in SAMPLES {
        assert!(
            badges.iter().any(|b| b["sensor"] == name
                && ["ok", "stale", "failing"].contains(&b["status"].as_str().unwrap())),
            "{name} badge: {badges:?}"
        );
    }

    // The cluster view lists the workers with their queues, told apart; the API answers the same.
    let shown = report["cluster"]["workers"].as_array().unwrap();
    let row = |node: &str| {
        shown
            .iter()
            .find(|w| w["node"] == node)
            .unwrap_or_else(|| panic!("{node} not on the page: {shown:?}"))
    };
    let rust = row(rust_node);
    assert_eq!(rust["kind"], "rust");
    assert_eq!(rust["alive"], true);
    let q = rust["queues"].as_str().unwrap();
    assert!(q.contains("celery") && q.contains("longtail"), "{q}");
    if python.is_some() {
        let py = row("dash-py@test");
        assert_eq!(py["kind"], "python", "{py}");
        assert!(py["queues"].as_str().unwrap().contains("pyq"), "{py}");
        // Stopped at the end of the browser run: offline on the open page, same document (no reload).
        let stopped = &report["stopped"];
        assert_eq!(stopped["node"], "dash-py@test", "{report:#}");
        assert_eq!(stopped["state"], "offline", "{stopped}");
        assert_eq!(stopped["same_document"], true, "{stopped}");
        eprintln!(
            "the Python worker showed offline {} s after SIGTERM",
            stopped["seconds"]
        );
    }
    // The view follows the stream; it never polled the REST routes.
    let requests: Vec<&str> = report["cluster_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        requests
            .iter()
            .any(|r| r.ends_with("/api/v1/cluster/stream")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.ends_with("/api/v1/cluster/stream")),
        "the page polled: {requests:?}"
    );
    assert!(
        report["cluster"]["updated"]
            .as_str()
            .unwrap()
            .starts_with("live"),
        "{report:#}"
    );
    // The coordinator's registration shows on the page, and the coordinator sees the workers the page lists.
    assert!(
        report["cluster"]["registered"]
            .as_array()
            .unwrap()
            .contains(&Value::from("ml@test")),
        "{report:#}"
    );
    let (s, coord) = get(&format!("{}/api/v1/workers", coordinator.1), None);
    assert_eq!(s, 200, "{coord}");
    let coord_text = coord.to_string();
    for node in [rust_node, "ml@test"] {
        assert!(
            coord_text.contains(node),
            "{node} not at the coordinator: {coord}"
        );
    }
    // Dead letters: the page's count is the API's (three before the page replayed one and dropped one, one after);
    // the list needs admin and shows the kept message.
    let (s, q) = get(&api.url("/api/v1/cluster/queues"), Some(&key));
    assert_eq!(s, 200);
    assert_eq!(q["dead_letters"], 1, "{q}");
    assert_eq!(report["cluster"]["dead_letters"], 3, "{report:#}");
    assert_eq!(
        report["cluster"]["dead_letters_href"], "/api/v1/cluster/queues",
        "{report:#}"
    );
    assert_eq!(
        get(&api.url("/api/v1/cluster/dead-letters"), Some(&key)).0,
        403,
        "a statistics:read key may not read whole messages"
    );
    let (s, dead) = get(&api.url("/api/v1/cluster/dead-letters"), Some(&admin_key));
    assert_eq!(s, 200, "{dead}");
    assert_eq!(dead["count"], 1, "{dead}");
    let entry = &dead["entries"][0];
    assert_eq!(
        (&entry["queue"], &entry["message"], &entry["size"]),
        (
            &Value::from("celery"),
            &Value::from("{not json"),
            &Value::from(9)
        ),
        "{dead}"
    );
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .starts_with("undecodable message"),
        "{dead}"
    );
    assert!(
        [rust_node, "ml@test"].contains(&entry["node"].as_str().unwrap()),
        "{dead}"
    );
    assert_eq!(
        get(
            &api.url("/api/v1/cluster/dead-letters?limit=0"),
            Some(&admin_key)
        )
        .0,
        400
    );
    assert!(
        report["dead_readonly"].as_str().unwrap().contains("admin"),
        "{report:#}"
    );
    let page_dead = &report["dead_letters"];
    assert_eq!(page_dead["count"], 3, "{report:#}");
    let rows = page_dead["rows"].as_array().unwrap();
    assert!(
        rows.iter().any(|row| {
            let row = row.as_array().unwrap();
            row.iter().any(|c| c == "celery") && row.iter().any(|c| c == "{not json")
        }),
        "{rows:?}"
    );
    let ids = |v: &Value| -> Vec<String> {
        v["ids"]
            .as_array()
            .unwrap_or_else(|| panic!("no ids: {v}"))
            .iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect()
    };
    let listed = ids(page_dead);
    assert!(
        listed.contains(&replay_id) && listed.contains(&drop_id),
        "{page_dead}"
    );
    // The page's Replay and Drop buttons: each says what happened and lists again without the entry; the store and
    // the queue in Redis changed for real.
    let replayed = &report["dead_actions"]["replay"];
    assert_eq!(replayed["outcome"], "replayed", "{report:#}");
    assert_eq!(
        replayed["note"],
        format!("Replayed {replay_id} to {DEAD_QUEUE}."),
        "{replayed}"
    );
    let after_replay = ids(replayed);
    assert!(
        !after_replay.contains(&replay_id) && after_replay.contains(&drop_id),
        "{replayed}"
    );
    assert_eq!(replayed["count"], 2, "{replayed}");
    let dropped = &report["dead_actions"]["drop"];
    assert_eq!(dropped["outcome"], "dropped", "{report:#}");
    assert_eq!(dropped["note"], format!("Dropped {drop_id}."), "{dropped}");
    let after_drop = ids(dropped);
    assert!(
        !after_drop.contains(&replay_id) && !after_drop.contains(&drop_id),
        "{dropped}"
    );
    assert_eq!(
        page_dead["count"].as_i64().unwrap() - dropped["count"].as_i64().unwrap(),
        2,
        "the count shown: {page_dead} then {dropped}"
    );
    for gone in [&replay_id, &drop_id] {
        let (s, e) = get(
            &api.url(&format!("/api/v1/cluster/dead-letters/{gone}")),
            Some(&admin_key),
        );
        assert_eq!(
            (s, e["code"].as_str()),
            (404, Some("dead_letter_not_found")),
            "{gone} is still kept: {e}"
        );
    }
    // The replayed message's exact bytes are back on its queue, once; the dropped one is not there.
    assert_eq!(
        String::from_utf8_lossy(&redis_cli(&redis.url, &["LRANGE", DEAD_QUEUE, "0", "-1"])),
        format!("{replay_message}\n"),
        "the queue {DEAD_QUEUE} after the page's replay and drop"
    );
    // The stream itself: workers and queues at once, as server-sent events.
    let (workers_event, queues_event) =
        first_cluster_events(&api.url("/api/v1/cluster/stream"), &key);
    assert!(
        workers_event["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["node"] == rust_node),
        "{workers_event}"
    );
    assert_eq!(queues_event["dead_letters"], 1, "{queues_event}");

    let (s, workers) = get(&api.url("/api/v1/cluster/workers"), Some(&key));
    assert_eq!(s, 200);
    let w = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["node"] == rust_node)
        .expect("rust worker in /api/v1/cluster/workers");
    assert_eq!(w["implementation"], "rust");
    assert_eq!(w["sw_ident"], "rs-celeriac");
    assert_eq!(w["concurrency"], 2);
    let (s, queues) = get(&api.url("/api/v1/cluster/queues"), Some(&key));
    assert_eq!(s, 200);
    let names: Vec<&str> = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"celery") && names.contains(&"dash-rust@test.dq2"),
        "{names:?}"
    );
    for q in queues["queues"].as_array().unwrap() {
        assert!(q["unacked"].is_u64(), "{q}");
        let buckets = q["buckets"].as_array().unwrap();
        assert_eq!(
            buckets
                .iter()
                .map(|b| b["priority"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [0, 3, 6, 9]
        );
    }
    let page_queues = report["cluster"]["queues"].as_array().unwrap();
    assert_eq!(
        page_queues.len(),
        names.len(),
        "{page_queues:?} vs {names:?}"
    );
    let (s, explain) = get(
        &api.url("/api/v1/routing/explain?task=cowrieprocessor.workers.longtail_analysis"),
        Some(&key),
    );
    assert_eq!(s, 200, "{explain}");
    let kind = explain["decision"]["outcome"]["kind"].as_str().unwrap();
    assert_eq!(report["explain_outcome"], kind);
    assert_eq!(
        get(&api.url("/api/v1/routing/explain"), Some(&key)).0,
        400,
        "task is required"
    );
    // Requirements go to the same routing code as a submission's: one nobody meets is explained as such.
    let with_req = |req: &str| {
        get(
            &api.url(&format!(
                "/api/v1/routing/explain?task=cowrieprocessor.workers.longtail_analysis&requirements={}",
                form_urlencoded::byte_serialize(req.as_bytes()).collect::<String>()
            )),
            Some(&key),
        )
    };
    let (s, huge) = with_req(r#"{"min_memory_gb": 100000}"#);
    assert_eq!(s, 200, "{huge}");
    assert_ne!(huge["decision"], explain["decision"], "{huge}");
    assert!(huge.to_string().contains("requirements"), "{huge}");
    for bad in [r#"{"min_memory_gb": 8"#, r#"{"ram": 8}"#] {
        let (s, e) = with_req(bad);
        assert_eq!(
            (s, &e["parameter"]),
            (400, &serde_json::json!("requirements")),
            "{e}"
        );
    }

    // `GET /api/v1/me` tells the page what the key may do.
    let (s, me) = get(&api.url("/api/v1/me"), Some(&key));
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["scopes"], serde_json::json!(["statistics:read"]));
    assert_eq!(me["can_submit_analyses"], false);
    let (s, me) = get(&api.url("/api/v1/me"), Some(&write_key));
    assert_eq!((s, &me["can_submit_analyses"]), (200, &Value::Bool(true)));
    assert_eq!(get(&api.url("/api/v1/me?x=1"), Some(&key)).0, 400);

    // A read-only key sees the analyses form disabled, with the reason, before any submit.
    let ro = &report["readonly"];
    assert_eq!(ro["ready"], "disabled", "{ro}");
    assert_eq!(ro["fieldset_disabled"], true, "{ro}");
    assert_eq!(ro["submit_enabled"], false, "{ro}");
    assert!(
        ro["reason"].as_str().unwrap().contains("jobs:write"),
        "{ro}"
    );

    // The longtail analysis submitted from the form: a progress bar, SUCCESS over SSE, the result's rare commands.
    let a = &report["analysis"];
    let id = a["job_id"].as_str().expect("a job id");
    assert_eq!(a["bar_appeared"], true, "{a}");
    assert_eq!(a["stored"][0], id, "kept in sessionStorage: {a}");
    let states: Vec<&str> = a["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(states.last(), Some(&"SUCCESS"), "{a}");
    let (fin, max) = (a["bar_final"][0].as_f64(), a["bar_final"][1].as_f64());
    assert!(fin.is_some() && fin == max, "the bar ends full: {a}");
    // The workers were held until the page followed the job: it saw the job waiting, then the bar move.
    assert_eq!(a["state_before_workers"], "PENDING", "{a}");
    assert!(states.contains(&"PROGRESS"), "{a}");
    let mut moved: Vec<u64> = a["progress_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    moved.dedup();
    assert!(moved.len() >= 2, "the bar took one value only: {a}");
    eprintln!(
        "the page saw the states {states:?} and the bar values {}",
        a["bar_values"]
    );
    let (s, job) = get(&api.url(&format!("/api/v1/jobs/{id}")), Some(&key));
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["state"], "SUCCESS", "{job}");
    let expected: Vec<&str> = job["result"]["rare_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    let listed: Vec<&str> = a["rare_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        !expected.is_empty(),
        "the samples have rare commands: {job}"
    );
    assert_eq!(
        listed, expected,
        "rare commands on the page vs the task result"
    );
    assert_eq!(
        a["outlier_rows"].as_u64().unwrap() as usize,
        job["result"]["outlier_sessions"].as_array().unwrap().len()
    );
    let sorted: Vec<f64> = a["sorted_frequencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(sorted.len(), expected.len());
    assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "{sorted:?}");

    // Botnet from the form (one sensor, a threshold): the score and the recommendation are the task result's.
    let b = &report["botnet"];
    let bid = b["job_id"].as_str().expect("a botnet job");
    let (_, bjob) = get(&api.url(&format!("/api/v1/jobs/{bid}")), Some(&key));
    assert_eq!(bjob["state"], "SUCCESS", "{bjob}");
    let score = bjob["result"]["coordination_score"].as_f64().unwrap();
    assert!((b["score"].as_f64().unwrap() - score).abs() < 1e-9, "{b}");
    assert_eq!(b["recommendation"], bjob["result"]["recommendation"], "{b}");
    assert!(!b["bars"].as_array().unwrap().is_empty(), "{b}");

    // The session page of a result's session link shows that session's events, commands defanged.
    let check_session = |shown: &Value| {
        let sid = shown["id"].as_str().expect("a session id");
        let (s, d) = get(
            &api.url(&format!("/api/v1/sessions/{}", urlencode(sid))),
            Some(&key),
        );
        assert_eq!(s, 200, "{d}");
        let events = d["events"].as_array().unwrap();
        assert_eq!(
            shown["events"].as_u64().unwrap() as usize,
            events.len(),
            "{shown}"
        );
        let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        let shown_ids: Vec<i64> = shown["event_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        assert_eq!(shown_ids, ids, "events in order");
        let commands: Vec<&str> = events
            .iter()
            .filter(|e| e["event_type"] == "cowrie.command.input")
            .map(|e| e["command_safe"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(shown["commands"], serde_json::json!(commands), "{shown}");
        assert_eq!(
            shown["summary"]["Source IP"], d["session"]["src_ip"],
            "{shown}"
        );
        assert!(shown["title"].as_str().unwrap().contains(sid));
    };
    check_session(&report["session"]);
    assert_eq!(
        report["session_marker_after_leaving"],
        Value::Null,
        "the session page's loaded marker outlived the page"
    );
    assert!(
        report["session"]["hash"]
            .as_str()
            .unwrap()
            .starts_with("#/session/")
    );
    // The overview's latest finding opens it with its session links, and those open the session page.
    assert!(
        report["finding"]["session_links"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    check_session(&report["finding_session"]);
    for k in ["phone_overflow_analyses", "phone_overflow_session"] {
        let overflow = report[k].as_i64().unwrap();
        assert!(overflow <= 0, "{k}: {overflow} px wider than a phone");
    }

    // Accessibility: no critical or serious axe violation on any view, light or dark.
    let axe = report["axe"].as_object().unwrap();
    for view in [
        "login-light",
        "overview-light",
        "cluster-light",
        "overview-dark",
        "cluster-dark",
        "analyses-readonly-light",
        "analyses-light",
        "session-light",
        "analyses-dark",
        "session-dark",
        "dead-letters-light",
    ] {
        let bad: Vec<&Value> = axe[view]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| ["critical", "serious"].contains(&v["impact"].as_str().unwrap_or("")))
            .collect();
        assert!(bad.is_empty(), "{view}: {bad:#?}");
    }

    // Themes and widths.
    assert_ne!(
        report["toggle"]["before"], report["toggle"]["after"],
        "{report:#}"
    );
    assert_eq!(report["toggle"]["theme"], "dark");
    assert_ne!(report["dark_background"], report["toggle"]["before"]);
    for scheme in ["light", "dark"] {
        let overflow = report[format!("phone_overflow_{scheme}")].as_i64().unwrap();
        assert!(overflow <= 0, "{scheme}: {overflow} px wider than a phone");
    }
    let errors = report["console_errors"].as_array().unwrap();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // Screenshots for people to look at.
    let shots = report["screenshots"].as_array().unwrap();
    assert!(shots.len() >= 18, "{shots:?}");
    for s in shots {
        let bytes = std::fs::read(s.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000, "{s}");
    }
    eprintln!("dashboard screenshots: {}", artifacts.display());
}

/// A running `celeriac-coordinator` (the child and its base URL) on `redis`, with the project's worker-config.yaml.
fn start_coordinator(redis: &str) -> (testkit::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(testkit::bin("celeriac-coordinator"));
    cmd.args(["-b", redis, "--config"])
        .arg(repo_root().join("worker-config.yaml"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("NO_COLOR", "1");
    let child = testkit::Child::spawn("coordinator", &mut cmd);
    child.wait_for_output("celeriac-coordinator listening", Duration::from_secs(30));
    (child, format!("http://127.0.0.1:{port}"))
}

/// Register `node` at the coordinator with a token made by its own CLI; returns the coordinator's answer.
fn register_node(coordinator: &(testkit::Child, String), redis: &str, node: &str) -> Value {
    let run = |args: &[&str]| {
        let out = Command::new(testkit::bin("celeriac-coordinator"))
            .args(["-b", redis])
            .args(args)
            .output()
            .expect("celeriac-coordinator");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON")
    };
    let issued = run(&[
        "token",
        "create",
        "--name",
        "dashboard-test",
        "--ttl-secs",
        "600",
    ]);
    let token = issued["token"].as_str().expect("token").to_string();
    run(&[
        "register",
        "--url",
        &coordinator.1,
        "--token",
        &token,
        "--node",
        node,
        "-Q",
        "celery,longtail,snowshoe",
        "-c",
        "2",
    ])
}

/// Open the cluster stream and read until it has sent both a `workers` and a `queues` event.
fn first_cluster_events(url: &str, key: &str) -> (Value, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut r = agent
        .get(url)
        .header("X-API-Key", key)
        .call()
        .expect("stream request");
    assert_eq!(r.status(), 200);
    let ct = r.headers().get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let reader = std::io::BufReader::new(r.body_mut().as_reader());
    let (mut workers, mut queues, mut event) = (None, None, String::new());
    for line in reader.lines() {
        let line = line.expect("read stream");
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).expect("event JSON");
            match event.as_str() {
                "workers" => workers = Some(v),
                "queues" => queues = Some(v),
                other => panic!("unexpected event {other}: {v}"),
            }
        }
        if let (Some(w), Some(q)) = (&workers, &queues) {
            return (w.clone(), q.clone());
        }
    }
    panic!("the stream ended before sending workers and queues");
}
