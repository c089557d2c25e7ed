//! The OpenAPI contract, shown against the real binary with the real samples loaded: schemathesis (PyPI, from the
//! API tools venv) fuzzes every operation of `/openapi.json` with a bounded number of examples and a fixed seed and
//! must find no 5xx and no response that breaks the document (status, schema, content type, headers); `/docs/` is
//! Swagger UI served from the binary; and a table of bad parameters gets the documented status, code and `parameter`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::redis_db_or_skip;

/// Rate limits high enough that schemathesis never meets them (they have their own tests).
const NO_LIMITS: [&str; 4] = [
    "--statistics-rate-limit",
    "100000/minute",
    "--analyses-rate-limit",
    "100000/minute",
];

/// A guard against a hung run, not a timing claim: about 30 s on 2 cores at rest, but 180 s was not enough with the
/// machine's load average at 12 (coverage and fuzzing passed, the stateful phase was cut off).
const RUN_BUDGET: Duration = Duration::from_secs(480);

/// Checks the document before any request: schemathesis loads it and validates it against the OpenAPI 3.1
/// meta-schema (the venv has no openapi-spec-validator), and every schema in it must be valid JSON Schema 2020-12
/// (the dialect of OpenAPI 3.1). Prints the operations it found.
const VALIDATE: &str = r##"
import sys, schemathesis, jsonschema_rs

s = schemathesis.openapi.from_url(sys.argv[1])
s.validate()
doc = s.raw_schema
DIALECT = "https://json-schema.org/draft/2020-12/schema"

