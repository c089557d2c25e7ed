//! What every transport must do, written once: each check drives a [`Transport`] or [`ResultBackend`] through the
//! calls the runtime and the control client make and asserts what comes back. The in-memory transport runs them in
//! its unit tests, the Redis transport against a real Redis (`crates/broker/tests/transport.rs`), and the AMQP
//! transport will run the same ones against RabbitMQ. Enabled by the `conformance` feature (tests only).
//!
//! Each check uses its own queue and exchange names (derived from `prefix`), so checks can share a broker.
//!
//! Where brokers truly differ, a check takes the transport's [`Semantics`] (the `*_with` variants) and asserts what
//! that broker guarantees; the plain variants assert kombu's Redis semantics ([`Semantics::KOMBU_REDIS`]), which
//! the in-memory and Redis transports have.

use celery_proto::{Envelope, Message};
use serde_json::Map;
use std::time::Duration;

use crate::{Binding, ChordPart, Requeue, ResultBackend, Transport};

/// Which priority a queue serves first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorityOrder {
    /// kombu's Redis transport: 0 first (buckets 0, 3, 6, 9), first in first out inside a bucket.
    LowFirst,
    /// AMQP on a queue with `x-max-priority`: the higher number first, first in first out among equals.
    HighFirst,
    /// AMQP on a queue without `x-max-priority`: the priority property is ignored.
    Fifo,
}

/// Where a message given back with [`Transport::requeue`] is delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueOrder {
    /// As asked: [`Requeue::Back`] after what is waiting, [`Requeue::Front`] next (kombu on Redis).
    AsAsked,
    /// Both go back to the broker (AMQP `basic.reject(requeue=true)`: RabbitMQ restores the original position);
    /// a consumer gets them again, marked redelivered, after the messages of the same priority it already
    /// prefetched, in the order they were given back.
    Redelivered,
}

/// How a transport's delivery semantics differ where brokers truly differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Semantics {
    pub priority: PriorityOrder,
    pub requeue: RequeueOrder,
    /// Push-based transports (AMQP) receive messages into a local prefetch buffer asynchronously: a check waits
    /// this long after publishing or giving back before a consume that must see those messages. Zero for
    /// transports that take from the broker inside `consume`. (The AMQP checks also assume a prefetch window of at
    /// least 4 messages.)
    pub settle: Duration,
}

impl Semantics {
    /// kombu's Redis transport (and the in-memory one).
    pub const KOMBU_REDIS: Semantics = Semantics {
        priority: PriorityOrder::LowFirst,
        requeue: RequeueOrder::AsAsked,
        settle: Duration::ZERO,
    };

    /// AMQP (RabbitMQ) with or without `x-max-priority` on its task queues.
    pub const fn amqp(priority_queues: bool) -> Semantics {
        Semantics {
            priority: if priority_queues {
                PriorityOrder::HighFirst
            } else {
                PriorityOrder::Fifo
            },
            requeue: RequeueOrder::Redelivered,
            settle: Duration::from_millis(300),
        }
    }

    async fn settle(&self) {
        if !self.settle.is_zero() {
            tokio::time::sleep(self.settle).await;
        }
    }
}

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
    queues_with(t, prefix, &Semantics::KOMBU_REDIS).await;
}

