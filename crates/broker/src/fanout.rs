//! Pub/sub pattern streams and plain list pops for remote control and events: `PSUBSCRIBE` on kombu fanout
//! channels (`/{db}.celery.pidbox`, `/{db}.celeryev/*`) delivered as (channel, payload) pairs, and a BRPOP that
//! does not record into `unacked` (pidbox reply queues are transient, kombu consumes them with `no_ack`).

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use crate::{Broker, Result};

/// A message received on a pattern subscription.
#[derive(Debug, Clone)]
pub struct FanoutMessage {
    /// The channel it was published on (e.g. `/0.celeryev/worker.heartbeat`).
    pub channel: String,
    /// The payload bytes exactly as published.
    pub payload: Vec<u8>,
}

/// A live `PSUBSCRIBE` connection. [`PatternStream::next`] returns `None` once the connection is lost; the
/// caller decides whether to subscribe again.
pub struct PatternStream {
    rx: mpsc::UnboundedReceiver<FanoutMessage>,
    reader: tokio::task::JoinHandle<()>,
}

impl PatternStream {
    /// The next message, or `None` when the connection closed.
    pub async fn next(&mut self) -> Option<FanoutMessage> {
        self.rx.recv().await
    }

    /// Is the subscription connection still open?
    pub fn is_alive(&self) -> bool {
        !self.reader.is_finished()
    }
}

impl Drop for PatternStream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Broker {
    /// `PSUBSCRIBE` to every pattern on a dedicated connection. Returns once Redis confirmed the subscriptions,
    /// so a message published after this returns is received.
    pub async fn psubscribe(&self, patterns: &[String]) -> Result<PatternStream> {
        let mut pubsub = self.pubsub().await?;
        for p in patterns {
            pubsub.psubscribe(p).await?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let m = FanoutMessage {
                    channel: msg.get_channel_name().to_string(),
                    payload: msg.get_payload_bytes().to_vec(),
                };
                if tx.send(m).is_err() {
                    break;
                }
            }
        });
        Ok(PatternStream { rx, reader })
    }

    /// `BRPOP keys timeout` without recording the message as unacked (for pidbox reply queues).
    /// Returns the key it came from and the raw bytes, or `None` after `timeout` seconds.
    pub(crate) async fn brpop_raw(
        &self,
        conn: &mut ConnectionManager,
        keys: &[String],
        timeout: f64,
    ) -> Result<Option<(String, Vec<u8>)>> {
        let reply: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
            .arg(keys)
            .arg(timeout)
            .query_async(conn)
            .await?;
        Ok(reply)
    }
}
