//! What every transport must do, written once: each check drives a [`Transport`] or [`ResultBackend`] through the
//! calls the runtime and the control client make and asserts what comes back. The in-memory transport runs them in
//! its unit tests, the Redis transport against a real Redis (`crates/broker/tests/transport.rs`), and the AMQP
//! transport will run the same ones against RabbitMQ. Enabled by the `conformance` feature (tests only).
//!
//! Each check uses its own queue and exchange names (derived from `prefix`), so checks can share a broker.

use celery_proto::{Envelope, Message};
use serde_json::Map;
use std::time::Duration;

use crate::{Binding, ChordPart, Requeue, ResultBackend, Transport};

fn env(queue: &str, priority: u8, body: &str) -> Envelope {
    let mut e = Envelope::new(body.as_bytes().to_vec(), Map::new(), "", queue);
    e.priority = priority;
    e
}

fn body(m: &Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

/// Priority order (lower number first, first in first out within a priority), batches up to `max`, requeue to the
/// back, restore to the front with `redelivered`, ack for good, and a message never delivered twice at once.
pub async fn queues(t: &dyn Transport, prefix: &str) {
    let q = format!("{prefix}.queue");
    let qs = vec![q.clone()];
    t.declare_queue(&q).await.expect("declare");
    for (p, b) in [(9, "\"low\""), (0, "\"a\""), (0, "\"b\""), (0, "\"c\"")] {
        t.publish(&q, &env(&q, p, b)).await.expect("publish");
    }
    let got = t.consume(&qs, 2, Duration::ZERO).await.expect("consume");
    let bodies: Vec<String> = got
        .iter()
        .map(|d| body(d.message.as_ref().expect("decoded")))
        .collect();
    assert_eq!(
        bodies,
        ["\"a\"", "\"b\""],
        "priority then FIFO, at most max"
    );
    assert!(got.iter().all(|d| d.queue == q && d.tag.is_some()));
    let (a, b) = (got[0].tag.clone().unwrap(), got[1].tag.clone().unwrap());

    // b to the back of its priority: after c, still before the lower priority.
    assert!(t.requeue(&b, Requeue::Back).await.expect("requeue"));
    t.ack(&a).await.expect("ack");
    assert!(
        !t.requeue(&a, Requeue::Front).await.expect("requeue acked"),
        "an acked message is gone"
    );
    let next = t.consume(&qs, 1, Duration::ZERO).await.expect("consume");
    let m = next[0].message.as_ref().unwrap();
    assert_eq!(body(m), "\"c\"");
    assert!(!m.redelivered);
    let c = next[0].tag.clone().unwrap();

    // c restored to the front: delivered next, marked redelivered.
    assert!(t.requeue(&c, Requeue::Front).await.expect("restore"));
    let next = t.consume(&qs, 3, Duration::ZERO).await.expect("consume");
    let bodies: Vec<(String, bool)> = next
        .iter()
        .map(|d| {
            let m = d.message.as_ref().unwrap();
            (body(m), m.redelivered)
        })
        .collect();
    assert_eq!(
        bodies,
        [
            ("\"c\"".to_string(), true),
            ("\"b\"".to_string(), true),
            ("\"low\"".to_string(), false)
        ]
    );
    for d in &next {
        t.ack(d.tag.as_ref().unwrap()).await.expect("ack");
    }
    assert!(
        t.consume(&qs, 1, Duration::ZERO)
            .await
            .expect("consume")
            .is_empty()
    );
}

/// An idle consume waits for a publish (and gives up after its wait), and queues are served in the order given.
pub async fn idle_wait_and_queue_order(t: &dyn Transport, prefix: &str) {
    let (q1, q2) = (format!("{prefix}.one"), format!("{prefix}.two"));
    let qs = vec![q1.clone(), q2.clone()];
    let empty = t
        .consume(&qs, 4, Duration::from_millis(200))
        .await
        .expect("consume");
    assert!(empty.is_empty());
    t.publish(&q2, &env(&q2, 0, "2")).await.expect("publish");
    t.publish(&q1, &env(&q1, 0, "1")).await.expect("publish");
    let got = t
        .consume(&qs, 4, Duration::from_secs(2))
        .await
        .expect("consume");
    let queues: Vec<&str> = got.iter().map(|d| d.queue.as_str()).collect();
    assert_eq!(
        queues,
        [q1.as_str(), q2.as_str()],
        "queues in the order asked"
    );
    for d in &got {
        t.ack(d.tag.as_ref().unwrap()).await.expect("ack");
    }
}

/// Broadcasts reach subscribers whose binding matches; direct sends reach bound mailbox queues only; a pop takes one
/// message without holding it; unbind removes the mailbox.
pub async fn fanout_and_mailboxes(t: &dyn Transport, prefix: &str) {
    let exchange = format!("{prefix}.ev");
    let all = Binding::new(
        &exchange,
        "#",
        &format!("{prefix}.all"),
        Duration::from_secs(60),
    );
    let mut sub = t.subscribe(&all).await.expect("subscribe");
    t.broadcast(&exchange, "worker.heartbeat", &env("", 0, "{}"))
        .await
        .expect("broadcast");
    let got = tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .expect("a broadcast arrives")
        .expect("subscription open");
    assert_eq!(got.routing_key, "worker.heartbeat");
    assert!(got.message.is_ok());

    let replies = format!("{prefix}.reply");
    let mailbox = Binding::new(
        &replies,
        "oid-1",
        &format!("oid-1.{prefix}"),
        Duration::from_secs(60),
    );
    let e = env("", 0, "{\"w@h\": {\"ok\": \"pong\"}}");
    assert_eq!(
        t.send_direct(&replies, "oid-1", &e).await.expect("send"),
        0,
        "nobody bound yet"
    );
    t.bind(&mailbox).await.expect("bind");
    assert_eq!(
        t.send_direct(&replies, "oid-2", &e).await.expect("send"),
        0,
        "other routing key"
    );
    assert_eq!(t.send_direct(&replies, "oid-1", &e).await.expect("send"), 1);
    let popped = t
        .pop(&mailbox.queue, Duration::from_secs(1))
        .await
        .expect("pop")
        .expect("a reply");
    assert_eq!(
        body(popped.message.as_ref().unwrap()),
        "{\"w@h\": {\"ok\": \"pong\"}}"
    );
    assert!(
        t.pop(&mailbox.queue, Duration::from_millis(50))
            .await
            .expect("pop")
            .is_none()
    );
    t.unbind(&mailbox).await.expect("unbind");
    assert_eq!(
        t.send_direct(&replies, "oid-1", &e).await.expect("send"),
        0,
        "unbound"
    );
}

/// Dead letters are kept under their name.
pub async fn dead_letters(t: &dyn Transport, prefix: &str) {
    t.dead_letter(&format!("{prefix}.dead"), br#"{"reason": "test"}"#)
        .await
        .expect("dead letter");
}

/// Results: stored, read back, announced to a waiter; SUCCESS is never overwritten; a chord join claims once.
pub async fn results(b: &dyn ResultBackend, prefix: &str) {
    let id = format!("{prefix}-task");
    assert!(b.get(&id).await.expect("get").is_none());
    assert!(
        b.store(&id, br#"{"status": "STARTED"}"#, 60)
            .await
            .expect("store")
    );
    assert!(
        b.store(&id, br#"{"status": "SUCCESS", "result": 1}"#, 60)
            .await
            .expect("store")
    );
    assert!(
        !b.store(&id, br#"{"status": "FAILURE"}"#, 60)
            .await
            .expect("store"),
        "SUCCESS stays"
    );
    let got = b
        .wait(&id, Duration::from_secs(1))
        .await
        .expect("wait")
        .expect("meta");
    assert!(String::from_utf8_lossy(&got).contains("SUCCESS"));
    assert!(
        b.wait(&format!("{prefix}-none"), Duration::from_millis(100))
            .await
            .expect("wait")
            .is_none()
    );
}

/// A chord of `size` parts: only the last join claims it, results come back in `group_index` order.
/// `prepare` tells the backend the chord's size when it learns it from elsewhere (the memory backend).
pub async fn chords(b: &dyn ResultBackend, prefix: &str, size_known: impl FnOnce(&str, usize)) {
    let gid = format!("{prefix}-group");
    size_known(&gid, 2);
    let part = |i: i64, tid: &'static str, value: &'static [u8]| ChordPart {
        group_id: "",
        task_id: tid,
        value,
        group_index: Some(i),
        expires_secs: 60,
        token: "tok",
    };
    let second = ChordPart {
        group_id: &gid,
        ..part(1, "t2", br#"[1, "t2", "SUCCESS", 2]"#)
    };
    let first = ChordPart {
        group_id: &gid,
        ..part(0, "t1", br#"[1, "t1", "SUCCESS", 1]"#)
    };
    assert!(
        !b.chord_join(second).await.expect("join"),
        "not complete yet"
    );
    assert!(
        b.chord_join(first).await.expect("join"),
        "the last part claims"
    );
    let parts = b.chord_results(&gid).await.expect("results");
    assert_eq!(parts.len(), 2);
    assert!(
        String::from_utf8_lossy(&parts[0]).contains("t1"),
        "group_index order"
    );
    b.chord_done(&gid, "tok", 60).await.expect("done");
}