/// [`queues`] for a transport with the given semantics: priority order per [`PriorityOrder`], batches up to `max`,
/// requeue and restore per [`RequeueOrder`] with `redelivered`, ack for good, and a message never delivered twice
/// at once.
pub async fn queues_with(t: &dyn Transport, prefix: &str, sem: &Semantics) {
    let q = format!("{prefix}.queue");
    let qs = vec![q.clone()];
    t.declare_queue(&q).await.expect("declare");
    if !sem.settle.is_zero() {
        // A push-based transport starts consuming on its first consume.
        assert!(
            t.consume(&qs, 1, Duration::ZERO)
                .await
                .expect("consume")
                .is_empty()
        );
    }
    // "late" is served after a, b and c: lower priority, or (without priorities) published last.
    let (late_priority, early_priority) = match sem.priority {
        PriorityOrder::LowFirst => (9, 0),
        PriorityOrder::HighFirst => (0, 9),
        PriorityOrder::Fifo => (0, 0),
    };
    let mut order = vec![
        (early_priority, "\"a\""),
        (early_priority, "\"b\""),
        (early_priority, "\"c\""),
    ];
    if sem.priority == PriorityOrder::Fifo {
        order.push((late_priority, "\"late\""));
    } else {
        order.insert(0, (late_priority, "\"late\""));
    }
    for (p, b) in order {
        t.publish(&q, &env(&q, p, b)).await.expect("publish");
    }
    sem.settle().await;
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
    sem.settle().await;
    let next = t.consume(&qs, 1, Duration::ZERO).await.expect("consume");
    let m = next[0].message.as_ref().unwrap();
    assert_eq!(body(m), "\"c\"");
    assert!(!m.redelivered);
    let c = next[0].tag.clone().unwrap();

    // c restored to the front: delivered next (AMQP: after b, which went back first), marked redelivered.
    assert!(t.requeue(&c, Requeue::Front).await.expect("restore"));
    sem.settle().await;
    let next = t.consume(&qs, 3, Duration::ZERO).await.expect("consume");
    let bodies: Vec<(String, bool)> = next
        .iter()
        .map(|d| {
            let m = d.message.as_ref().unwrap();
            (body(m), m.redelivered)
        })
        .collect();
    let (c, b, late) = (
        ("\"c\"".to_string(), true),
        ("\"b\"".to_string(), true),
        ("\"late\"".to_string(), false),
    );
    let want = match (sem.requeue, sem.priority) {
        (RequeueOrder::AsAsked, PriorityOrder::Fifo) => [c, late, b],
        (RequeueOrder::AsAsked, _) => [c, b, late],
        (RequeueOrder::Redelivered, PriorityOrder::Fifo) => [late, b, c],
        (RequeueOrder::Redelivered, _) => [b, c, late],
    };
    assert_eq!(bodies, want);
    for d in &next {
        t.ack(d.tag.as_ref().unwrap()).await.expect("ack");
    }
    sem.settle().await;
    assert!(
        t.consume(&qs, 1, Duration::ZERO)
            .await
            .expect("consume")
            .is_empty()
    );
}

/// An idle consume waits for a publish (and gives up after its wait), and queues are served in the order given.
pub async fn idle_wait_and_queue_order(t: &dyn Transport, prefix: &str) {
    idle_wait_and_queue_order_with(t, prefix, &Semantics::KOMBU_REDIS).await;
}

/// [`idle_wait_and_queue_order`] for a transport with the given semantics (a push-based one gets its
/// [`Semantics::settle`] time for both messages to arrive before the consume that must see them in queue order).
pub async fn idle_wait_and_queue_order_with(t: &dyn Transport, prefix: &str, sem: &Semantics) {
    let (q1, q2) = (format!("{prefix}.one"), format!("{prefix}.two"));
    let qs = vec![q1.clone(), q2.clone()];
    let empty = t
        .consume(&qs, 4, Duration::from_millis(200))
        .await
        .expect("consume");
    assert!(empty.is_empty());
    t.publish(&q2, &env(&q2, 0, "2")).await.expect("publish");
    t.publish(&q1, &env(&q1, 0, "1")).await.expect("publish");
    sem.settle().await;
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

/// Dead letters are kept under their name; beyond `max_entries` the oldest are dropped and counted.
pub async fn dead_letters(t: &dyn Transport, prefix: &str) {
    t.dead_letter(&format!("{prefix}.dead"), br#"{"reason": "test"}"#)
        .await
        .expect("dead letter");
    let bounded = format!("{prefix}.dead-bounded");
    let bounds = crate::DeadLetterBounds {
        max_entries: 2,
        max_age: None,
    };
    let mut dropped = 0;
    for i in 0..3 {
        let record = format!(r#"{{"reason": "bounded {i}", "id": "b{i}"}}"#);
        let d = t
            .keep_dead_letter(&bounded, &format!("b{i}"), record.as_bytes(), bounds)
            .await
            .expect("bounded dead letter");
        assert_eq!(d.too_old, 0);
        dropped += d.too_many;
    }
    assert_eq!(dropped, 1, "the third entry pushes the first out");
}

/// Results: stored, read back, announced to a waiter; SUCCESS is never overwritten; a chord join claims once.
pub async fn results(b: &dyn ResultBackend, prefix: &str) {
    let id = format!("{prefix}-task");
    assert!(b.get(&id).await.expect("get").is_none());
    assert!(
        b.store((&id).into(), br#"{"status": "STARTED"}"#, 60)
            .await
            .expect("store")
    );
    assert!(
        b.store((&id).into(), br#"{"status": "SUCCESS", "result": 1}"#, 60)
            .await
            .expect("store")
    );
    assert!(
        !b.store((&id).into(), br#"{"status": "FAILURE"}"#, 60)
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
