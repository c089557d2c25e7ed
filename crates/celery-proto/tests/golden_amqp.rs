//! Golden tests of kombu's AMQP conventions (`celery_proto::kombu_amqp`) against captures of real Celery 5.7 on
//! RabbitMQ 3.10 (`../shared/fixtures/celery-wire-amqp/`): every captured publish (task messages, pidbox requests and
//! replies, events, rpc results) decodes from its AMQP content header to the message a kombu consumer saw, and
//! encoding that message back gives the same properties, the same typed headers in the same order, and the same
//! body; an idle worker's declarations (exchanges, queues, arguments) are the ones we make.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use celery_proto::TaskMessage;
use celery_proto::kombu_amqp::{
    self, AmqpProperties, DeliveryInfo, ExchangeKind, FieldTable, FieldValue, QueueDecl, QueueType,
    TaskQueueOptions,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/celery-wire-amqp")
}

/// Every `{message, wire_publish}` object in the JSON files of the four message sections, with its file name.
fn captured() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for sub in [
        "a-task-messages",
        "c-remote-control",
        "d-events",
        "e-rpc-results",
    ] {
        let dir = fixtures().join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fixtures missing at {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            walk(&v, &f, &mut out);
        }
    }
    assert!(out.len() > 50, "only {} captured messages found", out.len());
    out
}

fn walk(v: &Value, file: &Path, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            // Replies the requester consumed itself have no `message` (c11 has one caught by a raw queue).
            if m.get("message").is_some_and(Value::is_object) && m.contains_key("wire_publish") {
                let name = file.file_name().unwrap().to_string_lossy().into_owned();
                out.push((name, v.clone()));
            }
            m.values().for_each(|x| walk(x, file, out));
        }
        Value::Array(a) => a.iter().for_each(|x| walk(x, file, out)),
        _ => {}
    }
}

/// A typed field value as the fixture's decoder wrote it: `[tag, value]`.
fn typed(v: &Value) -> FieldValue {
    let tag = v[0].as_str().unwrap();
    let x = &v[1];
    match tag {
        "t" => FieldValue::Bool(x.as_bool().unwrap()),
        "b" | "B" | "s" | "u" | "I" => FieldValue::I32(x.as_i64().unwrap() as i32),
        "i" | "l" | "L" => FieldValue::I64(x.as_i64().unwrap()),
        "f" | "d" => FieldValue::F64(x.as_f64().unwrap()),
        "S" => FieldValue::Str(x.as_str().unwrap().to_string()),
        "T" => FieldValue::Timestamp(x.as_u64().unwrap()),
        "V" => FieldValue::Void,
        "A" => FieldValue::Array(x.as_array().unwrap().iter().map(typed).collect()),
        "F" => FieldValue::Table(typed_table(x)),
        other => panic!("unexpected field type {other}"),
    }
}

fn typed_table(v: &Value) -> FieldTable {
    FieldTable(
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, x)| (k.clone(), typed(x)))
            .collect(),
    )
}

/// The content-header properties as captured on the wire.
fn wire_properties(p: &Value) -> AmqpProperties {
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    let n = |k: &str| p.get(k).and_then(Value::as_u64).map(|v| v as u8);
    AmqpProperties {
        content_type: s("content_type"),
        content_encoding: s("content_encoding"),
        headers: p.get("headers").map(typed_table),
        delivery_mode: n("delivery_mode"),
        priority: n("priority"),
        correlation_id: s("correlation_id"),
        reply_to: s("reply_to"),
        expiration: s("expiration"),
        ..AmqpProperties::default()
    }
}

/// Tags and values equal, in order (py-amqp's `L` and RabbitMQ's `l` are both [`FieldValue::I64`]).
fn same_table(ours: &FieldTable, wire: &FieldTable, name: &str) {
    let keys = |t: &FieldTable| t.0.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(ours), keys(wire), "{name}: header order");
    for ((k, a), (_, b)) in ours.0.iter().zip(&wire.0) {
        assert_eq!(a, b, "{name}: header {k}");
        assert_eq!(a.type_tag(), b.type_tag(), "{name}: type of header {k}");
    }
}

