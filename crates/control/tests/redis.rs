//! The control client and event receiver against a real Redis (own database per test): replies with a foreign
//! ticket are ignored, `limit` ends the collection, the reply queue binding and lists are always removed, and the
//! receiver splits captured `task.multi` messages and counts garbage.

use broker::Broker;
use celeriac_control::{ControlClient, EventReceiver};
use celery_proto::Message;
use celery_proto::control::{ControlRequest, reply_envelope};
use celery_proto::keys;
use celery_proto::kombu_redis;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use testkit::redis_db_or_skip;
use transport::SharedTransport;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fake worker: answers every request with `{node: {"ok": method}}`, plus one reply under a foreign ticket.
/// All replies to one request go in one `LPUSH`, so a client that stops after `limit` replies and deletes its list
/// cannot see the list made again by a reply pushed a moment later (a race that made this test flaky under load).
async fn fake_worker(broker: Broker, url: String, nodes: Vec<&'static str>) {
    let channel = kombu_redis::fanout_channel(broker.db(), keys::PIDBOX_EXCHANGE, "");
    let mut stream = broker.psubscribe(&[channel]).await.unwrap();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    while let Some(m) = stream.next().await {
        let req =
            ControlRequest::from_message(&Message::decode(&m.payload, false).unwrap()).unwrap();
        let (Some(ticket), Some(oid)) = (req.ticket.clone(), req.reply_to.clone()) else {
            continue;
        };
        let queue = keys::reply_queue(&oid);
        let mut replies =
            vec![reply_envelope("stray@x", json!("stray"), "another-ticket", &oid, 1).encode()];
        for n in &nodes {
            replies.push(reply_envelope(n, json!({"ok": req.method}), &ticket, &oid, 7).encode());
        }
        let _: i64 = redis::cmd("LPUSH")
            .arg(&queue)
            .arg(replies)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[test]
fn broadcast_collects_matching_replies_and_cleans_up() {
    let db = redis_db_or_skip!();
    rt().block_on(async {
        let broker = Broker::connect(&db.url).await.unwrap();
        let worker = tokio::spawn(fake_worker(
            broker.clone(),
            db.url.clone(),
            vec!["a@h", "b@h"],
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let client = ControlClient::new(Arc::new(broker.clone()) as SharedTransport);
        let all = client
            .inspect("ping", json!({}), None, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all["a@h"], json!({"ok": "ping"}));
        assert!(!all.contains_key("stray@x"), "foreign tickets are ignored");
        assert!(client.clock().value() >= 8, "reply clocks adjust ours");
        let one = client
            .broadcast(
                "stats",
                json!({}),
                None,
                true,
                Duration::from_secs(5),
                Some(1),
            )
            .await
            .unwrap();
        assert_eq!(one.len(), 1, "limit ends the collection");
        let dest = client
            .broadcast(
                "clock",
                json!({}),
                Some(vec!["b@h".into()]),
                true,
                Duration::from_secs(5),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            dest.len(),
            1,
            "limit defaults to the number of destinations"
        );
        assert!(
            client
                .broadcast("x", json!([1]), None, true, Duration::from_millis(10), None)
                .await
                .is_err()
        );
        let fire = client
            .broadcast(
                "heartbeat",
                json!({}),
                None,
                false,
                Duration::from_secs(1),
                None,
            )
            .await
            .unwrap();
        assert!(fire.is_empty());
        assert!(
            broker
                .bindings(keys::REPLY_EXCHANGE)
                .await
                .unwrap()
                .is_empty(),
            "reply bindings removed"
        );
        worker.abort();
    });
    let mut c = db.conn();
    let leftover: Vec<String> = redis::cmd("KEYS")
        .arg("*.reply.celery.pidbox*")
        .query(&mut c)
        .unwrap();
    assert!(leftover.is_empty(), "reply lists deleted: {leftover:?}");
}

#[test]
fn receiver_splits_captured_batches_and_counts_garbage() {
    let db = redis_db_or_skip!();
    let fixture = std::fs::read(testkit::shared_dir().join(
        "fixtures/celery-wire/d-events/event-task.multi-task-received+task-started+task-succeeded.raw",
    ))
    .unwrap();
    rt().block_on(async {
        let broker = Broker::connect(&db.url).await.unwrap();
        let transport: SharedTransport = Arc::new(broker.clone());
        let mut rx = EventReceiver::new(&transport).await.unwrap();
        let ch = kombu_redis::fanout_channel(broker.db(), keys::EVENT_EXCHANGE, "task.multi");
        broker.publish_fanout(&ch, b"garbage").await.unwrap();
        broker.publish_fanout(&ch, &fixture).await.unwrap();
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let ev = tokio::time::timeout(Duration::from_secs(10), rx.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(ev.routing_key, "task.multi");
            kinds.push(ev.event_type().to_string());
        }
        assert_eq!(kinds, ["task-received", "task-started", "task-succeeded"]);
        assert_eq!(rx.bad_messages(), 1);
        let members = broker.bindings(keys::EVENT_EXCHANGE).await.unwrap();
        assert_eq!(members.len(), 1, "receiver binding: {members:?}");
        rx.close().await;
        assert!(
            broker
                .bindings(keys::EVENT_EXCHANGE)
                .await
                .unwrap()
                .is_empty()
        );
    });
}
