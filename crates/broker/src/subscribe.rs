//! One pub/sub connection shared by many waiters: `subscribe(channel)` hands back a receiver of that channel's
//! payloads. Used to wait for task results (`celery-task-meta-<id>` channels) the way Celery's
//! `ResultConsumer` does: subscribe first, then publish, then GET to catch results stored in between.

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use crate::{Broker, Result};

type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Vec<u8>>>>>;

pub struct Subscriber {
    sink: tokio::sync::Mutex<PubSubSink>,
    routes: Routes,
    reader: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn new(broker: &Broker) -> Result<Subscriber> {
        let (sink, mut stream) = broker.pubsub().await?.split();
        let routes: Routes = Arc::default();
        let r = routes.clone();
        let reader = tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let channel = msg.get_channel_name().to_string();
                let payload = msg.get_payload_bytes().to_vec();
                let tx = r.lock().expect("routes").get(&channel).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send(payload);
                }
            }
            // Connection closed: drop the senders so waiters fall back to polling.
            r.lock().expect("routes").clear();
        });
        Ok(Subscriber {
            sink: tokio::sync::Mutex::new(sink),
            routes,
            reader,
        })
    }

    /// Subscribe to a channel; messages published on it arrive on the returned receiver.
    pub async fn subscribe(&self, channel: &str) -> Result<mpsc::UnboundedReceiver<Vec<u8>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .expect("routes")
            .insert(channel.to_string(), tx);
        self.sink.lock().await.subscribe(channel).await?;
        Ok(rx)
    }

    pub async fn unsubscribe(&self, channel: &str) {
        self.routes.lock().expect("routes").remove(channel);
        let _ = self.sink.lock().await.unsubscribe(channel).await;
    }

    /// Is the reader still connected?
    pub fn is_alive(&self) -> bool {
        !self.reader.is_finished()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
