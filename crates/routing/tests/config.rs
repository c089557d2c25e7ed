//! Config validation: every bad input names its line and column and says what is wrong.

use routing::{ConfigError, NoWorkerPolicy, Strategy, WorkerConfig};

/// Parse `yaml` and expect an error at (line, column) whose message contains `needle`.
#[track_caller]
fn check_err(yaml: &str, line: usize, column: usize, needle: &str) {
    let err = WorkerConfig::from_yaml_str(yaml, "wc.yaml").expect_err("must be refused");
    let text = err.to_string();
    assert_eq!(err.position(), Some((line, column)), "position of: {text}");
    assert!(text.contains(needle), "{text:?} should mention {needle:?}");
    assert!(
        text.starts_with(&format!("wc.yaml:{line}:{column}: ")),
        "{text}"
    );
}

#[test]
fn unknown_top_level_key() {
    check_err("version: 1\nwokers: []\n", 2, 1, "unknown field `wokers`");
}

#[test]
fn unknown_key_inside_a_worker() {
    check_err(
        "workers:\n  - name: a\n    queus: [x]\n",
        3,
        5,
        "unknown field `queus`",
    );
}

#[test]
fn unknown_key_in_capabilities_and_routing() {
    check_err(
        "workers:\n  - name: a\n    capabilities:\n      ram_gb: 4\n",
        4,
        7,
        "unknown field `ram_gb`",
    );
    check_err(
        "routing:\n  default_strategy: queue\n  fallback: reject\n",
        3,
        3,
        "unknown field `fallback`",
    );
}

#[test]
fn bad_values_are_errors_with_position() {
    check_err(
        "workers:\n  - name: a\n    queues:\n      - { name: q, priority: 101 }\n",
        4,
        30,
        "priority 101 is out of range 0 to 100",
    );
    check_err(
        "routing:\n  default_strategy: fastest\n",
        2,
        21,
        "unknown variant `fastest`",
    );
    check_err(
        "routing:\n  when_no_worker: drop\n",
        2,
        19,
        "unknown variant `drop`",
    );
    check_err(
        "routing:\n  overload_threshold: 0\n",
        2,
        23,
        "overload_threshold 0 is out of range",
    );
    check_err(
        "workers:\n  - name: a\n    capabilities: { accelerator: tpu9 }\n",
        3,
        34,
        "unknown variant `tpu9`",
    );
    check_err(
        "workers:\n  - name: a\n    capabilities: { memory_gb: -1 }\n",
        3,
        32,
        "-1 is not an amount",
    );
    check_err(
        "profiles:\n  general: { queues: [celery], concurrency: 0 }\n",
        2,
        45,
        "concurrency 0 is out of range",
    );
    check_err(
        "profiles:\n  general: { queues: [], concurrency: 2 }\n",
        2,
        12,
        "at least one queue",
    );
    check_err("version: 2\n", 1, 10, "unsupported version 2");
    check_err(
        "workers:\n  - name: a\n    queues: [{ name: a@h.dq2 }]\n",
        3,
        22,
        "worker-direct queue",
    );
    check_err(
        "workers:\n  - name: \"a b\"\n",
        2,
        11,
        "contains whitespace",
    );
}

#[test]
fn wrong_types_are_errors_with_position() {
    check_err(
        "workers:\n  - name: a\n    queues: celery\n",
        3,
        13,
        "invalid type",
    );
    check_err(
        "workers:\n  - name: a\n    queues: [{ name: q, exclusive: maybe }]\n",
        3,
        36,
        "invalid type",
    );
}

#[test]
fn duplicates_point_at_the_containing_node() {
    check_err(
        "workers:\n  - name: a\n    queues: [{name: q}, {name: q}]\n",
        2,
        3,
        "lists queue \"q\" twice",
    );
    check_err(
        "workers:\n  - name: a\n  - name: a\n",
        2,
        3,
        "worker name \"a\" is used twice",
    );
}

#[test]
fn malformed_yaml_has_a_position() {
    let err = WorkerConfig::from_yaml_str("workers: [\n  - name: a\n", "wc.yaml").unwrap_err();
    assert!(err.position().is_some(), "{err}");
}

