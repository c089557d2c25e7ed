//! PostgreSQL going away in the middle of a load: the loader waits, retries and completes.
//!
//! The shared server is not stopped; the loader talks to it through a TCP proxy owned
//! by this test, which cuts every connection and refuses new ones for a while.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cowrie_loader::engine::Engine;
use store::test_support::TestDb;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::common::*;

struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // refused
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().await.push(h);
            }
        });
        Proxy {
            port,
            up,
            conns,
            accept,
        }
    }

    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.conns.lock().await.drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_waits_through_a_postgres_outage_and_completes() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // postgres://user@HOST:PORT/db -> HOST:PORT, replaced by the proxy's address.
    let authority = db
        .url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("URL with user@host:port")
        .to_owned();
    let target: &'static str = Box::leak(authority.clone().into_boxed_str());
    let proxy = Proxy::start(target).await;
    let proxied = db
        .url
        .replacen(&authority, &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(proxied, db.url);

    let dir = TempDir::new();
    let file = dir.path().join("cowrie.json");
    let total = gen_log(&file, 10_000, 51);
    let mut o = opts("bulk", "out");
    o.batch_size = 250;
    o.pause_after_batch = Duration::from_millis(50);
    let pool = store::build_pool(&proxied, 2, Duration::from_secs(2));
    let mut engine = Engine::new(Some(pool), o);
    let task = tokio::spawn(async move {
        let code = engine.run(&[file]).await;
        (code, engine.stats)
    });

    let mut c = connect(&db.url).await;
    loop {
        let n = store::inspect::table_counts(&mut c)
            .await
            .unwrap()
            .raw_events;
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut().await;
    // A COMMIT already forwarded before the cut may still finish on the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = store::inspect::table_counts(&mut c)
        .await
        .unwrap()
        .raw_events as u64;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Nothing moved while the database was unreachable.
    assert_eq!(
        store::inspect::table_counts(&mut c)
            .await
            .unwrap()
            .raw_events as u64,
        during
    );
    assert!(during < total, "outage happened in the middle");
    proxy.restore();

    let (code, stats) = task.await.unwrap();
    assert_eq!(code, 0, "{stats:?}");
    assert!(stats.db_retries > 0, "the loader had to retry: {stats:?}");
    let snap = snapshot(&db.url).await;
    assert_eq!(snap.counts.raw_events as u64, total);
    let session_events: i64 = snap.sessions.iter().map(|s| s.event_count as i64).sum();
    assert_eq!(
        session_events as u64, total,
        "session counters counted each event once"
    );
    proxy.accept.abort();
    drop(c);
    db.drop_db().await;
}
