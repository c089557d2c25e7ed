//! Result writes batched opportunistically, like acks ([`crate::acks`]): writes that arrive while a batch is in
//! flight go out together as one call of `lua/store_results.lua` (per key, in order: skip if already SUCCESS, else
//! SETEX or SET and PUBLISH, what Celery's Redis backend does for one result). No timer: a write on an idle worker
//! goes out at once, and each caller still waits until its own result is in Redis (and learns whether it was
//! written or skipped).

use tokio::sync::{mpsc, oneshot};

use crate::{Broker, BrokerError};

type Reply = oneshot::Sender<Result<bool, BrokerError>>;

/// One pending write: the result key, the meta bytes, the expiry in seconds (0 = none).
struct Write {
    key: String,
    meta: Vec<u8>,
    expires: u64,
    reply: Reply,
}

/// A handle to the result-write batcher (cheap to clone).
#[derive(Clone)]
pub struct ResultWriter {
    tx: mpsc::UnboundedSender<Write>,
}

/// Most results in one script call (bounded so one call stays short inside Redis).
const MAX_BATCH: usize = 256;

impl ResultWriter {
    pub fn new(broker: Broker) -> ResultWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        tokio::spawn(async move {
            let mut batch: Vec<Write> = Vec::with_capacity(MAX_BATCH);
            while let Some(w) = rx.recv().await {
                batch.push(w);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(w) => batch.push(w),
                        Err(_) => break,
                    }
                }
                let writes: Vec<(&str, &[u8], u64)> = batch
                    .iter()
                    .map(|w| (w.key.as_str(), w.meta.as_slice(), w.expires))
                    .collect();
                let answer = broker.store_results(&writes).await;
                match answer {
                    Ok(written) if written.len() == batch.len() => {
                        for (w, ok) in batch.drain(..).zip(written) {
                            let _ = w.reply.send(Ok(ok));
                        }
                    }
                    Ok(written) => {
                        let e = BrokerError::Command(format!(
                            "store_results answered {} of {} writes",
                            written.len(),
                            batch.len()
                        ));
                        for w in batch.drain(..) {
                            let _ = w.reply.send(Err(e.clone()));
                        }
                    }
                    Err(e) => {
                        for w in batch.drain(..) {
                            let _ = w.reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        ResultWriter { tx }
    }

    /// Store one result; resolves once it is in Redis: true if written, false if skipped (already SUCCESS).
    pub async fn store(
        &self,
        key: String,
        meta: Vec<u8>,
        expires: u64,
    ) -> Result<bool, BrokerError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Write {
                key,
                meta,
                expires,
                reply,
            })
            .map_err(|_| BrokerError::Closed)?;
        wait.await.unwrap_or(Err(BrokerError::Closed))
    }
}