#[test]
fn captured_messages_decode_and_encode_back_identically() {
    let mut tasks = 0;
    for (name, cap) in captured() {
        let wire = &cap["wire_publish"];
        let typed_props = &wire["content_header_decoded_typed"]["properties"];
        let props = wire_properties(typed_props);
        let seen = &cap["message"];
        if seen["headers"].get("x-death").is_some() {
            // Consumed after RabbitMQ dead-lettered it (native delayed delivery): the broker re-encoded the headers
            // (sorted, plus `x-death`), so what the consumer saw is not what was published.
            continue;
        }
        let body = B64.decode(seen["body_b64"].as_str().unwrap()).unwrap();
        let di = &seen["delivery_info"];
        let info = DeliveryInfo {
            exchange: di["exchange"].as_str().unwrap().to_string(),
            routing_key: di["routing_key"].as_str().unwrap().to_string(),
            redelivered: di["redelivered"].as_bool().unwrap(),
            tag: format!("1.{}", di["delivery_tag"]),
        };

        // Decoding: what kombu's consumer saw.
        let msg =
            kombu_amqp::message(&info, &props, &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            serde_json::to_string(&msg.headers).unwrap(),
            serde_json::to_string(&seen["headers"]).unwrap(),
            "{name}: headers"
        );
        assert_eq!(msg.body, body, "{name}: body");
        assert_eq!(msg.content_type, seen["content_type"].as_str().unwrap());
        assert_eq!(
            msg.content_encoding,
            seen["content_encoding"].as_str().unwrap()
        );
        assert_eq!(
            msg.priority as u64,
            seen["properties"]["priority"].as_u64().unwrap_or(0),
            "{name}: priority"
        );
        assert_eq!(
            (msg.exchange.as_str(), msg.routing_key.as_str()),
            (info.exchange.as_str(), info.routing_key.as_str())
        );
        assert_eq!(msg.delivery_tag, info.tag);
        for (k, v) in seen["properties"].as_object().unwrap() {
            assert_eq!(msg.properties.get(k), Some(v), "{name}: property {k}");
        }
        if msg.headers.contains_key("task") {
            let task = TaskMessage::from_message(&msg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                Some(&Value::String(task.id.clone())),
                msg.properties.get("correlation_id"),
                "{name}"
            );
            tasks += 1;
        }

        // Encoding back: the same publish.
        let args = &wire["method_args"];
        let exchange = args["exchange"].as_str().unwrap();
        let routing_key = args["routing_key"].as_str().unwrap();
        let back = kombu_amqp::publish(&kombu_amqp::envelope_of(&msg), exchange, routing_key);
        assert_eq!(
            (back.exchange.as_str(), back.routing_key.as_str()),
            (exchange, routing_key)
        );
        assert_eq!(back.body, body, "{name}: body");
        same_table(
            back.properties.headers.as_ref().unwrap(),
            props.headers.as_ref().unwrap(),
            &name,
        );
        let strip = |p: &AmqpProperties| AmqpProperties {
            headers: None,
            ..p.clone()
        };
        let mut want = strip(&props);
        if want.priority.is_none() {
            // `priority=None` passed explicitly (a07-priority-none): an envelope always carries a priority.
            assert_eq!(name, "a07-priority-none.json");
            want.priority = Some(0);
        }
        assert_eq!(strip(&back.properties), want, "{name}: properties");
    }
    assert!(tasks >= 30, "only {tasks} task messages");
}