#[test]
fn a_worker_needs_some_way_to_match() {
    check_err(
        "workers:\n  - queues: [{name: q}]\n",
        2,
        3,
        "at least one of `name`, `node`, `hostname`",
    );
    // The name defaults to the node pattern, then the host name (`host` is accepted for `hostname`).
    let c = WorkerConfig::from_yaml_str(
        "workers:\n  - node: 'a@*'\n  - host: mac\n    capabilities: {accelerator: mps}\n",
        "wc.yaml",
    )
    .unwrap();
    assert_eq!(c.workers[0].name, "a@*");
    assert_eq!(c.workers[1].name, "mac");
    assert!(c.workers[1].matches("w@mac"));
    assert_eq!(
        c.workers[1].capabilities.accelerator,
        Some(routing::Accelerator::Metal)
    );
}

#[test]
fn defaults_and_rule_precedence() {
    let c = WorkerConfig::from_yaml_str(
        r#"
routing:
  default_strategy: priority
  when_no_worker: reject
  queues:
    q: { strategy: capability, when_no_worker: shared_queue, requirements: { min_memory_gb: 2 } }
  tasks:
    t: { queue: q, strategy: queue, requirements: { min_memory_gb: 4, labels: [x] } }
"#,
        "wc.yaml",
    )
    .unwrap();
    let e = c.effective("t", None);
    assert_eq!(e.queue, "q");
    assert_eq!(e.strategy, Strategy::Queue, "task rule wins");
    assert_eq!(
        e.when_no_worker,
        NoWorkerPolicy::SharedQueue,
        "queue rule fills the gap"
    );
    assert_eq!(e.requirements.min_memory_gb.map(|m| m.0), Some(4.0));
    assert_eq!(e.requirements.labels, vec!["x".to_string()]);
    let e = c.effective("other", None);
    assert_eq!(e.queue, "celery");
    assert_eq!(e.strategy, Strategy::Priority);
    assert_eq!(e.when_no_worker, NoWorkerPolicy::Reject);
    // The job's own queue wins over the task rule's queue.
    assert_eq!(c.effective("t", Some("z")).queue, "z");
}

#[test]
fn empty_file_is_the_default_config() {
    let c = WorkerConfig::from_yaml_str("", "wc.yaml").unwrap();
    assert!(c.workers.is_empty());
    assert_eq!(c.routing.default_strategy, Strategy::Queue);
}

#[test]
fn unknown_profile_lists_the_known_ones() {
    let c = WorkerConfig::from_yaml_str(
        "profiles:\n  general: { queues: [a], concurrency: 2 }\n",
        "wc.yaml",
    )
    .unwrap();
    assert_eq!(c.profile("general", "wc.yaml").unwrap().concurrency.0, 2);
    let err = c.profile("gpu", "wc.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::UnknownProfile { .. }));
    assert!(err.to_string().contains("known: general"), "{err}");
}

#[test]
fn node_matching() {
    let c = WorkerConfig::from_yaml_str(
        "workers:\n  - {name: a, node: 'gpu@*'}\n  - {name: b, hostname: mac}\n  - {name: 'w@x'}\n  - {name: d, node: 'w[0-9]@*', hostname: h}\n",
        "wc.yaml",
    )
    .unwrap();
    let m = |i: usize, n: &str| c.workers[i].matches(n);
    assert!(m(0, "gpu@box") && !m(0, "cpu@box"));
    assert!(m(1, "anything@mac") && !m(1, "anything@mac2"));
    assert!(m(2, "w@x") && !m(2, "w@y"));
    assert!(m(3, "w7@h") && !m(3, "w7@g") && !m(3, "wx@h"));
}

/// Found by `bench/fuzz` (worker_config, a libFuzzer timeout): a worker entry whose name pattern has 50
/// `*`, matched against a node it does not describe, hung the coordinator's look-up (the glob matcher
/// backtracked exponentially). The fuzzer's input, byte for byte.
#[test]
fn a_name_pattern_with_many_stars_is_matched_at_once() {
    let yaml = "#1\n\nworkers:\n  # fi:\n  # filrts.\n- name: celts.\n- name: cele[:::::::::::upppppplrts.\n- name: c**************************************************ele[:::e::::::upppppplrts.\n- name: cele[:::::::::::upppppp";
    let cfg = WorkerConfig::from_yaml_str(yaml, "fuzz.yaml")
        .expect("the fuzzer's input is a valid config");
    assert_eq!(cfg.specs_for("celery@host").count(), 0);
    assert_eq!(
        cfg.specs_for(&format!("c{}ele[:::e::::::upppppplrts", "x".repeat(200)))
            .count(),
        0
    );
    assert_eq!(cfg.specs_for("celts.").count(), 1);
    // No `]` closes the `[`, so it is a literal `[`, as in Python's fnmatch.
    assert_eq!(cfg.specs_for("cxxele[:::e::::::upppppplrts.").count(), 1);
}
