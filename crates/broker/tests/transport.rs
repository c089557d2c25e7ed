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
    // What the checks left behind: the dead letter is one entry of the store's hash, given an id, and indexed by
    // time (docs/dead-letters.md); no message is left unacked.
    let mut conn = db.conn();
    let dead: Vec<String> = redis::cmd("HVALS")
        .arg("c4.dead:entries")
        .query(&mut conn)
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let record: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(record["reason"], "test");
    let id = record["id"].as_str().expect("the entry has an id");
    let indexed: Option<f64> = redis::cmd("ZSCORE")
        .arg("c4.dead:by_time")
        .arg(id)
        .query(&mut conn)
        .unwrap();
    assert!(indexed.is_some(), "the entry is indexed by time");
    let unacked: i64 = redis::cmd("HLEN").arg("unacked").query(&mut conn).unwrap();
    assert_eq!(unacked, 0, "every message taken was settled");
}
