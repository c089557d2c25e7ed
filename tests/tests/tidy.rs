//! Architecture invariants as a test (rust-analyzer's habit): which crate may know Redis, diesel, actix and tokio.
//! Reads `cargo metadata`, so a new dependency that breaks a boundary fails here, not in review.

use serde_json::Value;
use std::process::Command;

fn packages() -> Vec<Value> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(testkit::repo_root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["packages"].as_array().unwrap().clone()
}

/// Normal (non-dev) dependency names of a package.
fn normal_deps(p: &Value) -> Vec<String> {
    p["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].is_null())
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every package `pkg` needs at run time on this platform, directly or not, after feature resolution
/// (`cargo tree -e normal`: no dev or build dependencies; works offline with what the build downloaded).
fn reachable(pkg: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            pkg,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--offline",
        ])
        .current_dir(testkit::repo_root())
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != pkg)
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_runtime_and_the_seam_know_no_domain_and_no_client_library() {
    // Checked on the resolved tree: an indirect path (runtime -> control -> broker -> redis) fails too.
    let rules: &[(&str, &[&str])] = &[
        (
            "worker-runtime",
            &[
                "store",
                "analysis",
                "cowrie-tasks",
                "broker",
                "redis",
                "lapin",
                "diesel",
                "diesel-async",
                "actix-web",
                // Tracing through the `opentelemetry` API only: the SDK and the exporter are the binary's choice.
                "opentelemetry_sdk",
                "opentelemetry-otlp",
            ],
        ),
        (
            "celeriac-client",
            &["opentelemetry_sdk", "opentelemetry-otlp"],
        ),
        (
            "transport",
            &["broker", "redis", "lapin", "diesel", "store"],
        ),
        (
            "celeriac-control",
            &["broker", "redis", "lapin", "diesel", "store"],
        ),
        (
            "celery-proto",
            &["tokio", "redis", "lapin", "diesel", "transport"],
        ),
    ];
    // The check sees indirect dependencies: the worker binary reaches redis only through broker.
    assert!(reachable("celeriac-worker").iter().any(|r| r == "redis"));
    for (pkg, banned) in rules {
        let reach = reachable(pkg);
        assert!(
            reach.iter().any(|r| r == "serde_json"),
            "cargo tree of {pkg} looks empty: {reach:?}"
        );
        for b in *banned {
            assert!(
                !reach.iter().any(|r| r == b),
                "{pkg} reaches {b} through its dependencies (see ARCHITECTURE.md invariants)"
            );
        }
    }
}

#[test]
fn outside_systems_stay_behind_their_crate() {
    // (dependency, packages allowed to depend on it normally)
    let rules: &[(&str, &[&str])] = &[
        // Only transport implementations know their client library.
        ("redis", &["broker", "testkit"]),
        // ... and the benchmark's bare consumer, which measures RabbitMQ's own limit beside the worker.
        ("lapin", &["broker-amqp", "celeriac-bench"]),
        ("diesel", &["store"]),
        ("diesel-async", &["store"]),
        ("actix-web", &["celeriac-coordinator", "celeriac-api"]),
        // The public API's own tools: OpenAPI, Swagger UI and MCP stay in the API crate.
        ("utoipa", &["celeriac-api"]),
        ("utoipa-swagger-ui", &["celeriac-api"]),
        ("rmcp", &["celeriac-api"]),
        // The original cowrieprocessor's SQLite files are read only by `cowrie-loader import-original`.
        ("rusqlite", &["cowrie-loader"]),
        // OpenTelemetry's SDK and OTLP exporter are set up in one crate (`telemetry`), called by the binaries.
        ("opentelemetry-otlp", &["telemetry"]),
        ("opentelemetry_sdk", &["telemetry"]),
    ];
    let pkgs = packages();
    assert!(pkgs.len() >= 8, "workspace looks incomplete");
    for p in &pkgs {
        let name = p["name"].as_str().unwrap();
        for dep in normal_deps(p) {
            for (sys, allowed) in rules {
                assert!(
                    dep != *sys || allowed.contains(&name),
                    "{name} depends on {sys}; only {allowed:?} may (see ARCHITECTURE.md invariants)"
                );
            }
        }
    }
}

#[test]
fn pure_crates_have_no_io_runtime() {
    let pure = ["celery-proto", "routing", "analysis"];
    let forbidden = [
        "tokio",
        "redis",
        "diesel",
        "diesel-async",
        "actix-web",
        "bb8",
        "broker",
        "store",
    ];
    for p in packages() {
        let name = p["name"].as_str().unwrap();
        if pure.contains(&name) {
            for dep in normal_deps(&p) {
                assert!(
                    !forbidden.contains(&dep.as_str()),
                    "pure crate {name} depends on {dep}"
                );
            }
        }
    }
}

#[test]
fn binaries_do_not_depend_on_binaries() {
    let pkgs = packages();
    let bin_pkgs: Vec<String> = pkgs
        .iter()
        .filter(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        })
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    for p in &pkgs {
        let name = p["name"].as_str().unwrap();
        for dep in normal_deps(p) {
            assert!(
                !bin_pkgs.contains(&dep),
                "{name} depends on the binary package {dep}"
            );
        }
    }
}

#[test]
fn every_source_file_says_what_it_owns() {
    let root = testkit::repo_root();
    let mut missing = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                if !first.starts_with("//!") {
                    missing.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` comment: {missing:?}"
    );
}

#[test]
fn startup_is_std_only() {
    // Every binary runs `startup` before anything else (env file, health probe): it must stay tiny and pure std.
    let p = packages()
        .into_iter()
        .find(|p| p["name"] == "startup")
        .expect("package startup");
    assert_eq!(
        normal_deps(&p),
        Vec::<String>::new(),
        "startup has normal dependencies"
    );
}
