//! Data-driven routing tests: each case is a config, a snapshot of workers, a job, and the expected decision
//! rendered as text (outcome line, then one line per candidate in the order considered).

use routing::config::{Accelerator, Amount, Capabilities, Concurrency, Requirements};
use routing::{Decision, Job, LiveWorker, WorkerConfig, decide};

const BASE: &str = r#"
workers:
  - name: big
    node: "big@*"
    queues:
      - { name: celery, priority: 90 }
      - { name: ml, priority: 50 }
    capabilities: { cpu_cores: 16, memory_gb: 64, accelerator: cuda, gpu_memory_gb: 24, labels: [gpu, ssd] }
  - name: mid
    node: "mid@*"
    queues:
      - { name: celery, priority: 50 }
      - { name: ml, priority: 50 }
    capabilities: { cpu_cores: 8, memory_gb: 16, labels: [ssd] }
  - name: small
    node: "small@*"
    queues:
      - { name: celery, priority: 10 }
    capabilities: { cpu_cores: 2, memory_gb: 4 }
  - name: mac
    hostname: mac
    queues:
      - { name: enrich, priority: 70, exclusive: true }
      - { name: celery, priority: 95 }
routing:
  default_strategy: priority
  queues:
    ml: { strategy: capability }
    shared: { strategy: queue }
    strict: { when_no_worker: reject }
    spill: { when_no_worker: shared_queue }
  tasks:
    t.ml: { queue: ml, requirements: { min_memory_gb: 8 } }
"#;

fn cfg(extra: &str) -> WorkerConfig {
    WorkerConfig::from_yaml_str(&format!("{BASE}{extra}"), "test.yaml").expect("test config")
}

/// A live, idle worker with 2 slots.
fn up(node: &str) -> LiveWorker {
    LiveWorker {
        node: node.to_string(),
        alive: true,
        seen_ago: Some(0.5),
        active: 0,
        concurrency: Some(2),
        ..LiveWorker::default()
    }
}

fn busy(node: &str, active: u32) -> LiveWorker {
    LiveWorker { active, ..up(node) }
}

fn down(node: &str) -> LiveWorker {
    LiveWorker {
        alive: false,
        seen_ago: Some(9.0),
        ..up(node)
    }
}

fn job(task: &str, queue: Option<&str>) -> Job {
    Job {
        task: task.to_string(),
        queue: queue.map(str::to_string),
        requirements: Requirements::default(),
    }
}

fn render(d: &Decision) -> String {
    let mut s = format!("{} {}", d.strategy.as_str(), d.outcome.kind());
    match &d.outcome {
        routing::Outcome::Routed { queue, .. }
        | routing::Outcome::QueuedForPreferred { queue, .. }
        | routing::Outcome::SharedQueue { queue } => s.push_str(&format!(" -> {queue}")),
        routing::Outcome::Rejected { reason } => s.push_str(&format!(": {reason}")),
    }
    for c in &d.candidates {
        s.push_str(&format!("\n  {} p={}", c.node, c.priority));
        if c.chosen {
            s.push_str(" CHOSEN");
        }
        if let Some(why) = &c.skipped {
            s.push_str(&format!(" skip: {why}"));
        }
    }
    s
}

#[track_caller]
fn check(config: &WorkerConfig, workers: &[LiveWorker], job: &Job, expect: &str) {
    let d = decide(config, workers, job);
    let got = render(&d);
    let expect = expect.trim();
    assert_eq!(
        got, expect,
        "\n--- got ---\n{got}\n--- expected ---\n{expect}\n--- notes ---\n{:#?}",
        d.notes
    );
    assert!(!d.notes.is_empty(), "every decision explains itself");
}

#[test]
fn queue_strategy_publishes_to_the_shared_queue() {
    check(
        &cfg(""),
        &[up("big@h")],
        &job("t.x", Some("shared")),
        "queue shared_queue -> shared",
    );
}

#[test]
fn preference_order_picks_the_highest_priority_live_worker() {
    // mac has the highest priority for celery but is reserved for enrich.
    check(
        &cfg(""),
        &[up("small@h"), up("mid@h"), up("big@h"), up("w@mac")],
        &job("t.x", None),
        r#"
priority routed -> big@h.dq2
  w@mac p=95 skip: reserved exclusively for queue "enrich"
  big@h p=90 CHOSEN
  mid@h p=50
  small@h p=10"#,
    );
}

#[test]
fn preferred_offline_falls_back_down_the_list() {
    check(
        &cfg(""),
        &[down("big@h"), up("mid@h"), up("small@h")],
        &job("t.x", Some("celery")),
        r#"
priority routed -> mid@h.dq2
  *@mac p=95 skip: reserved exclusively for queue "enrich"
  big@h p=90 skip: offline: last seen 9.0s ago
  mid@h p=50 CHOSEN
  small@h p=10"#,
    );
}

