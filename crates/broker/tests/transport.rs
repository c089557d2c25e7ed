//! The Redis transport against a real Redis (own database per test) passes the same conformance checks as the
//! in-memory one (`transport::conformance`): priority and FIFO order, requeue and restore, fanout, mailboxes, dead
//! letters, results and chord joins, with kombu's keys underneath.

use broker::Broker;
use testkit::redis_db_or_skip;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn redis_transport_passes_the_conformance_checks() {
    let db = redis_db_or_skip!();
    rt().block_on(async {
        let b = Broker::connect(&db.url).await.expect("connect");
        transport::conformance::queues(&b, "c1").await;
        transport::conformance::idle_wait_and_queue_order(&b, "c2").await;
        transport::conformance::fanout_and_mailboxes(&b, "c3").await;
        transport::conformance::dead_letters(&b, "c4").await;
        transport::conformance::results(&b, "c5").await;
        let mut conn = db.conn();
        transport::conformance::chords(&b, "c6", |gid, n| {
            let _: () = redis::cmd("SET")
                .arg(format!("celery-taskset-meta-{gid}.s"))
                .arg(n)
                .query(&mut conn)
                .expect("chord size");
        })
        .await;
    });
    // What the checks left behind is in kombu's shapes: the dead letter is a list entry, the result a key.
    let mut conn = db.conn();
    let dead: Vec<String> = redis::cmd("LRANGE")
        .arg("c4.dead")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(dead, [r#"{"reason": "test"}"#]);
    let unacked: i64 = redis::cmd("HLEN").arg("unacked").query(&mut conn).unwrap();
    assert_eq!(unacked, 0, "every message taken was settled");
}
