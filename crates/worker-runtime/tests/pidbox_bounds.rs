//! The worker's bound on remote-control replies (`RuntimeConfig::pidbox_reply_max_bytes`): a reply larger than the
//! bound is not sent; the client gets an `{"error": ...}` reply naming the command, the size and the flag, and
//! small replies still go out whole.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::*;

/// Ping until the worker's mailbox answers (it subscribes after start); its `{"ok": "pong"}` is small.
async fn answering(client: &celeriac_control::ControlClient) -> Vec<(String, Value)> {
    for _ in 0..60 {
        let ping = client
            .broadcast(
                "ping",
                json!({}),
                None,
                true,
                Duration::from_secs(1),
                Some(1),
            )
            .await
            .expect("control request");
        if !ping.is_empty() {
            return ping;
        }
    }
    panic!("the worker's pidbox never answered");
}

#[tokio::test(start_paused = true)]
async fn a_reply_larger_than_the_bound_becomes_an_error_reply() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.pidbox_reply_max_bytes = 300;
    let w = Running::start(cfg, probe.registry());
    let client = celeriac_control::ControlClient::new(w.transport());
    let ask = |method: &'static str| {
        let client = &client;
        async move {
            client
                .broadcast(
                    method,
                    json!({}),
                    None,
                    true,
                    Duration::from_secs(1),
                    Some(1),
                )
                .await
                .expect("control request")
        }
    };

    let ping = answering(&client).await;
    assert_eq!(ping, vec![(NODE.to_string(), json!({"ok": "pong"}))]);

    let stats = ask("stats").await;
    assert_eq!(stats.len(), 1);
    let Value::String(error) = &stats[0].1["error"] else {
        panic!("stats is larger than 300 bytes and must be refused: {stats:?}");
    };
    assert!(
        error.starts_with("the reply to stats is ")
            && error
                .ends_with(" bytes, more than this worker sends (--pidbox-reply-max-bytes 300)"),
        "{error}"
    );
    let size: usize = error["the reply to stats is ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 300, "the reported size is over the bound: {size}");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn zero_means_no_bound() {
    let probe = Probe::new();
    let mut cfg = config();
    cfg.pidbox_reply_max_bytes = 0;
    let w = Running::start(cfg, probe.registry());
    let client = celeriac_control::ControlClient::new(w.transport());
    answering(&client).await;
    let stats = client
        .broadcast(
            "stats",
            json!({}),
            None,
            true,
            Duration::from_secs(1),
            Some(1),
        )
        .await
        .expect("control request");
    assert_eq!(stats.len(), 1);
    assert!(stats[0].1.get("error").is_none(), "{stats:?}");
    assert!(
        stats[0].1.get("pid").is_some(),
        "the whole stats reply: {stats:?}"
    );
    w.stop().await;
}