def schemas(node, path):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("schema", "itemSchema") and isinstance(v, dict):
                yield f"{path}/{k}", v
            else:
                yield from schemas(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from schemas(v, f"{path}/{i}")

found = [(f"#/components/schemas/{n}", v) for n, v in doc["components"]["schemas"].items()]
found += list(schemas(doc["paths"], "#/paths"))
for where, schema in found:
    try:
        jsonschema_rs.meta.validate({"$schema": DIALECT, **schema})
    except jsonschema_rs.ValidationError as e:
        sys.exit(f"{where} is not JSON Schema 2020-12: {e}")
ops = [o.ok().label for o in s.get_all_operations()]
print(len(ops), "operations,", len(found), "schemas:", ", ".join(ops))
"##;

/// Settings beyond the command line (`schemathesis.toml` in the run's directory).
///
/// - The stateful phase runs 50 scenarios (each submits a job and follows the links from it), half of the other
///   phases' examples, which keeps the whole run near 30 s on an idle 2-core machine and under 90 s on a busy one.
/// - The progress stream of a job that no worker runs stays open (PENDING, then only `: keep-alive` comments
///   every 15 s): schemathesis reads its first event, checks it against the event schema, and closes it, instead
///   of waiting for the request timeout. The cluster stream never ends: its first two events (`workers` and
///   `queues`, sent at once) are read and checked the same way.
const CONFIG: &str = r#"
[phases.stateful.generation]
max-examples = 50

[[operations]]
include-name = "GET /api/v1/jobs/{id}/events"
max-stream-events = 1
request-timeout = 5

[[operations]]
include-name = "GET /api/v1/cluster/stream"
max-stream-events = 2
request-timeout = 5
"#;

/// The checks run. Of schemathesis' other checks:
/// - `positive_data_acceptance` is left out because some refusals depend on several parameters together or on
///   data, which OpenAPI cannot say: `days` and `start` together, `end` not after `start`, a `cursor` that no
///   `next_cursor` gave, an unknown `sensor` (404), a `time_window` of `0d` or over ten years, thresholds of
///   another detector in `params`. Each is a documented 4xx naming the parameter, and other tests assert them.
/// - `use_after_free` is left out because `DELETE /api/v1/jobs/{id}` revokes a job, as Celery does; the revoked
///   job stays readable (`revoked: true`), it is not a deletion.
/// - `max_response_time` is left out: timing on 2 shared cores is not a property of the document.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,missing_required_header,\
unsupported_method,allow_header_conformance,ignored_auth,ensure_resource_availability";

#[test]
fn schemathesis_finds_no_server_error_and_no_response_outside_the_document() {
    let Some(venv) = api_venv() else { return };
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(&db.url, &redis.url, &NO_LIMITS);
    let (key, _) = create_key(&db.url, "admin", &[]);
    let work = tempdir();
    std::fs::write(work.join("schemathesis.toml"), CONFIG).expect("write schemathesis.toml");
    let document = api.url("/openapi.json");

    let run = Command::new(venv.join("bin/python"))
        .current_dir(&work)
        .args(["-c", VALIDATE, &document])
        .output()
        .expect("run the venv's python");
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the document is not valid:\n{printed}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Schemathesis loads every operation the document lists.
    let doc = get_full(&document, None).body;
    let operations = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|ops| ops.keys()))
        .filter(|k| {
            [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&k.as_str())
        })
        .count();
    assert!(operations >= 17, "{operations} operations");
    assert!(
        printed.starts_with(&format!("{operations} operations")),
        "{printed}"
    );

    let header = format!("X-API-Key: {key}");
    let args: Vec<&str> = vec![
        "run",
        &document,
        "--header",
        &header,
        "--checks",
        CHECKS,
        // Valid and invalid data, in every phase: examples (the document has none yet), coverage (boundaries and
        // each constraint broken), fuzzing, and stateful (following the document's links: a submitted job's
        // status, events and revocation; a listed session's detail).
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        "100",
        "--seed",
        "20261203",
        "--generation-database",
        "none",
        "--no-shrink",
        // One worker: reproducible order, and no concurrent `ast` parsing in Hypothesis, which CPython 3.11.7
        // (the venv's) can fail with "AST constructor recursion depth mismatch".
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
    ];
    let started = Instant::now();
    let mut st = testkit::Child::spawn(
        "schemathesis",
        Command::new(venv.join("bin/schemathesis"))
            .current_dir(&work)
            .args(&args),
    );
    let status = st.wait_timeout(RUN_BUDGET);
    let output = st.output();
    eprintln!(
        "{}/bin/schemathesis {} (in {}) took {:.1?}:\n{}",
        venv.display(),
        args.join(" ").replace(&key, "<key>"),
        work.display(),
        started.elapsed(),
        summary(&output)
    );
    let Some(status) = status else {
        panic!(
            "schemathesis did not finish within {RUN_BUDGET:?}:\n{output}\n---- API ----\n{}",
            api.child.output()
        );
    };
    assert!(
        status.success(),
        "schemathesis found problems ({status}):\n{output}"
    );
    assert!(output.contains("passed"), "{output}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_docs_page_and_the_document_are_served_from_the_binary() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(&db.url, &redis.url, &[]);

    let r = get_full(&api.url("/openapi.json"), None);
    assert_eq!(r.status, 200);
    let version = r.body["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi: {version:?}");
    assert!(r.body["paths"]["/api/v1/analyses"]["post"].is_object());
    // Operation ids are unique (OpenAPI requires it; the links name them).
    let mut ids: Vec<&str> = r.body["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|ops| ops.values()))
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let n = ids.len();
    assert!(n >= 17, "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "operation ids repeat");

    let r = get_full(&api.url("/docs/"), None);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        r.headers
    );
    let html = r.body.as_str().expect("HTML text");
    assert!(html.contains("swagger-ui"), "{html}");
    for cdn in ["http://", "https://", "//unpkg", "//cdn"] {
        assert!(!html.contains(cdn), "the docs page loads {cdn}: {html}");
    }
    // What the page loads is in the binary too.
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        let r = get_full(&api.url(&format!("/docs/{asset}")), None);
        assert_eq!(r.status, 200, "/docs/{asset}");
    }
    let init = get_full(&api.url("/docs/swagger-initializer.js"), None);
    assert!(
        init.body
            .as_str()
            .unwrap_or_default()
            .contains("/openapi.json"),
        "{}",
        init.body
    );
    // `/docs` without the slash goes to the page.
    let r = get_full(&api.url("/docs"), None);
    assert_eq!(r.status, 200, "redirect to /docs/ followed");
}

