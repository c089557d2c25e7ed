//! The idle consumer never takes a message to a place where a crash or a lost reply could lose it (docs/worker.md,
//! "Delivery"): it waits with BLMOVE into its own in-flight list and records from there atomically, a consumer that
//! is gone has its in-flight list taken over by the next restore, the waits find messages on every queue and
//! priority list, and an idle Rust consumer gets its share of the messages next to a BRPOP consumer (kombu's).
//!
//! The reply is lost on purpose by a small TCP proxy between the broker and Redis that can stop passing the
//! server's bytes back and then cut every connection, as a network partition or a dying load balancer does.

use broker::Broker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::redis_db_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use transport::Transport;

/// A proxy to Redis whose server-to-client direction can be swallowed, and whose connections can be cut.
struct Proxy {
    port: u16,
    swallow_replies: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let swallow_replies = Arc::new(AtomicBool::new(false));
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (swallow, held) = (swallow_replies.clone(), pipes.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let swallow = swallow.clone();
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !swallow.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                });
                held.lock().unwrap().extend([up, down]);
            }
        });
        Proxy {
            port,
            swallow_replies,
            pipes,
        }
    }

    /// Close every connection made so far (both sides see the socket go away).
    fn cut(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

fn message(tag: &str, queue: &str) -> String {
    serde_json::json!({
        "body": "W1tdLCB7fSwge31d",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"task": "t.idle", "id": tag, "lang": "py", "argsrepr": "()", "kwargsrepr": "{}"},
        "properties": {
            "delivery_tag": tag,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "body_encoding": "base64",
            "priority": 0,
            "correlation_id": tag,
        },
    })
    .to_string()
}