#[test]
fn priorities_pass_through_unclamped() {
    let f = fixtures().join("a-task-messages/a07-priority-10.json");
    let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
    let props = wire_properties(&v["wire_publish"]["content_header_decoded_typed"]["properties"]);
    assert_eq!(props.priority, Some(10));
    let info = DeliveryInfo {
        exchange: String::new(),
        routing_key: "prio".into(),
        redelivered: false,
        tag: "1.1".into(),
    };
    let msg = kombu_amqp::message(&info, &props, b"[[], {}, {}]").unwrap();
    assert_eq!(
        msg.priority, 10,
        "RabbitMQ priorities are not Redis's 0-9 buckets"
    );
}

/// rabbitmqctl's rendering of queue arguments: `[{"x-expires",60000},{"x-queue-type","quorum"}]`.
fn render_args(t: &FieldTable) -> String {
    let parts: Vec<String> =
        t.0.iter()
            .map(|(k, v)| match v {
                FieldValue::Str(s) => format!("{{\"{k}\",\"{s}\"}}"),
                other => format!("{{\"{k}\",{}}}", other.to_json()),
            })
            .collect();
    format!("[{}]", parts.join(","))
}

fn rows(mode: &str, file: &str) -> Vec<Vec<String>> {
    let text =
        std::fs::read_to_string(fixtures().join("b-declarations").join(mode).join(file)).unwrap();
    let mut lines = text.lines().skip_while(|l| !l.starts_with("name\t"));
    lines.next();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn an_idle_workers_declarations_are_ours() {
    for (mode, opts) in [
        ("classic", TaskQueueOptions::default()),
        (
            "priority",
            TaskQueueOptions {
                max_priority: Some(10),
                queue_type: QueueType::Classic,
                ..TaskQueueOptions::default()
            },
        ),
        (
            "quorum",
            TaskQueueOptions {
                max_priority: None,
                queue_type: QueueType::Quorum,
                ..TaskQueueOptions::default()
            },
        ),
    ] {
        let mut checked = 0;
        // name type durable auto_delete exclusive arguments ...
        for row in rows(mode, "queues-extended.txt") {
            let name = row[0].as_str();
            if name.starts_with("celery_delayed_") {
                continue; // native delayed delivery: not implemented
            }
            let q: QueueDecl = if name.ends_with(".celery.pidbox") || name.starts_with("celeryev.")
            {
                kombu_amqp::bound_queue(name, Duration::from_secs(3600))
            } else {
                kombu_amqp::task_queue(name, &opts).1
            };
            let kind = if q.arguments.get("x-queue-type") == Some(&FieldValue::Str("quorum".into()))
            {
                "quorum"
            } else {
                "classic"
            };
            assert_eq!(row[1], kind, "{mode} {name}: type");
            assert_eq!(row[2], q.durable.to_string(), "{mode} {name}: durable");
            assert_eq!(
                row[3],
                q.auto_delete.to_string(),
                "{mode} {name}: auto_delete"
            );
            // Quorum queues show no exclusive column value.
            if kind == "classic" {
                assert_eq!(row[4], q.exclusive.to_string(), "{mode} {name}: exclusive");
            }
            assert_eq!(
                row[5],
                render_args(&q.arguments),
                "{mode} {name}: arguments"
            );
            checked += 1;
        }
        assert_eq!(checked, 5, "{mode}: celery, custom, dq2, pidbox, gossip");
        // name type durable auto_delete internal arguments
        for row in rows(mode, "exchanges-extended.txt") {
            let name = row[0].as_str();
            if name.is_empty() || name.starts_with("amq.") || name.starts_with("celery_delayed") {
                continue;
            }
            let ex = match name {
                "celery" | "custom" => kombu_amqp::task_queue(name, &opts).0,
                other => kombu_amqp::exchange(other, ExchangeKind::Direct),
            };
            assert_eq!(row[1], ex.kind.as_str(), "{mode} {name}: kind");
            assert_eq!(row[2], ex.durable.to_string(), "{mode} {name}: durable");
            assert_eq!(
                (row[3].as_str(), row[5].as_str()),
                ("false", "[]"),
                "{mode} {name}"
            );
        }
    }
    // The worker-direct binding: exchange C.dq2, routing key = node name.
    let (_, _, bind) = kombu_amqp::task_queue("capw@vm.dq2", &TaskQueueOptions::default());
    let bindings =
        std::fs::read_to_string(fixtures().join("b-declarations/classic/bindings.txt")).unwrap();
    let line = format!(
        "{}\texchange\t{}\tqueue\t{}\t[]",
        bind.exchange, bind.queue, bind.routing_key
    );
    assert!(bindings.lines().any(|l| l == line), "{line}");
}

#[test]
fn rpc_results_are_published_as_celery_publishes_them() {
    let dir = fixtures().join("e-rpc-results");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".json") || name.starts_with("e00") || name.starts_with("e90") {
            continue;
        }
        let cap: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let wire = &cap["wire_publish"];
        let props = wire_properties(&wire["content_header_decoded_typed"]["properties"]);
        let body = B64
            .decode(cap["message"]["body_b64"].as_str().unwrap())
            .unwrap();
        let task_id = cap["__capture__"]["task_id"].as_str().unwrap();
        let reply_to = cap["__capture__"]["client_reply_queue"].as_str().unwrap();
        let ours = kombu_amqp::rpc_result(task_id, reply_to, &body);
        let args = &wire["method_args"];
        assert_eq!(
            (ours.exchange.as_str(), ours.routing_key.as_str()),
            (
                args["exchange"].as_str().unwrap(),
                args["routing_key"].as_str().unwrap()
            ),
            "{name}"
        );
        assert_eq!(ours.properties, props, "{name}: properties");
        assert_eq!(ours.body, body, "{name}");
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} rpc results");

    // The client's reply queue, as `queues-extended.txt` lists it after the run.
    let text =
        std::fs::read_to_string(dir.join("e00-broker-after-workers/queues-extended.txt")).unwrap();
    let q = kombu_amqp::rpc_reply_queue("4ad1085e-2905-3bf1-945f-db7b6b3673ee");
    let line = text
        .lines()
        .find(|l| l.starts_with(&q.name) && l.split('\t').count() >= 6)
        .expect(
            "the reply queue is listed with type, durable, auto_delete, exclusive and arguments",
        );
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(
        (cols[2], cols[3], cols[4], cols[5]),
        (
            q.durable.to_string().as_str(),
            q.auto_delete.to_string().as_str(),
            q.exclusive.to_string().as_str(),
            render_args(&q.arguments).as_str()
        )
    );
}