#[test]
fn bad_parameters_get_the_documented_status_code_and_parameter() {
    let redis = redis_db_or_skip!();
    let rt = runtime();
    let Some(db) = loaded_db(&rt) else { return };
    let api = Api::start(&db.url, &redis.url, &NO_LIMITS);
    let (key, _) = create_key(&db.url, "admin", &[]);

    // (path and query, status, code, parameter)
    let gets: &[(&str, u16, &str, Option<&str>)] = &[
        (
            "/api/v1/statistics/sessions?start=yesterday",
            400,
            "invalid_parameter",
            Some("start"),
        ),
        (
            "/api/v1/statistics/sessions?start=2024-01-02T00:00:00Z&end=2024-01-01T00:00:00Z",
            400,
            "invalid_window",
            Some("end"),
        ),
        (
            "/api/v1/statistics/threats?sensor=nowhere",
            404,
            "unknown_sensor",
            Some("sensor"),
        ),
        (
            "/api/v1/statistics/threats?limit=0",
            400,
            "invalid_parameter",
            Some("limit"),
        ),
        (
            "/api/v1/sessions?limit=1001",
            400,
            "invalid_parameter",
            Some("limit"),
        ),
        (
            "/api/v1/statistics/sensors?colour=red",
            400,
            "unknown_parameter",
            Some("colour"),
        ),
        (
            "/api/v1/statistics/sessions?days=0",
            400,
            "invalid_parameter",
            Some("days"),
        ),
        (
            "/api/v1/findings/botnet?limit=x",
            400,
            "invalid_parameter",
            Some("limit"),
        ),
    ];
    for (path, status, code, parameter) in gets {
        let r = get_full(&api.url(path), Some(&key));
        check_error(&format!("GET {path}"), &r, *status, code, *parameter);
    }

    // (body, status, code, parameter, text the message must contain)
    // Shapes serde refuses name the field in the message (`parameter` stays unset for them); the values the
    // service checks name it in `parameter` too.
    let posts: &[(&str, u16, &str, Option<&str>, &str)] = &[
        (
            r#"{"kind": "botnet", "colour": "red"}"#,
            422,
            "invalid_body",
            None,
            "unknown field `colour`",
        ),
        (r#"{"kind": "botnet""#, 400, "malformed_body", None, ""),
        (
            r#"{"kind": "botnet", "time_window": "last tuesday"}"#,
            422,
            "invalid_body",
            Some("time_window"),
            "",
        ),
        (
            r#"{"kind": "fortune-telling"}"#,
            422,
            "invalid_body",
            None,
            "kind: unknown variant `fortune-telling`",
        ),
        (
            r#"{"sensor": "lucas"}"#,
            422,
            "invalid_body",
            None,
            "`kind`",
        ),
        (
            r#"{"kind": "botnet", "params": []}"#,
            422,
            "invalid_body",
            None,
            "params: ",
        ),
        (r#"["botnet"]"#, 422, "invalid_body", None, "object"),
        (
            r#"{"kind": "snowshoe", "params": {"nope": 1}}"#,
            422,
            "invalid_body",
            Some("params"),
            "nope",
        ),
        (
            r#"{"kind": "botnet", "sensor": "nowhere"}"#,
            404,
            "unknown_sensor",
            Some("sensor"),
            "nowhere",
        ),
        (
            r#"{"kind": "botnet", "priority": 10}"#,
            422,
            "invalid_body",
            Some("priority"),
            "",
        ),
    ];
    for (body, status, code, parameter, text) in posts {
        let r = send("POST", &api.url("/api/v1/analyses"), &key, body);
        let what = format!("POST /api/v1/analyses {body}");
        check_error(&what, &r, *status, code, *parameter);
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "{what}: message {message:?}");
    }

    // A path of the document with a method it does not list is 405 with `Allow`; other paths are 404.
    let methods: &[(&str, &str, u16, &str, Option<&str>)] = &[
        ("POST", "/healthz", 405, "method_not_allowed", Some("GET")),
        ("TRACE", "/readyz", 405, "method_not_allowed", Some("GET")),
        (
            "PUT",
            "/api/v1/jobs/abc",
            405,
            "method_not_allowed",
            Some("GET, DELETE"),
        ),
        (
            "GET",
            "/api/v1/analyses",
            405,
            "method_not_allowed",
            Some("POST"),
        ),
        ("GET", "/api/v1/nothing", 404, "route_not_found", None),
        ("DELETE", "/api/v1/jobs/abc/x", 404, "route_not_found", None),
    ];
    for (method, path, status, code, allow) in methods {
        let r = send(method, &api.url(path), &key, "");
        let what = format!("{method} {path}");
        check_error(&what, &r, *status, code, None);
        assert_eq!(r.header("allow"), *allow, "{what}");
    }
}

/// The one error shape: `{code, message, status, parameter?}` with the expected values.
fn check_error(what: &str, r: &Reply, status: u16, code: &str, parameter: Option<&str>) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    assert_eq!(r.body["code"], code, "{what}: {}", r.body);
    assert_eq!(r.body["status"], json!(status), "{what}: {}", r.body);
    assert_eq!(
        r.body["parameter"].as_str(),
        parameter,
        "{what}: {}",
        r.body
    );
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        r.body
    );
    if let Some(p) = parameter {
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(p),
            "{what}: the message does not name {p}: {message}"
        );
    }
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: {:?}",
        r.headers
    );
}

/// Send `body` (as `application/json`) with `method` and the key.
fn send(method: &str, url: &str, key: &str, body: &str) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("X-API-Key", key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .expect("request");
    let mut r = agent.run(request).expect(method);
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// A fresh working directory for schemathesis (it reads `schemathesis.toml` from and may write into its cwd).
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("celeriac-schemathesis-{}", uuid_like()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    )
}

/// The summary at the end of schemathesis' output (or all of it when short).
fn summary(output: &str) -> &str {
    let at = output
        .rfind("SUMMARY")
        .or_else(|| output.rfind("FAILURES"))
        .unwrap_or(0);
    &output[at..]
}
