//! MCP at `/mcp`, end to end: the real `celeriac-api` binary with the samples loaded, driven by the official MCP
//! Python client (`tests/python/mcp_client.py`) over the streamable HTTP transport, both through the `initialize`
//! handshake (`mode="legacy"`) and the 2026-07-28 `server/discover` path (`mode="auto"`). Every read tool must answer
//! exactly what its REST route answers for the same window; bad arguments are tool errors naming the parameter; keys,
//! scopes, `Origin` and the transport's HTTP rules are checked with raw requests.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::redis_db_or_skip;

const TOOLS: [&str; 11] = [
    "get_session_statistics",
    "get_top_attackers",
    "get_top_credentials",
    "get_top_commands",
    "get_sensor_status",
    "search_sessions",
    "get_session",
    "run_analysis",
    "get_job",
    "list_findings",
    "get_finding",
];

/// Run the Python client with `plan` (see the script's docstring); its JSON answer.
fn mcp_client(venv: &std::path::Path, plan: &Value) -> Value {
    let script = testkit::repo_root().join("api/tests/python/mcp_client.py");
    let mut child = Command::new(venv.join("bin/python"))
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the MCP client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plan.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mcp_client.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mcp_client.py printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The REST answer at `path`, which must be 200.
fn rest(api: &Api, key: &str, path: &str) -> Value {
    let (status, body) = get(&api.url(path), Some(key));
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The structured result of call `i`, which must have succeeded.
fn ok(out: &Value, i: usize) -> &Value {
    let r = &out["results"][i];
    assert!(r.get("exception").is_none(), "call {i}: {r}");
    assert_eq!(r["is_error"], false, "call {i}: {r}");
    assert!(r["structured"].is_object(), "call {i}: {r}");
    // The text content is the same JSON.
    let text: Value = serde_json::from_str(r["text"][0].as_str().unwrap()).unwrap();
    assert_eq!(text, r["structured"], "call {i}");
    &r["structured"]
}

/// The API error body of call `i`, which must be a tool error (not a protocol error).
fn tool_error(out: &Value, i: usize) -> Value {
    let r = &out["results"][i];
    assert!(r.get("exception").is_none(), "call {i}: {r}");
    assert_eq!(r["is_error"], true, "call {i}: {r}");
    serde_json::from_str(r["text"][0].as_str().unwrap()).expect("error JSON")
}

fn pick(v: &Value, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .map(|k| (k.to_string(), v[*k].clone()))
            .collect(),
    )
}

#[test]
fn every_tool_answers_what_its_rest_route_answers() {
    let redis = redis_db_or_skip!();
    let Some(venv) = api_venv() else { return };
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(&db.url, &redis.url, &[]);
    let (key, _) = create_key(&db.url, "statistics:read,jobs:write", &[]);

    let stats = rest(
        &api,
        &key,
        &format!("/api/v1/statistics/sessions?{ALL_TIME}"),
    );
    let threats = rest(
        &api,
        &key,
        &format!("/api/v1/statistics/threats?{ALL_TIME}&limit=5"),
    );
    let sensors = rest(
        &api,
        &key,
        &format!("/api/v1/statistics/sensors?{ALL_TIME}"),
    );
    let sessions = rest(
        &api,
        &key,
        &format!("/api/v1/sessions?{ALL_TIME}&sensor=lucas&has_commands=true&limit=3"),
    );
    let sid = sessions["sessions"][0]["session_id"]
        .as_str()
        .expect("a session with commands")
        .to_string();
    let detail = rest(&api, &key, &format!("/api/v1/sessions/{sid}"));
    let findings = rest(&api, &key, "/api/v1/findings/snowshoe?limit=5");
    assert!(stats["total_sessions"].as_i64().unwrap() > 0);
    assert!(!threats["top_source_ips"].as_array().unwrap().is_empty());
    assert!(detail["events"].as_array().unwrap().len() > 1);

    let window = json!({"start": "2018-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"});
    let with = |extra: Value| {
        let mut w = window.clone();
        for (k, v) in extra.as_object().unwrap() {
            w[k] = v.clone();
        }
        w
    };
    let calls = json!([
        {"tool": "get_session_statistics", "arguments": window},                            // 0
        {"tool": "get_top_attackers", "arguments": with(json!({"limit": 5}))},              // 1
        {"tool": "get_top_credentials", "arguments": with(json!({"limit": 5}))},            // 2
        {"tool": "get_top_commands", "arguments": with(json!({"limit": 5}))},               // 3
        {"tool": "get_sensor_status", "arguments": window},                                 // 4
        {"tool": "search_sessions",
         "arguments": with(json!({"sensor": ["lucas"], "has_commands": true, "limit": 3}))}, // 5
        {"tool": "get_session", "arguments": {"session_id": sid}},                          // 6
        {"tool": "list_findings", "arguments": {"kind": "snowshoe", "limit": 5}},           // 7
        {"tool": "get_top_attackers", "arguments": with(json!({"limit": 0}))},              // 8: bad argument
        {"tool": "get_sensor_status", "arguments": with(json!({"colour": "red"}))},         // 9: unknown argument
        {"tool": "get_session", "arguments": {"session_id": "no-such-session"}},            // 10
        {"tool": "get_session_statistics", "arguments": {"sensor": "nope"}},                // 11: unknown sensor
        {"tool": "run_analysis", "arguments": {"kind": "longtail", "time_window": window}}, // 12
        {"tool": "get_job", "arguments": {"id": "$result:12:id"}},                          // 13
        {"tool": "run_analysis", "arguments": {"kind": "longtail", "priority": 12}},       // 14: bad priority
        {"tool": "no_such_tool", "arguments": {}},                                          // 15: protocol error
    ]);

    let mut job_ids = Vec::new();
    for mode in ["legacy", "auto"] {
        let out = mcp_client(
            &venv,
            &json!({"url": api.url("/mcp"), "key": key, "mode": mode, "calls": calls}),
        );
        assert!(out.get("error").is_none(), "{mode}: {out}");
        let version = out["protocol_version"].as_str().unwrap();
        match mode {
            // The newest handshake revision; at least 2025-06-18 (structured tool output).
            "legacy" => assert_eq!(version, "2025-11-25"),
            _ => assert_eq!(version, "2026-07-28"),
        }

        // The tool list: every required tool, each with an object input schema and an output schema.
        let tools = out["tools"].as_array().unwrap();
        for name in TOOLS {
            let t = tools
                .iter()
                .find(|t| t["name"] == name)
                .unwrap_or_else(|| panic!("{mode}: {name} not listed"));
            assert_eq!(t["inputSchema"]["type"], "object", "{name}");
            assert!(t["outputSchema"]["properties"].is_object(), "{name}");
            assert!(t["description"].as_str().unwrap().len() > 20, "{name}");
        }
        let run = tools.iter().find(|t| t["name"] == "run_analysis").unwrap();
        assert_eq!(run["inputSchema"]["required"], json!(["kind"]));
        assert_eq!(run["annotations"]["readOnlyHint"], false);

        // The same answers as REST, whole (numbers, order, window).
        assert_eq!(ok(&out, 0), &stats, "{mode}: session statistics");
        assert_eq!(
            ok(&out, 1),
            &pick(&threats, &["window", "top_source_ips"]),
            "{mode}"
        );
        assert_eq!(
            ok(&out, 2),
            &pick(&threats, &["window", "top_credentials", "top_usernames"]),
            "{mode}"
        );
        assert_eq!(
            ok(&out, 3),
            &pick(&threats, &["window", "top_commands"]),
            "{mode}"
        );
        assert_eq!(ok(&out, 4), &sensors, "{mode}: sensors");
        assert_eq!(ok(&out, 5), &sessions, "{mode}: sessions");
        assert_eq!(ok(&out, 6), &detail, "{mode}: session detail");
        assert_eq!(
            ok(&out, 6)["events"].as_array().unwrap().len(),
            detail["events"].as_array().unwrap().len()
        );
        assert_eq!(ok(&out, 7), &findings, "{mode}: findings");

        // Errors are tool results with the API's code and parameter, the REST body.
        let e = tool_error(&out, 8);
        assert_eq!(
            (e["code"].as_str(), e["parameter"].as_str()),
            (Some("invalid_parameter"), Some("limit")),
            "{e}"
        );
        let rest_e = get(
            &api.url(&format!("/api/v1/statistics/threats?{ALL_TIME}&limit=0")),
            Some(&key),
        )
        .1;
        assert_eq!(e, rest_e);
        let e = tool_error(&out, 9);
        assert_eq!(
            (e["code"].as_str(), e["parameter"].as_str()),
            (Some("unknown_parameter"), Some("colour"))
        );
        assert_eq!(tool_error(&out, 10)["code"], "session_not_found");
        let e = tool_error(&out, 11);
        assert_eq!(
            (e["code"].as_str(), e["status"].as_i64()),
            (Some("unknown_sensor"), Some(404))
        );

        // An analysis: a job id at once; with no worker it waits in its queue, PENDING.
        let accepted = ok(&out, 12);
        let id = accepted["id"].as_str().unwrap();
        job_ids.push(id.to_string());
        assert_eq!(
            accepted["task"],
            "cowrieprocessor.workers.longtail_analysis"
        );
        let job = ok(&out, 13);
        assert_eq!(
            (job["id"].as_str(), job["state"].as_str()),
            (Some(id), Some("PENDING")),
            "{job}"
        );
        assert_eq!(job, &rest(&api, &key, &format!("/api/v1/jobs/{id}")));
        let e = tool_error(&out, 14);
        assert_eq!(
            (e["code"].as_str(), e["parameter"].as_str()),
            (Some("invalid_body"), Some("priority"))
        );

        // An unknown tool is a protocol error, not a tool result.
        let r = &out["results"][15];
        assert!(
            r["exception"]
                .as_str()
                .is_some_and(|x| x.contains("no_such_tool")),
            "{r}"
        );
    }

    // A worker runs the two queued analyses; then get_job, list_findings and get_finding show what REST shows.
    let _worker = testkit::rust_worker(
        &redis.url,
        "ml@%h",
        &[
            "-Q",
            "celery,longtail,snowshoe",
            "-c",
            "2",
            "--database-url",
            &db.url,
        ],
    );
    for id in &job_ids {
        let done = testkit::wait_until(Duration::from_secs(180), || {
            rest(&api, &key, &format!("/api/v1/jobs/{id}"))["ready"] == true
        });
        assert!(done, "job {id} did not finish");
    }
    let list = rest(&api, &key, "/api/v1/findings/longtail");
    let fid = list["findings"][0]["id"]
        .as_i64()
        .expect("a longtail finding");
    let finding = rest(&api, &key, &format!("/api/v1/findings/longtail/{fid}"));
    let missing = get(&api.url("/api/v1/findings/longtail/999999999"), Some(&key)).1;
    let calls = json!([
        {"tool": "get_job", "arguments": {"id": job_ids[0]}},
        {"tool": "list_findings", "arguments": {"kind": "longtail"}},
        {"tool": "get_finding", "arguments": {"kind": "longtail", "id": fid}},
        {"tool": "get_finding", "arguments": {"kind": "longtail", "id": "999999999"}},
        {"tool": "list_findings", "arguments": {"kind": "nope"}},
    ]);
    let out = mcp_client(
        &venv,
        &json!({"url": api.url("/mcp"), "key": key, "mode": "auto", "calls": calls}),
    );
    let job = ok(&out, 0);
    assert_eq!(job["state"], "SUCCESS", "{job}");
    assert_eq!(
        job,
        &rest(&api, &key, &format!("/api/v1/jobs/{}", job_ids[0]))
    );
    assert_eq!(ok(&out, 1), &list);
    assert_eq!(ok(&out, 2), &finding);
    assert_eq!(tool_error(&out, 3), missing);
    assert_eq!(missing["code"], "finding_not_found");
    let e = tool_error(&out, 4);
    assert_eq!(
        (e["code"].as_str(), e["parameter"].as_str()),
        (Some("invalid_parameter"), Some("kind"))
    );
}

/// A raw JSON-RPC POST to `/mcp` with `headers`; status, headers and body (JSON or text).
fn raw(
    api: &Api,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = api.url("/mcp");
    let r = if method == "POST" {
        let mut req = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send(body)
    } else {
        let mut req = agent.get(&url).header("Accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.call()
    };
    let mut r = r.expect("request");
    let status = r.status().as_u16();
    let hs = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        hs,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"PV","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

#[test]
fn keys_scopes_origin_and_the_transport_rules() {
    let redis = redis_db_or_skip!();
    let Some(venv) = api_venv() else { return };
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(&db.url, &redis.url, &[]);
    let (reader, _) = create_key(&db.url, "statistics:read", &[]);
    let (writer, _) = create_key(&db.url, "jobs:write", &[]);

    // No key: 401 before any MCP processing, for raw requests and for the official client.
    let init = INIT.replace("PV", "2025-06-18");
    let (status, _, body) = raw(&api, "POST", &[], &init);
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("missing_api_key")),
        "{body}"
    );
    let out = mcp_client(
        &venv,
        &json!({"url": api.url("/mcp"), "key": null, "mode": "legacy"}),
    );
    assert!(out["error"].is_string(), "connected without a key: {out}");
    assert_eq!(out["http_statuses"], json!([401]), "{out}");
    let (status, _, _) = raw(&api, "POST", &[("X-API-Key", "cak_wrong")], &init);
    assert_eq!(status, 401);

    // Stateless JSON: initialize answers application/json with the negotiated version and no session id;
    // Authorization: Bearer works too.
    let bearer = format!("Bearer {reader}");
    let (status, hs, body) = raw(&api, "POST", &[("Authorization", &bearer)], &init);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18", "{body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "celeriac-api");
    assert!(body["result"]["capabilities"]["tools"].is_object());
    assert!(
        hs.iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json"))
    );
    assert!(!hs.iter().any(|(k, _)| k == "mcp-session-id"), "{hs:?}");
    // Older than 2025-06-18: the server offers its newest handshake revision instead.
    let (_, _, body) = raw(
        &api,
        "POST",
        &[("X-API-Key", &reader)],
        &INIT.replace("PV", "2024-11-05"),
    );
    assert_eq!(body["result"]["protocolVersion"], "2025-11-25", "{body}");
    // The initialized notification: 202, no body.
    let (status, _, _) = raw(
        &api,
        "POST",
        &[
            ("X-API-Key", &reader),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(status, 202);
    // No server-initiated stream in stateless mode: GET is 405.
    let (status, _, _) = raw(&api, "GET", &[("X-API-Key", &reader)], "");
    assert_eq!(status, 405);
    // Malformed JSON-RPC is a protocol error.
    let (status, _, body) = raw(&api, "POST", &[("X-API-Key", &reader)], "{not json");
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!(-32700)),
        "{body}"
    );
    // A tools/call on its own (no handshake: stateless) works; an unknown tool is a JSON-RPC error.
    let call = |name: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{name}","arguments":{{"limit":1,"days":3660,"end":"2025-01-01T00:00:00Z"}}}}}}"#
        )
    };
    let pv = ("MCP-Protocol-Version", "2025-06-18");
    let (status, _, body) = raw(
        &api,
        "POST",
        &[("X-API-Key", &reader), pv],
        &call("get_top_attackers"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["isError"], false, "{body}");
    assert_eq!(
        body["result"]["structuredContent"]["top_source_ips"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (_, _, body) = raw(&api, "POST", &[("X-API-Key", &reader), pv], &call("nope"));
    assert!(body["error"]["code"].is_i64(), "{body}");

    // Origin: absent or localhost passes, anything else is 403.
    for (origin, want) in [
        ("http://localhost:6274", 200),
        ("http://127.0.0.1", 200),
        ("https://evil.example", 403),
        ("null", 403),
    ] {
        let (status, _, body) = raw(
            &api,
            "POST",
            &[("X-API-Key", &reader), ("Origin", origin)],
            &init,
        );
        assert_eq!(status, want, "{origin}: {body}");
    }

    // Scopes: reading needs statistics:read, run_analysis needs jobs:write.
    let analysis = json!({"tool": "run_analysis", "arguments": {"kind": "longtail"}});
    let read = json!({"tool": "get_sensor_status", "arguments": {}});
    let out = mcp_client(
        &venv,
        &json!({"url": api.url("/mcp"), "key": reader, "mode": "legacy", "calls": [analysis, read]}),
    );
    let e = tool_error(&out, 0);
    assert_eq!(
        (e["code"].as_str(), e["status"].as_i64()),
        (Some("missing_scope"), Some(403)),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("jobs:write"));
    ok(&out, 1);
    let bad_kind = json!({"tool": "run_analysis", "arguments": {"kind": "nope"}});
    let out = mcp_client(
        &venv,
        &json!({"url": api.url("/mcp"), "key": writer, "mode": "auto", "calls": [analysis, read, bad_kind]}),
    );
    assert!(ok(&out, 0)["id"].is_string());
    assert_eq!(tool_error(&out, 1)["code"], "missing_scope");
    // A bad body is refused with the REST message, naming the field.
    let e = tool_error(&out, 2);
    assert_eq!(e["code"], "invalid_body", "{e}");
    assert!(e["message"].as_str().unwrap().starts_with("kind: "), "{e}");
    let r = post(
        &api.url("/api/v1/analyses"),
        Some(&writer),
        &json!({"kind": "nope"}),
    );
    assert_eq!(e, r.body);
}

#[test]
fn run_analysis_counts_against_the_analyses_limit() {
    let redis = redis_db_or_skip!();
    let Some(venv) = api_venv() else { return };
    let rt = runtime();
    // No samples needed: an empty database (the API applies the migrations).
    let db = rt.block_on(store::test_support::TestDb::create());
    if !testkit::require("PostgreSQL at 127.0.0.1:5432", db.is_some()) {
        return;
    }
    let db = db.unwrap();
    let api = Api::start(&db.url, &redis.url, &[]);
    let (key, _) = create_key(&db.url, "statistics:read,jobs:write", &[]);
    // The default analyses policy is 5 a minute; the sixth submission within the minute is refused.
    let calls: Vec<Value> = (0..6)
        .map(|_| json!({"tool": "run_analysis", "arguments": {"kind": "longtail"}}))
        .collect();
    let out = mcp_client(
        &venv,
        &json!({"url": api.url("/mcp"), "key": key, "mode": "legacy", "calls": calls}),
    );
    for i in 0..5 {
        ok(&out, i);
    }
    let e = tool_error(&out, 5);
    assert_eq!(
        (e["code"].as_str(), e["status"].as_i64()),
        (Some("rate_limited"), Some(429)),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("analyses"));
}