#[test]
fn preferred_overloaded_falls_back() {
    check(
        &cfg(""),
        &[busy("big@h", 2), up("mid@h")],
        &job("t.x", None),
        r#"
priority routed -> mid@h.dq2
  *@mac p=95 skip: reserved exclusively for queue "enrich"
  big@h p=90 skip: overloaded: load 1.00 >= threshold 1.00
  mid@h p=50 CHOSEN
  small@* p=10 skip: not seen: no events, inspect reply or registration"#,
    );
}

#[test]
fn all_busy_queues_for_the_preferred() {
    check(
        &cfg(""),
        &[busy("mid@h", 2), busy("big@h", 3), busy("small@h", 2)],
        &job("t.x", None),
        r#"
priority queued_for_preferred -> big@h.dq2
  *@mac p=95 skip: reserved exclusively for queue "enrich"
  big@h p=90 CHOSEN skip: overloaded: load 1.50 >= threshold 1.00
  mid@h p=50 skip: overloaded: load 1.00 >= threshold 1.00
  small@h p=10 skip: overloaded: load 1.00 >= threshold 1.00"#,
    );
}

#[test]
fn all_busy_with_reject_policy_rejects_with_a_reason() {
    check(
        &cfg(""),
        &[busy("big@h", 2)],
        &Job {
            queue: Some("strict".into()),
            ..job("t.x", None)
        },
        r#"priority rejected: no live worker qualifies for queue "strict""#,
    );
}

#[test]
fn nobody_live_with_shared_queue_policy_spills_to_the_shared_queue() {
    check(
        &cfg(""),
        &[],
        &job("t.x", Some("spill")),
        "priority shared_queue -> spill",
    );
}

#[test]
fn nobody_live_with_queue_for_preferred_does_not_park_on_a_dead_worker() {
    check(
        &cfg(""),
        &[down("big@h"), down("mid@h")],
        &job("t.x", None),
        r#"
priority shared_queue -> celery
  *@mac p=95 skip: reserved exclusively for queue "enrich"
  big@h p=90 skip: offline: last seen 9.0s ago
  mid@h p=50 skip: offline: last seen 9.0s ago
  small@* p=10 skip: not seen: no events, inspect reply or registration"#,
    );
}

#[test]
fn exclusive_queue_goes_only_to_its_owner() {
    // A live non-config worker consuming enrich is refused: the queue belongs to mac.
    let other = LiveWorker {
        queues: vec!["enrich".into()],
        ..up("other@h")
    };
    check(
        &cfg(""),
        &[other.clone(), up("w@mac")],
        &job("t.x", Some("enrich")),
        r#"
priority routed -> w@mac.dq2
  w@mac p=70 CHOSEN
  other@h p=0 skip: queue "enrich" is exclusive to mac"#,
    );
    // With the owner busy, the job waits for it rather than going elsewhere.
    check(
        &cfg(""),
        &[other, busy("w@mac", 2)],
        &job("t.x", Some("enrich")),
        r#"
priority queued_for_preferred -> w@mac.dq2
  w@mac p=70 CHOSEN skip: overloaded: load 1.00 >= threshold 1.00
  other@h p=0 skip: queue "enrich" is exclusive to mac"#,
    );
}

#[test]
fn ties_break_by_load_then_node_name() {
    let c = cfg("");
    // big and mid both have priority 50 for ml (the priority strategy forced for the queue).
    let jb = job("t.y", Some("ml"));
    let c2 = WorkerConfig::from_yaml_str(
        &BASE.replace("ml: { strategy: capability }", "ml: { strategy: priority }"),
        "t",
    )
    .unwrap();
    check(
        &c2,
        &[busy("mid@h", 1), up("big@h")],
        &jb,
        r#"
priority routed -> big@h.dq2
  big@h p=50 CHOSEN
  mid@h p=50"#,
    );
    check(
        &c2,
        &[up("mid@h"), up("big@h")],
        &jb,
        r#"
priority routed -> big@h.dq2
  big@h p=50 CHOSEN
  mid@h p=50"#,
    );
    // Two live nodes of one config entry: least loaded first.
    check(
        &c,
        &[busy("big@a", 1), up("big@b"), up("mid@h")],
        &job("t.x", None),
        r#"
priority routed -> big@b.dq2
  *@mac p=95 skip: reserved exclusively for queue "enrich"
  big@b p=90 CHOSEN
  big@a p=90
  mid@h p=50
  small@* p=10 skip: not seen: no events, inspect reply or registration"#,
    );
}

#[test]
fn capability_picks_the_best_score_among_those_that_meet_the_requirements() {
    let mut jb = job("t.ml", None);
    jb.requirements.labels = vec!["ssd".into()];
    check(
        &cfg(""),
        &[up("big@h"), up("mid@h")],
        &jb,
        r#"
capability routed -> mid@h.dq2
  big@h p=50
  mid@h p=50 CHOSEN"#,
    );
    // Accelerator requirement: only big has cuda.
    jb.requirements.accelerator = vec![Accelerator::Cuda, Accelerator::Rocm];
    check(
        &cfg(""),
        &[busy("big@h", 1), up("mid@h")],
        &jb,
        r#"
capability routed -> big@h.dq2
  mid@h p=50 skip: needs accelerator cuda or rocm, has none
  big@h p=50 CHOSEN"#,
    );
}

