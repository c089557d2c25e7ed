//! An ack sent while Redis is loading its data set after a restart is a transient failure (retried by the worker),
//! not a final one. Redis refuses the transaction's commands with `LOADING` and `EXEC` with `EXECABORT`; the reason
//! is inside the abort. A real Redis answers `LOADING` only for the moments it loads a large AOF, too briefly to
//! hit from a test, so this one speaks the protocol from a small fake server that answers exactly that way.

use broker::Broker;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Read one RESP command (an array of bulk strings) and return its words.
async fn read_command<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<Vec<String>> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let n: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).await.ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0u8; len + 2];
        tokio::io::AsyncReadExt::read_exact(r, &mut buf)
            .await
            .ok()?;
        words.push(String::from_utf8_lossy(&buf[..len]).into_owned());
    }
    Some(words)
}

/// A server that accepts a connection's setup and then answers like a Redis still loading its data set.
async fn loading_redis() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                let mut in_multi = false;
                while let Some(cmd) = read_command(&mut r).await {
                    let reply: &[u8] = match (cmd[0].to_ascii_uppercase().as_str(), in_multi) {
                        ("MULTI", _) => {
                            in_multi = true;
                            b"+OK\r\n"
                        }
                        ("EXEC", _) => {
                            in_multi = false;
                            b"-EXECABORT Transaction discarded because of previous errors.\r\n"
                        }
                        (_, true) => b"-LOADING Redis is loading the dataset in memory\r\n",
                        ("PING", false) => b"+PONG\r\n",
                        _ => b"+OK\r\n",
                    };
                    if w.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn an_ack_refused_while_redis_loads_is_transient() {
    let port = loading_redis().await;
    let broker = Broker::connect(&format!("redis://127.0.0.1:{port}/0"))
        .await
        .expect("connect to the fake");
    let err = broker
        .ack(&["tag-1".to_string()])
        .await
        .expect_err("the transaction is aborted");
    assert!(
        err.is_transient(),
        "an aborted transaction whose commands got LOADING is worth retrying: {err}"
    );
    assert!(err.to_string().contains("loading"), "{err}");
}
