//! `allowed_tasks`: task-name allow-lists per queue (and one default for every queue), their validation with line
//! and column, and which list governs a job's queue.

use routing::WorkerConfig;

const CONFIG: &str = r#"
routing:
  default_queue: celery
  allowed_tasks: ["celeriac.*", "cowrieprocessor.workers.*"]
  queues:
    longtail:
      strategy: priority
      allowed_tasks: [cowrieprocessor.workers.longtail_analysis]
    closed: { allowed_tasks: [] }
    open: { strategy: queue }
  tasks:
    cowrieprocessor.workers.longtail_analysis: { queue: longtail }
"#;

fn config() -> WorkerConfig {
    WorkerConfig::from_yaml_str(CONFIG, "wc.yaml").expect("valid config")
}

#[track_caller]
fn check_err(yaml: &str, line: usize, column: usize, needle: &str) {
    let err = WorkerConfig::from_yaml_str(yaml, "wc.yaml").expect_err("must be refused");
    let text = err.to_string();
    assert_eq!(err.position(), Some((line, column)), "position of: {text}");
    assert!(text.contains(needle), "{text:?} should mention {needle:?}");
}

#[test]
fn the_default_list_governs_queues_without_their_own() {
    let c = config();
    assert_eq!(c.check_task_allowed("celeriac.ping", "celery"), Ok(()));
    assert_eq!(
        c.check_task_allowed("cowrieprocessor.workers.botnet_detection", "open"),
        Ok(())
    );
    // Any queue the config does not name, worker-direct ones included.
    assert_eq!(
        c.check_task_allowed("celeriac.add", "elsewhere@h.dq2"),
        Ok(())
    );
    let err = c
        .check_task_allowed("os.system", "celery")
        .expect_err("not on the default list");
    assert_eq!(
        err,
        "routing.allowed_tasks allows celeriac.*, cowrieprocessor.workers.*"
    );
    // A glob matches the whole name, not a prefix of it.
    assert!(c.check_task_allowed("xceleriac.ping", "celery").is_err());
}

#[test]
fn a_queue_list_replaces_the_default_and_an_empty_one_closes_the_queue() {
    let c = config();
    assert_eq!(
        c.check_task_allowed("cowrieprocessor.workers.longtail_analysis", "longtail"),
        Ok(())
    );
    let err = c
        .check_task_allowed("celeriac.ping", "longtail")
        .expect_err("the queue's own list does not name it");
    assert_eq!(
        err,
        "routing.queues.longtail.allowed_tasks allows cowrieprocessor.workers.longtail_analysis"
    );
    let err = c
        .check_task_allowed("celeriac.ping", "closed")
        .expect_err("an empty list allows nothing");
    assert_eq!(err, "routing.queues.closed.allowed_tasks allows no task");
}

#[test]
fn without_any_list_every_task_is_allowed() {
    let c = WorkerConfig::from_yaml_str("routing: { default_queue: celery }\n", "wc.yaml").unwrap();
    assert!(c.allowed_tasks("celery").is_none());
    assert_eq!(c.check_task_allowed("anything.at.all", "celery"), Ok(()));
}

#[test]
fn bad_lists_are_refused_with_line_and_column() {
    check_err(
        "routing:\n  allowed_tasks: [\"celeriac.*\", \"\"]\n",
        2,
        33,
        "empty name",
    );
    check_err(
        "routing:\n  queues:\n    q:\n      allowed_tasks: [\"a b\"]\n",
        4,
        23,
        "contains whitespace",
    );
    check_err(
        "routing:\n  allowed_tasks: celeriac.*\n",
        2,
        18,
        "invalid type",
    );
    // A check across the map's entries points at the map (its first entry) and names the rule.
    check_err(
        "routing:\n  tasks:\n    t: { queue: q }\n    u: { allowed_tasks: [x] }\n",
        3,
        5,
        "task rule \"u\" has `allowed_tasks`: allow-lists belong on a queue rule",
    );
}

#[test]
fn the_shipped_worker_config_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../worker-config.yaml");
    let c = WorkerConfig::load(&path).expect("the example config is valid");
    for task in [
        "cowrieprocessor.workers.longtail_analysis",
        "cowrieprocessor.workers.snowshoe_detection",
        "cowrieprocessor.workers.botnet_detection",
    ] {
        let queue = c.effective(task, None).queue;
        assert_eq!(
            c.check_task_allowed(task, &queue),
            Ok(()),
            "{task} on {queue}"
        );
    }
}