/// The table rows after the header line starting with `first` in `b-declarations/<mode>/<file>`.
fn table_rows(mode: &str, file: &str, first: &str) -> Vec<Vec<String>> {
    let text =
        std::fs::read_to_string(fixtures().join("b-declarations").join(mode).join(file)).unwrap();
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{first}\t")));
    lines.next();
    lines
        .take_while(|l| !l.starts_with('$'))
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn native_delayed_delivery_is_declared_and_addressed_as_celery_does() {
    let opts = TaskQueueOptions {
        max_priority: None,
        queue_type: QueueType::Quorum,
        exchange_type: ExchangeKind::Topic,
    };
    assert!(opts.native_delayed_delivery());
    let t = kombu_amqp::delayed_delivery_topology();

    // Queues: every celery_delayed_N with its type, flags and arguments, as a worker left them.
    let listed = table_rows("quorum-topic", "queues-extended.txt", "name");
    let delayed: Vec<&Vec<String>> = listed
        .iter()
        .filter(|r| r[0].starts_with("celery_delayed_"))
        .collect();
    assert_eq!(delayed.len(), t.queues.len());
    for q in &t.queues {
        let row = delayed.iter().find(|r| r[0] == q.name).expect(&q.name);
        assert_eq!(row[1], "quorum", "{}", q.name);
        assert_eq!(
            (row[2].as_str(), row[3].as_str()),
            (
                q.durable.to_string().as_str(),
                q.auto_delete.to_string().as_str()
            )
        );
        assert_eq!(row[5], render_args(&q.arguments), "{}", q.name);
    }
    // Exchanges: the 28 levels and celery_delayed_delivery, durable topics.
    let ex = table_rows("quorum-topic", "exchanges-extended.txt", "name");
    for e in &t.exchanges {
        let row = ex.iter().find(|r| r[0] == e.name).expect(&e.name);
        assert_eq!(
            (row[1].as_str(), row[2].as_str()),
            (e.kind.as_str(), e.durable.to_string().as_str()),
            "{}",
            e.name
        );
    }
    assert_eq!(
        ex.iter()
            .filter(|r| r[0].starts_with("celery_delayed"))
            .count(),
        t.exchanges.len()
    );
    // Bindings: level queues, level-to-level exchange bindings, and the way back to `celery`.
    let bindings = table_rows("quorum-topic", "bindings.txt", "source_name");
    let has = |source: &str, dest: &str, kind: &str, key: &str| {
        bindings
            .iter()
            .any(|r| r[0] == source && r[2] == dest && r[3] == kind && r[4] == key)
    };
    for b in &t.queue_bindings {
        assert!(has(&b.exchange, &b.queue, "queue", &b.routing_key), "{b:?}");
    }
    for b in &t.exchange_bindings {
        assert!(
            has(&b.source, &b.destination, "exchange", &b.routing_key),
            "{b:?}"
        );
    }
    let (back, own) = kombu_amqp::delayed_return_bindings("celery");
    assert!(has(
        &back.source,
        &back.destination,
        "exchange",
        &back.routing_key
    ));
    assert!(has(&own.exchange, &own.queue, "queue", &own.routing_key));
    let (exchange, _, _) = kombu_amqp::task_queue("celery", &opts);
    assert_eq!(exchange.kind, ExchangeKind::Topic);

    // Publishing: the captured countdown messages went to celery_delayed_27 with the countdown's bits; a plain one
    // to its own topic exchange.
    for (file, countdown) in [
        (
            "a21-quorum-topic-countdown60.capture.delayed27.tap.json",
            60.0,
        ),
        ("a21-quorum-topic-countdown3.celery.json", 3.0),
        ("a21-quorum-topic-plain.celery.json", 0.0),
    ] {
        let cap: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("a-task-messages").join(file)).unwrap(),
        )
        .unwrap();
        let args = &cap["wire_publish"]["method_args"];
        let got = kombu_amqp::task_publish_target("celery", &opts, Some(countdown));
        assert_eq!(
            (got.0.as_str(), got.1.as_str()),
            (
                args["exchange"].as_str().unwrap(),
                args["routing_key"].as_str().unwrap()
            ),
            "{file}"
        );
    }
    // Without quorum queues, or on a direct exchange, countdowns are not the broker's business.
    let direct = TaskQueueOptions {
        exchange_type: ExchangeKind::Direct,
        ..opts
    };
    assert_eq!(
        kombu_amqp::task_publish_target("celery", &direct, Some(60.0)),
        (String::new(), "celery".to_string())
    );
    // A countdown measured just after its ETA was set (1.99 s for 2 s) counts as the whole seconds meant.
    assert_eq!(
        kombu_amqp::task_publish_target("celery", &opts, Some(1.99)).1,
        kombu_amqp::delayed_routing_key(2, "celery").unwrap()
    );
    assert_eq!(
        kombu_amqp::task_publish_target("celery", &opts, Some(0.4)),
        ("celery".to_string(), "celery".to_string()),
        "under half a second: published to the queue, the worker holds it"
    );
    assert_eq!(kombu_amqp::delayed_routing_key(0, "celery"), None);
    assert_eq!(kombu_amqp::delayed_routing_key(1 << 28, "celery"), None);
}