/// Wait until some client of database `db` is blocked in one of `commands`.
fn wait_for_blocked_client(conn: &mut redis::Connection, db: u8, commands: &[&str]) {
    for _ in 0..150 {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(conn).unwrap();
        if clients
            .lines()
            .filter(|l| l.contains(&format!(" db={db} ")))
            .any(|l| commands.iter().any(|c| l.contains(&format!(" cmd={c} "))))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no client blocked in {commands:?} within 3 s");
}

/// How many clients of database `db` are blocked in `command` now.
fn blocked_clients(conn: &mut redis::Connection, db: u8, command: &str) -> usize {
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(conn).unwrap();
    clients
        .lines()
        .filter(|l| {
            // `cmd` is a client's last command; `flags=b` says it is blocked in it now.
            l.contains(&format!(" db={db} "))
                && l.contains(&format!(" cmd={command} "))
                && l.contains(" flags=b ")
        })
        .count()
}

/// How many messages wait in registered in-flight lists.
fn in_flight_messages(conn: &mut redis::Connection) -> i64 {
    let lists: Vec<String> = redis::cmd("SMEMBERS")
        .arg(broker::IN_FLIGHT_REGISTRY)
        .query(conn)
        .unwrap();
    lists
        .iter()
        .map(|l| redis::cmd("LLEN").arg(l).query::<i64>(conn).unwrap())
        .sum()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_reply_lost_while_idle_loses_no_message() {
    let db = redis_db_or_skip!();
    let (host_port, db_number) = db
        .url
        .trim_start_matches("redis://")
        .rsplit_once('/')
        .map(|(h, d)| (h.rsplit('@').next().unwrap().to_string(), d.to_string()))
        .unwrap();
    let mut direct = db.conn();
    rt().block_on(async {
        let proxy = Proxy::start(host_port).await;
        let broker = Broker::connect(&format!("redis://127.0.0.1:{}/{db_number}", proxy.port))
            .await
            .expect("connect through the proxy");
        let queues = vec!["idle".to_string()];
        let consumer = {
            let (b, q) = (broker.clone(), queues.clone());
            tokio::spawn(async move { b.consume(&q, 1, Duration::from_secs(5)).await })
        };
        // The consumer waits for work (BRPOP in kombu's way would be just as blocked here).
        tokio::task::block_in_place(|| {
            wait_for_blocked_client(&mut direct, db.db, &["blmove", "brpop"])
        });
        proxy.swallow_replies.store(true, Ordering::SeqCst);
        let _: i64 = redis::cmd("LPUSH")
            .arg("idle")
            .arg(message("lost-reply-1", "idle"))
            .query(&mut direct)
            .unwrap();
        // Redis has served the blocked command by now; its reply goes nowhere, then the connection dies.
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut();
        let first = tokio::time::timeout(Duration::from_secs(10), consumer)
            .await
            .expect("the consumer notices the cut")
            .unwrap();
        assert!(
            first.as_ref().map(|d| d.is_empty()).unwrap_or(true),
            "no message can have been delivered through a proxy that swallowed the reply: {first:?}"
        );
        let waiting: i64 = redis::cmd("LLEN").arg("idle").query(&mut direct).unwrap();
        let unacked: i64 = redis::cmd("HLEN")
            .arg("unacked")
            .query(&mut direct)
            .unwrap();
        let in_flight = in_flight_messages(&mut direct);
        assert_eq!(
            waiting + in_flight + unacked,
            1,
            "the message is in its queue, in the consumer's in-flight list or unacked (a BRPOP would have taken it \
             and its reply was lost): queue {waiting}, in flight {in_flight}, unacked {unacked}"
        );

        // The link comes back: the same broker delivers the message, recorded as unacked.
        proxy.swallow_replies.store(false, Ordering::SeqCst);
        let mut got = Vec::new();
        for _ in 0..20 {
            match broker.consume(&queues, 1, Duration::from_millis(500)).await {
                Ok(d) if !d.is_empty() => {
                    got = d;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert_eq!(got.len(), 1, "delivered once the link is back");
        assert_eq!(got[0].tag.as_deref(), Some("lost-reply-1"));
        let recorded: bool = redis::cmd("HEXISTS")
            .arg("unacked")
            .arg("lost-reply-1")
            .query(&mut direct)
            .unwrap();
        assert!(recorded, "held in kombu's unacked until acked");
        Transport::ack(&broker, "lost-reply-1").await.unwrap();
    });
}

#[test]
fn idle_waits_find_messages_on_every_queue_and_priority() {
    let db = redis_db_or_skip!();
    let mut direct = db.conn();
    rt().block_on(async {
        let broker = Broker::connect(&db.url).await.expect("connect");
        // One queue, a message on a lower-priority key (kombu's `q\x06\x169`): found while the wait blocks on `q`.
        // Several queues: a message on the second queue is found while the first is waited on.
        for (queues, key, tag) in [
            (vec!["solo"], "solo\x06\x169", "low-priority"),
            (vec!["first", "second"], "second", "second-queue"),
        ] {
            let queues: Vec<String> = queues.into_iter().map(String::from).collect();
            let consumer = {
                let (b, q) = (broker.clone(), queues.clone());
                tokio::spawn(async move { b.consume(&q, 4, Duration::from_secs(5)).await })
            };
            // Every list (each queue's four priority lists) is watched at once, as BRPOP watches all its keys.
            let lists = 4 * queues.len();
            let all_watched = tokio::task::block_in_place(|| {
                testkit::wait_until(Duration::from_secs(3), || {
                    blocked_clients(&mut direct, db.db, "blmove") == lists
                })
            });
            assert!(
                all_watched,
                "{queues:?}: {} of {lists} lists watched",
                blocked_clients(&mut direct, db.db, "blmove")
            );
            let _: i64 = redis::cmd("LPUSH")
                .arg(key)
                .arg(message(tag, &queues[queues.len() - 1]))
                .query(&mut direct)
                .unwrap();
            let got = consumer.await.unwrap().expect("consume");
            // The wake ended the other waits (CLIENT UNBLOCK), rather than leaving them blocked for 5 s.
            assert_eq!(
                blocked_clients(&mut direct, db.db, "blmove"),
                0,
                "{queues:?}"
            );
            assert_eq!(got.len(), 1, "{queues:?}: {got:?}");
            assert_eq!(got[0].tag.as_deref(), Some(tag));
            assert_eq!(got[0].queue, queues[queues.len() - 1]);
            Transport::ack(&broker, tag).await.unwrap();
        }
        let unacked: i64 = redis::cmd("HLEN")
            .arg("unacked")
            .query(&mut direct)
            .unwrap();
        assert_eq!(unacked, 0);
    });
}

#[test]
fn the_in_flight_list_of_a_consumer_that_is_gone_is_taken_over() {
    let db = redis_db_or_skip!();
    let mut direct = db.conn();
    let registry = broker::IN_FLIGHT_REGISTRY;
    let (dead, live) = (format!("{registry}:dead"), format!("{registry}:live"));
    for (list, tag) in [(&dead, "orphan-1"), (&live, "held-1")] {
        let _: () = redis::pipe()
            .cmd("SADD")
            .arg(registry)
            .arg(list)
            .ignore()
            .cmd("LPUSH")
            .arg(list)
            .arg(message(tag, "orphans"))
            .ignore()
            .query(&mut direct)
            .unwrap();
    }
    let _: () = redis::cmd("LPUSH")
        .arg(&dead)
        .arg("not json at all")
        .query(&mut direct)
        .unwrap();
    // The live consumer renewed its alive key; the dead one's expired.
    let _: () = redis::cmd("SET")
        .arg(format!("{live}:alive"))
        .arg(1)
        .arg("EX")
        .arg(60)
        .query(&mut direct)
        .unwrap();
    rt().block_on(async {
        let broker = Broker::connect(&db.url).await.expect("connect");
        let restored = broker.restore_visible(3600.0).await.expect("restore");
        assert_eq!(restored, 1, "the orphan is back in its queue at once");
    });
    let back: Vec<String> = redis::cmd("LRANGE")
        .arg("orphans")
        .arg(0)
        .arg(-1)
        .query(&mut direct)
        .unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
    let env: serde_json::Value = serde_json::from_str(&back[0]).unwrap();
    assert_eq!(env["properties"]["delivery_tag"], "orphan-1");
    assert_eq!(env["headers"]["id"], "orphan-1");
    let unreadable: Vec<String> = redis::cmd("LRANGE")
        .arg(broker::IN_FLIGHT_UNREADABLE)
        .arg(0)
        .arg(-1)
        .query(&mut direct)
        .unwrap();
    assert_eq!(
        unreadable,
        vec!["not json at all".to_string()],
        "kept for an operator"
    );
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(registry)
        .query(&mut direct)
        .unwrap();
    assert_eq!(
        members,
        vec![live.clone()],
        "the gone consumer left the registry, the live one did not"
    );
    let held: i64 = redis::cmd("LLEN").arg(&live).query(&mut direct).unwrap();
    assert_eq!(
        held, 1,
        "a live consumer's in-flight message is not touched"
    );
    let unacked: i64 = redis::cmd("HLEN")
        .arg("unacked")
        .query(&mut direct)
        .unwrap();
    assert_eq!(unacked, 0);
}

#[test]
fn an_idle_consumer_gets_its_share_next_to_a_brpop_consumer() {
    let db = redis_db_or_skip!();
    let mut direct = db.conn();
    let url = db.url.clone();
    // kombu's way: BRPOP, again and again, counting what it gets.
    let stop = Arc::new(AtomicBool::new(false));
    let brpop = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut got = 0;
            while !stop.load(Ordering::SeqCst) {
                let r: Option<(String, String)> = redis::cmd("BRPOP")
                    .arg("shared")
                    .arg(0.2)
                    .query(&mut conn)
                    .unwrap();
                got += usize::from(r.is_some());
            }
            got
        })
    };
    const N: usize = 40;
    let ours = rt().block_on(async {
        let broker = Broker::connect(&db.url).await.expect("connect");
        let queues = vec!["shared".to_string()];
        let counter = {
            let b = broker.clone();
            tokio::spawn(async move {
                let mut got = 0;
                loop {
                    match b.consume(&queues, 1, Duration::from_millis(800)).await {
                        Ok(d) if d.is_empty() => break,
                        Ok(d) => {
                            for x in d {
                                Transport::ack(&b, x.tag.as_deref().unwrap()).await.unwrap();
                                got += 1;
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                got
            })
        };
        for i in 0..N {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let _: i64 = redis::cmd("LPUSH")
                .arg("shared")
                .arg(message(&format!("shared-{i}"), "shared"))
                .query(&mut direct)
                .unwrap();
        }
        counter.await.unwrap()
    });
    stop.store(true, Ordering::SeqCst);
    let theirs = brpop.join().unwrap();
    eprintln!("idle Rust consumer {ours}, BRPOP consumer {theirs}");
    assert_eq!(ours + theirs, N, "every message went to one of them");
    assert!(
        ours >= N / 5,
        "the Rust consumer competes like a BRPOP consumer: it got {ours} of {N}, BRPOP {theirs}"
    );
}

#[test]
fn the_wait_follows_a_smaller_set_of_queues() {
    // A worker told to stop consuming a queue (`cancel_consumer`) waits on fewer lists than before.
    let db = redis_db_or_skip!();
    let mut direct = db.conn();
    rt().block_on(async {
        let broker = Broker::connect(&db.url).await.expect("connect");
        let two: Vec<String> = vec!["shrink-a".into(), "shrink-b".into()];
        let one: Vec<String> = vec!["shrink-a".into()];
        let idle = broker
            .consume(&two, 1, Duration::from_millis(200))
            .await
            .expect("wait on two queues");
        assert!(idle.is_empty());
        let idle = broker
            .consume(&one, 1, Duration::from_millis(200))
            .await
            .expect("wait on one queue after two");
        assert!(idle.is_empty());
        let consumer = {
            let (b, q) = (broker.clone(), one.clone());
            tokio::spawn(async move { b.consume(&q, 1, Duration::from_secs(5)).await })
        };
        let watched = tokio::task::block_in_place(|| {
            testkit::wait_until(Duration::from_secs(3), || {
                blocked_clients(&mut direct, db.db, "blmove") == 4
            })
        });
        assert!(watched, "the four lists of one queue are watched");
        let _: i64 = redis::cmd("LPUSH")
            .arg("shrink-a")
            .arg(message("shrink-1", "shrink-a"))
            .query(&mut direct)
            .unwrap();
        let got = consumer.await.unwrap().expect("consume");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].tag.as_deref(), Some("shrink-1"));
        Transport::ack(&broker, "shrink-1").await.unwrap();
    });
}