#[test]
fn capability_prefers_free_capacity() {
    check(
        &cfg(""),
        &[busy("big@h", 1), up("mid@h")],
        &job("t.ml", None),
        r#"
capability routed -> mid@h.dq2
  mid@h p=50 CHOSEN
  big@h p=50"#,
    );
}

#[test]
fn requirements_that_match_nothing_are_rejected() {
    let mut jb = job("t.ml", None);
    jb.requirements.min_memory_gb = Some(Amount(128.0));
    check(
        &cfg(""),
        &[up("big@h"), up("mid@h")],
        &jb,
        r#"
capability rejected: no known worker meets the requirements of queue "ml"
  big@h p=50 skip: needs 128 GB memory, has 64
  mid@h p=50 skip: needs 128 GB memory, has 16"#,
    );
    // Unknown capabilities do not satisfy a requirement.
    let mut jb = job("t.x", None);
    jb.requirements.min_cpu_cores = Some(Concurrency(1));
    let c = WorkerConfig::from_yaml_str(
        "workers: [{name: bare, node: 'bare@*', queues: [{name: celery}]}]\nrouting: {default_strategy: priority}",
        "t",
    )
    .unwrap();
    check(
        &c,
        &[up("bare@h")],
        &jb,
        r#"
priority rejected: no known worker meets the requirements of queue "celery"
  bare@h p=0 skip: needs 1 cores, cores unknown"#,
    );
}

#[test]
fn task_rule_requirements_apply_and_merge_with_the_job() {
    // t.ml requires 8 GB: small is not in ml anyway; mid (16) and big (64) pass; the job adds gpu.
    let mut jb = job("t.ml", None);
    jb.requirements.labels = vec!["gpu".into()];
    check(
        &cfg(""),
        &[up("mid@h"), busy("big@h", 1)],
        &jb,
        r#"
capability routed -> big@h.dq2
  mid@h p=50 skip: needs label "gpu"
  big@h p=50 CHOSEN"#,
    );
}

#[test]
fn registered_capabilities_fill_gaps_and_unconfigured_workers_are_seen() {
    let reg = LiveWorker {
        queues: vec!["ml".into()],
        registered: true,
        detected: Capabilities {
            memory_gb: Some(Amount(256.0)),
            cpu_cores: Some(Concurrency(64)),
            ..Capabilities::default()
        },
        ..up("fresh@h")
    };
    let mut jb = job("t.ml", None);
    jb.requirements.min_memory_gb = Some(Amount(100.0));
    check(
        &cfg(""),
        &[up("big@h"), reg],
        &jb,
        r#"
capability routed -> fresh@h.dq2
  big@h p=50 skip: needs 100 GB memory, has 64
  mid@* p=50 skip: needs 100 GB memory, has 16
  fresh@h p=0 CHOSEN"#,
    );
}

#[test]
fn require_registration_refuses_unregistered_workers() {
    let c = WorkerConfig::from_yaml_str(
        &BASE.replace(
            "  default_strategy: priority",
            "  default_strategy: priority\n  require_registration: true",
        ),
        "t",
    )
    .unwrap();
    let reg = LiveWorker {
        registered: true,
        ..up("mid@h")
    };
    check(
        &c,
        &[up("big@h"), reg],
        &job("t.x", None),
        r#"
priority routed -> mid@h.dq2
  *@mac p=95 skip: reserved exclusively for queue "enrich"
  big@h p=90 skip: not registered (routing.require_registration)
  mid@h p=50 CHOSEN
  small@* p=10 skip: not seen: no events, inspect reply or registration"#,
    );
}

#[test]
fn overload_from_loadavg_when_slots_are_unknown() {
    let w = LiveWorker {
        concurrency: None,
        loadavg: Some(20.0),
        ..up("big@h")
    };
    check(
        &cfg(""),
        &[w, up("mid@h")],
        &job("t.x", None),
        r#"
priority routed -> mid@h.dq2
  *@mac p=95 skip: reserved exclusively for queue "enrich"
  big@h p=90 skip: overloaded: load 1.25 >= threshold 1.00
  mid@h p=50 CHOSEN
  small@* p=10 skip: not seen: no events, inspect reply or registration"#,
    );
}

#[test]
fn the_shipped_worker_config_parses_and_routes_longtail_by_priority() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../worker-config.yaml");
    let c = WorkerConfig::load(std::path::Path::new(path)).expect("worker-config.yaml is valid");
    for p in ["general", "ml_accelerated", "io_bound"] {
        assert!(c.profiles.contains_key(p), "profile {p}");
    }
    check(
        &c,
        &[up("celery@storage1"), up("ml@ws")],
        &job("cowrieprocessor.workers.longtail_analysis", None),
        r#"
priority routed -> celery@storage1.dq2
  celery@storage1 p=80 CHOSEN
  ml@ws p=40"#,
    );
    let d = decide(
        &c,
        &[up("celery@storage1")],
        &job("cowrieprocessor.workers.botnet_detection", None),
    );
    assert_eq!(d.outcome.kind(), "rejected", "{d:#?}");
}
