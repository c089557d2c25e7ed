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

/// The module a source file is, as a path under its crate (`routes::cluster`), or `None` for the crate root
/// (`lib.rs`, `main.rs`, `bin/*.rs`), which declares every module and holds what they share.
fn module_of(src: &std::path::Path, file: &std::path::Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.first().map(String::as_str) == Some("bin") {
        return None;
    }
    let last = parts.pop()?;
    match last.as_str() {
        "lib.rs" | "main.rs" if parts.is_empty() => return None,
        "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    Some(parts)
}

/// The module paths a file names through `crate::` and `super::` (in `use` trees, braces included, and inline),
/// outside comments and `#[cfg(test)]` modules. `super::` is resolved against `module`.
fn named_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    // Parse one path (or brace tree) starting at `i`, after a prefix; push every full path.
    fn tree(code: &[u8], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let mut path = prefix;
        loop {
            while i < code.len() && code[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < code.len() && code[i] == b'{' {
                i += 1;
                loop {
                    i = tree(code, i, path.clone(), out);
                    while i < code.len() && (code[i].is_ascii_whitespace() || code[i] == b',') {
                        i += 1;
                    }
                    if i >= code.len() || code[i] == b'}' {
                        return i + 1;
                    }
                }
            }
            let start = i;
            while i < code.len() && ident(code[i]) {
                i += 1;
            }
            if i == start {
                out.push(path);
                return i;
            }
            path.push(String::from_utf8_lossy(&code[start..i]).into_owned());
            if code[i..].starts_with(b"::") {
                i += 2;
            } else {
                out.push(path);
                return i;
            }
        }
    }
    let mut out = Vec::new();
    // `super` is the parent module, for `a/b.rs` and `a/b/mod.rs` alike (both are module `a::b`).
    let parent = module[..module.len().saturating_sub(1)].to_vec();
    for (kw, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut from = 0;
        while let Some(at) = code[from..].find(kw) {
            let at = from + at;
            from = at + kw.len();
            if at > 0 && (ident(bytes[at - 1]) || bytes[at - 1] == b'$' || bytes[at - 1] == b':') {
                continue;
            }
            tree(bytes, from, base.clone(), &mut out);
        }
    }
    out
}

#[test]
fn no_module_imports_in_a_circle() {
    // Inside each crate, the modules that name each other through `crate::` or `super::` form a graph without
    // cycles: layers, each using only those below (a circle was mended in the api and the worker runtime).
    let mut circles = Vec::new();
    for p in packages() {
        let manifest = std::path::PathBuf::from(p["manifest_path"].as_str().unwrap());
        let src = manifest.parent().unwrap().join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    files.push(path);
                }
            }
        }
        let modules: Vec<(Vec<String>, std::path::PathBuf)> = files
            .iter()
            .filter_map(|f| module_of(&src, f).map(|m| (m, f.clone())))
            .collect();
        let index = |path: &[String]| {
            // The longest known module the path starts with.
            (1..=path.len())
                .rev()
                .find_map(|n| modules.iter().position(|(m, _)| m.as_slice() == &path[..n]))
        };
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); modules.len()];
        for (from, (module, file)) in modules.iter().enumerate() {
            let text = std::fs::read_to_string(file).unwrap();
            for path in named_paths(&text, module) {
                if let Some(to) = index(&path)
                    && to != from
                    && !edges[from].contains(&to)
                {
                    edges[from].push(to);
                }
            }
        }
        // Depth-first search with colours; a grey node met again closes a circle.
        fn visit(
            n: usize,
            edges: &[Vec<usize>],
            colour: &mut [u8],
            stack: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            colour[n] = 1;
            stack.push(n);
            for &m in &edges[n] {
                if colour[m] == 1 {
                    let at = stack.iter().position(|&x| x == m).unwrap();
                    return Some(stack[at..].to_vec());
                }
                if colour[m] == 0
                    && let Some(c) = visit(m, edges, colour, stack)
                {
                    return Some(c);
                }
            }
            stack.pop();
            colour[n] = 2;
            None
        }
        let mut colour = vec![0u8; modules.len()];
        for n in 0..modules.len() {
            if colour[n] == 0
                && let Some(c) = visit(n, &edges, &mut colour, &mut Vec::new())
            {
                let names: Vec<String> = c.iter().map(|&i| modules[i].0.join("::")).collect();
                circles.push(format!(
                    "{}: {}",
                    p["name"].as_str().unwrap(),
                    names.join(" -> ")
                ));
                // One circle per tangle is enough to name; what the search left grey is done with.
                for c in colour.iter_mut().filter(|c| **c == 1) {
                    *c = 2;
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules that import in a circle: {circles:#?}"
    );
}
