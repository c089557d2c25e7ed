//! Writes that wait for replicas (`ReplicaWait`, `CELERIAC_REDIS_WAIT_REPLICAS`), against a private master and
//! replica started by the test. While the replica runs, publishes and result writes are confirmed; while it is
//! stopped (SIGSTOP, so it is still connected but confirms nothing), they are refused with `NotReplicated` after
//! the timeout, although the master took them; without the setting the same writes succeed silently.

use broker::{Broker, BrokerError, ReplicaWait};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::Child;
use transport::{ResultBackend, ResultKey};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server(name: &str, port: u16, extra: &[&str]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &port.to_string()])
        .args(extra)
        .arg("--dir")
        .arg(std::env::temp_dir());
    let c = Child::spawn(name, &mut cmd);
    c.wait_for_output("eady to accept connections", Duration::from_secs(20));
    c
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have_redis_server() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok()
}

#[tokio::test(flavor = "current_thread")]
async fn writes_wait_for_the_replicas_asked_for() {
    if !testkit::require("redis-server", have_redis_server()) {
        return;
    }
    let master_port = free_port();
    let replica_port = free_port();
    let _master = redis_server("wait-master", master_port, &[]);
    let replica = redis_server(
        "wait-replica",
        replica_port,
        &["--replicaof", "127.0.0.1", &master_port.to_string()],
    );
    assert!(
        testkit::wait_until(Duration::from_secs(20), || redis_cli(
            replica_port,
            &["info", "replication"]
        )
        .contains("master_link_status:up")),
        "the replica never synchronised"
    );

    let broker = Broker::connect(&format!("redis://127.0.0.1:{master_port}/0"))
        .await
        .expect("connect");
    let wait = ReplicaWait {
        replicas: 1,
        timeout: Duration::from_millis(300),
    };
    broker.set_replica_wait(Some(wait));

    // Replica running: confirmed, and on the replica when the call returns.
    broker
        .publish("celery", 0, b"first")
        .await
        .expect("publish");
    broker
        .publish_many("celery", &[(0, b"second".to_vec()), (3, b"third".to_vec())])
        .await
        .expect("publish_many");
    let key: ResultKey = "wait-1".into();
    assert!(
        broker
            .store(key, br#"{"status": "SUCCESS", "result": 1}"#, 60)
            .await
            .expect("store")
    );
    assert_eq!(redis_cli(replica_port, &["llen", "celery"]).trim(), "2");
    assert!(redis_cli(replica_port, &["get", "celery-task-meta-wait-1"]).contains("SUCCESS"));

    // Replica stopped: the master takes the writes, but they are refused as not replicated after the timeout.
    replica.signal("STOP");
    let started = Instant::now();
    let err = broker
        .publish("celery", 0, b"unconfirmed")
        .await
        .expect_err("a publish no replica confirmed");
    assert!(
        matches!(
            err,
            BrokerError::NotReplicated {
                confirmed: 0,
                wanted: 1,
                timeout_ms: 300
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "WAIT returned before its timeout"
    );
    assert!(err.to_string().contains("a failover now would lose it"));
    assert_eq!(redis_cli(master_port, &["llen", "celery"]).trim(), "3");
    let err = broker
        .store(
            "wait-2".into(),
            br#"{"status": "SUCCESS", "result": 2}"#,
            60,
        )
        .await
        .expect_err("a result write no replica confirmed");
    assert!(
        err.to_string().contains("confirmed by 0 of 1 replicas"),
        "{err}"
    );
    assert!(!err.is_transient(), "{err:?}");
    assert!(redis_cli(master_port, &["get", "celery-task-meta-wait-2"]).contains("SUCCESS"));

    // The same writes without the setting succeed although nothing reached the replica.
    broker.set_replica_wait(None);
    broker
        .publish("celery", 0, b"async")
        .await
        .expect("publish");
    assert!(
        broker
            .store("wait-3".into(), br#"{"status": "SUCCESS"}"#, 60)
            .await
            .expect("store")
    );

    // Replica back: it catches up, and waiting writes are confirmed again.
    replica.signal("CONT");
    broker.set_replica_wait(Some(wait));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = broker.publish("celery", 0, b"again").await;
    while last.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = broker.publish("celery", 0, b"again").await;
    }
    assert!(
        last.is_ok(),
        "never confirmed after the replica resumed: {last:?}"
    );
    assert!(redis_cli(replica_port, &["get", "celery-task-meta-wait-2"]).contains("SUCCESS"));
}

#[test]
fn bad_settings_are_refused_with_their_names() {
    // Parsed through the environment of a child process, so this test does not change its own.
    let exe = std::env::current_exe().unwrap();
    let run = |replicas: &str, timeout: &str| {
        let out = Command::new(&exe)
            .args(["--exact", "print_replica_wait_from_env", "--nocapture"])
            .env("PRINT_REPLICA_WAIT", "1")
            .env(ReplicaWait::REPLICAS_ENV, replicas)
            .env(ReplicaWait::TIMEOUT_ENV, timeout)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run("two", "").contains("CELERIAC_REDIS_WAIT_REPLICAS=\"two\" is not a whole number"));
    assert!(run("1", "0").contains("would wait forever"));
    assert!(run("0", "").contains("Ok(None)"));
    assert!(run("", "").contains("Ok(None)"));
    assert!(run("2", "").contains("replicas: 2, timeout: 1s"));
    assert!(run("1", "250").contains("replicas: 1, timeout: 250ms"));
}

#[test]
fn print_replica_wait_from_env() {
    if std::env::var("PRINT_REPLICA_WAIT").is_ok() {
        match ReplicaWait::from_env() {
            Err(e) => println!("Err: {e}"),
            Ok(v) => println!("Ok({v:?})"),
        }
    }
}
