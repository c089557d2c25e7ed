//! Acknowledgements batched opportunistically: acks that arrive while a batch is in flight go out together as one
//! `MULTI; ZREM unacked_index t1 t2 ...; HDEL unacked t1 t2 ...; EXEC`. No timer: an ack on an idle worker is sent
//! at once, and each caller still waits until its own ack is in Redis.

use tokio::sync::{mpsc, oneshot};

use crate::{Broker, BrokerError};

type Reply = oneshot::Sender<Result<(), BrokerError>>;

/// A handle to the ack batcher (cheap to clone).
#[derive(Clone)]
pub struct Acker {
    tx: mpsc::UnboundedSender<(String, Reply)>,
}

/// Most tags in one ack transaction.
const MAX_BATCH: usize = 512;

impl Acker {
    pub fn new(broker: Broker) -> Acker {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Reply)>();
        tokio::spawn(async move {
            let mut tags = Vec::with_capacity(MAX_BATCH);
            let mut replies = Vec::with_capacity(MAX_BATCH);
            while let Some((tag, reply)) = rx.recv().await {
                tags.push(tag);
                replies.push(reply);
                while tags.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok((t, r)) => {
                            tags.push(t);
                            replies.push(r);
                        }
                        Err(_) => break,
                    }
                }
                let res = broker.ack(&tags).await;
                for r in replies.drain(..) {
                    let _ = r.send(res.clone());
                }
                tags.clear();
            }
        });
        Acker { tx }
    }

    /// Acknowledge one delivery tag; resolves once it is removed from `unacked` and `unacked_index`.
    pub async fn ack(&self, tag: &str) -> Result<(), BrokerError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((tag.to_string(), reply))
            .map_err(|_| BrokerError::Closed)?;
        wait.await.unwrap_or(Err(BrokerError::Closed))
    }
}
