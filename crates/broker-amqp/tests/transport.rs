//! The AMQP transport against the real RabbitMQ (a private virtual host per test, deleted afterwards) passes the
//! shared conformance checks (`transport::conformance`) with AMQP's semantics (`Semantics::amqp`: higher priority
//! first on `x-max-priority` queues, FIFO without; rejected messages come back redelivered after what the consumer
//! already prefetched), and a lost connection leaves no ambiguous tag: old tags cannot be settled, the messages come
//! back redelivered on the new connection.

use broker_amqp::{AmqpOptions, AmqpTransport};
use celery_proto::Envelope;
use celery_proto::kombu_amqp::TaskQueueOptions;
use std::time::Duration;
use testkit::amqp_vhost_or_skip;
use transport::conformance::{self, Semantics};
use transport::{Requeue, Transport};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn opts(max_priority: Option<u8>) -> AmqpOptions {
    AmqpOptions {
        prefetch: 8,
        queues: TaskQueueOptions {
            max_priority,
            ..TaskQueueOptions::default()
        },
    }
}

#[test]
fn amqp_transport_passes_the_conformance_checks() {
    let vhost = amqp_vhost_or_skip!();
    rt().block_on(async {
        let prio = AmqpTransport::connect(&vhost.url, opts(Some(10)))
            .await
            .expect("connect");
        conformance::queues_with(&prio, "p1", &Semantics::amqp(true)).await;
        conformance::idle_wait_and_queue_order_with(&prio, "p2", &Semantics::amqp(true)).await;
        conformance::fanout_and_mailboxes(&prio, "p3").await;
        conformance::dead_letters(&prio, "p4").await;

        let plain = AmqpTransport::connect(&vhost.url, opts(None))
            .await
            .expect("connect");
        conformance::queues_with(&plain, "f1", &Semantics::amqp(false)).await;
        conformance::idle_wait_and_queue_order_with(&plain, "f2", &Semantics::amqp(false)).await;

        // The dead letter is a persistent JSON message in a durable queue named after the store.
        let dead = prio
            .pop("p4.dead", Duration::from_secs(1))
            .await
            .expect("pop")
            .expect("the dead letter");
        // The record as kept, with the id the store gave it.
        let record: serde_json::Value = serde_json::from_slice(&dead.raw).expect("a JSON record");
        assert_eq!(record["reason"], "test");
        assert!(
            record["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{record}"
        );
        let m = dead.message.expect("decoded");
        assert_eq!(m.properties["delivery_mode"], 2);
        assert_eq!(prio.reconnects(), 0);
    });
}

fn close_connections(vhost: &str) {
    let ok = std::process::Command::new("rabbitmqctl")
        .args([
            "close_all_connections",
            "-p",
            vhost,
            "test: connection lost",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl")
        .success();
    assert!(ok, "rabbitmqctl close_all_connections");
}

#[test]
fn a_lost_connection_makes_old_tags_unsettleable_and_messages_come_back() {
    let vhost = amqp_vhost_or_skip!();
    rt().block_on(async {
        let t = AmqpTransport::connect(&vhost.url, opts(None))
            .await
            .expect("connect");
        let qs = vec!["lost".to_string()];
        t.declare_queue("lost").await.expect("declare");
        let env = Envelope::new(b"[[], {}, {}]".to_vec(), serde_json::Map::new(), "", "lost");
        t.publish("lost", &env).await.expect("publish");
        let got = t
            .consume(&qs, 1, Duration::from_secs(2))
            .await
            .expect("consume");
        let old = got[0].tag.clone().expect("tag");
        assert!(!got[0].message.as_ref().unwrap().redelivered);

        close_connections(&vhost.vhost);
        tokio::time::sleep(Duration::from_millis(500)).await;

        // The old tag: its channel is gone and RabbitMQ has the message again.
        let err = t.ack(&old).await.expect_err("ack of a dead channel's tag");
        assert!(!err.is_transient(), "not worth retrying: {err}");
        assert!(!t.requeue(&old, Requeue::Front).await.expect("requeue"));

        // The next calls connect again (the first may report the loss) and get the message redelivered.
        let mut again = Vec::new();
        for _ in 0..20 {
            match t.consume(&qs, 1, Duration::from_millis(500)).await {
                Ok(d) if !d.is_empty() => {
                    again = d;
                    break;
                }
                Ok(_) => {}
                Err(e) => assert!(e.is_transient(), "{e}"),
            }
        }
        assert_eq!(again.len(), 1, "redelivered after the reconnect");
        let new = again[0].tag.clone().unwrap();
        assert_ne!(new, old, "tags are unambiguous across connections");
        assert!(again[0].message.as_ref().unwrap().redelivered);
        assert_eq!(t.reconnects(), 1);
        t.ack(&new).await.expect("ack");
        // Acking twice is harmless (it would close the channel on the wire).
        t.ack(&new).await.expect("second ack is a no-op");
        assert!(
            t.consume(&qs, 1, Duration::from_millis(300))
                .await
                .expect("consume")
                .is_empty()
        );
    });
}

#[test]
fn an_unreachable_broker_is_unavailable() {
    rt().block_on(async {
        let err =
            AmqpTransport::connect("amqp://guest:guest@127.0.0.1:1//", AmqpOptions::default())
                .await
                .err()
                .expect("nothing listens on port 1");
        assert!(err.is_transient(), "{err}");
    });
}

/// A queue that exists with other arguments (declared `x-max-priority` by workers set up so) is used as it is by
/// a publisher with Celery's defaults, instead of every publish failing with PRECONDITION_FAILED; its length and
/// purge work through the seam.
#[test]
fn a_queue_declared_with_other_arguments_is_used_as_it_is() {
    let vhost = amqp_vhost_or_skip!();
    rt().block_on(async {
        let workers = AmqpTransport::connect(&vhost.url, opts(Some(10)))
            .await
            .expect("connect");
        workers.declare_queue("shared").await.expect("declare");
        let publisher = AmqpTransport::connect(&vhost.url, opts(None))
            .await
            .expect("connect");
        let env = Envelope::new(b"[[], {}, {}]".to_vec(), Default::default(), "", "shared");
        publisher
            .publish("shared", &env)
            .await
            .expect("published to the existing queue");
        publisher.publish("shared", &env).await.expect("and again");
        assert_eq!(publisher.queue_len("shared").await.unwrap(), Some(2));
        assert_eq!(publisher.queue_len("no-such-queue").await.unwrap(), None);
        assert_eq!(publisher.purge("shared").await.unwrap(), 2);
        assert_eq!(workers.queue_len("shared").await.unwrap(), Some(0));
        assert_eq!(
            publisher.reconnects(),
            0,
            "no connection was lost on the way"
        );
    });
}
