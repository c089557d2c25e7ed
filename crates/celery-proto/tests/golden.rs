//! Golden tests against the bytes real Celery 5.7 / kombu 5.7 wrote (`../shared/fixtures/celery-wire/`):
//! everything decodes, and what we encode from the decoded values is byte-identical to what Python wrote.

use celery_proto::command::ControlCommand;
use celery_proto::control::{ControlRequest, reply_envelope};
use celery_proto::event::{event_envelope, events_of};
use celery_proto::json::to_py_json;
use celery_proto::{Message, ResultMeta, TaskMessage, TaskRequest};
use serde_json::Value;
use std::path::PathBuf;

fn fixtures(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/celery-wire")
        .join(sub)
}

fn raws(sub: &str, filter: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
    let dir = fixtures(sub);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixtures missing at {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "raw"))
        .filter(|p| filter(&p.file_name().unwrap().to_string_lossy()))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no .raw fixtures in {}", dir.display());
    out
}

/// Rebuild a TaskRequest from a decoded Python message and check our encoding is byte-identical.
#[test]
fn task_messages_round_trip_byte_identical() {
    for (name, raw) in raws("a-task-messages", |_| true) {
        let msg = Message::decode(&raw, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        let task = TaskMessage::from_message(&msg).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(task.protocol, 2, "{name}");
        let mut req = TaskRequest::new(task.name.clone());
        req.id = task.id.clone();
        req.args = task.args.clone();
        req.kwargs = task.kwargs.clone();
        req.queue = msg.routing_key.clone();
        req.priority = msg.priority;
        req.eta = task.eta;
        req.expires = task.expires;
        req.retries = task.retries;
        let tl = task.headers["timelimit"].as_array().unwrap();
        req.time_limit = (
            Some(tl[0].clone()).filter(|v| !v.is_null()),
            Some(tl[1].clone()).filter(|v| !v.is_null()),
        );
        req.root_id = task.root_id.clone();
        req.parent_id = task.parent_id.clone();
        req.group = task.group.clone();
        req.group_index = task.group_index;
        req.shadow = task.shadow.clone();
        req.ignore_result = task.ignore_result;
        req.origin = task.origin.clone().unwrap();
        req.reply_to = msg.properties["reply_to"].as_str().unwrap().to_string();
        req.embed = task.embed.clone();
        for (k, v) in &task.headers {
            if !req.headers().contains_key(k) {
                req.extra_headers.insert(k.clone(), v.clone());
            }
        }
        let mut env = req.envelope();
        env.delivery_tag = msg.delivery_tag.clone();
        env.expiration_ms = msg
            .properties
            .get("expiration")
            .and_then(Value::as_str)
            .map(|s| s.parse().unwrap());
        let ours = env.encode();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&raw),
            "{name}"
        );
    }
}

#[test]
fn embedded_workflows_decode() {
    let (_, raw) = raws("a-task-messages", |n| n.starts_with("a07-chain")).remove(0);
    let task = TaskMessage::from_message(&Message::decode(&raw, true).unwrap()).unwrap();
    // The chain is stored reversed: the next task is the last element.
    let next = celery_proto::Signature::from_value(task.embed.chain.last().unwrap()).unwrap();
    assert_eq!(next.args, vec![serde_json::json!(4)]);
    let (_, raw) = raws("a-task-messages", |n| n.starts_with("a06-send_task-link")).remove(0);
    let task = TaskMessage::from_message(&Message::decode(&raw, true).unwrap()).unwrap();
    assert_eq!(task.embed.callbacks.len(), 1);
    assert_eq!(task.embed.errbacks[0]["immutable"], serde_json::json!(true));
}

#[test]
fn result_metas_round_trip_byte_identical() {
    for (name, raw) in raws("b-result-backend", |n| {
        !n.contains("groupresult") && !n.starts_with("b2")
    }) {
        let meta = ResultMeta::decode(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&meta.encode()),
            String::from_utf8_lossy(&raw),
            "{name}"
        );
    }
}

#[test]
fn failure_meta_carries_the_python_exception() {
    let (_, raw) = raws("b-result-backend", |n| n.starts_with("b0-02-failure")).remove(0);
    let exc = ResultMeta::decode(&raw).unwrap().exception().unwrap();
    assert_eq!(
        (
            exc.exc_module.as_str(),
            exc.exc_type.as_str(),
            exc.message()
        ),
        ("builtins", "ValueError", "boom".into())
    );
}

#[test]
fn pidbox_requests_and_replies() {
    let requests = raws("c-remote-control", |n| n.ends_with(".request.raw"));
    assert!(requests.len() >= 14);
    for (name, raw) in requests {
        let msg = Message::decode(&raw, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        let req = ControlRequest::from_message(&msg).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            req.ticket.is_some() && req.reply_to.is_some(),
            "{name}: CLI requests want replies"
        );
        // Re-encode with the same values: byte-identical to the Python client's request.
        let mut env = req.envelope(req.clock.unwrap(), msg.headers["expires"].as_f64().unwrap());
        env.delivery_tag = msg.delivery_tag.clone();
        assert_eq!(
            String::from_utf8_lossy(&env.encode()),
            String::from_utf8_lossy(&raw),
            "{name}"
        );
    }
    for (name, raw) in raws("c-remote-control", |n| n.ends_with(".reply.raw")) {
        let msg = Message::decode(&raw, true).unwrap();
        let body = msg.json_body().unwrap();
        let (node, value) = body.as_object().unwrap().iter().next().unwrap();
        let mut env = reply_envelope(
            node,
            value.clone(),
            msg.headers["ticket"].as_str().unwrap(),
            &msg.routing_key,
            msg.headers["clock"].as_u64().unwrap(),
        );
        env.delivery_tag = msg.delivery_tag.clone();
        assert_eq!(
            String::from_utf8_lossy(&env.encode()),
            String::from_utf8_lossy(&raw),
            "{name}"
        );
    }
}

/// Every captured `celery inspect` / `celery control` request parses to a command, and the request rebuilt from
/// that command's `method()` and `arguments()` is byte-identical to what Celery's CLI published.
#[test]
fn pidbox_requests_are_commands_that_resend_the_same_bytes() {
    for (name, raw) in raws("c-remote-control", |n| n.ends_with(".request.raw")) {
        let msg = Message::decode(&raw, true).unwrap();
        let req = ControlRequest::from_message(&msg).unwrap();
        let cmd = ControlCommand::parse(&req.method, &req.arguments)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(cmd.replies(), "{name}");
        let mut again = ControlRequest::new(cmd.method(), cmd.arguments());
        again.destination = req.destination.clone();
        again.ticket = req.ticket.clone();
        again.reply_to = req.reply_to.clone();
        let mut env = again.envelope(req.clock.unwrap(), msg.headers["expires"].as_f64().unwrap());
        env.delivery_tag = msg.delivery_tag.clone();
        assert_eq!(
            String::from_utf8_lossy(&env.encode()),
            String::from_utf8_lossy(&raw),
            "{name}"
        );
    }
}

#[test]
fn events_round_trip_byte_identical() {
    for (name, raw) in raws("d-events", |n| n.starts_with("event-")) {
        let msg = Message::decode(&raw, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        let body = msg.json_body().unwrap();
        let events = events_of(body.clone());
        assert!(!events.is_empty(), "{name}");
        for ev in &events {
            for key in ["hostname", "timestamp", "type", "clock", "pid"] {
                assert!(ev.contains_key(key), "{name}: event without {key}");
            }
        }
        let mut env = event_envelope(
            msg.headers["hostname"].as_str().unwrap(),
            &msg.routing_key,
            &body,
        );
        env.delivery_tag = msg.delivery_tag.clone();
        assert_eq!(
            String::from_utf8_lossy(&env.encode()),
            String::from_utf8_lossy(&raw),
            "{name}"
        );
        // The body bytes too: Python's json.dumps of the event(s).
        assert_eq!(to_py_json(&body), msg.body, "{name}");
    }
}
