//! The API's Redis connection, made lazily: the API starts and answers statistics while Redis is down, connects in
//! the background with backoff, and from then on relies on the connection manager's own reconnects.

use broker::{Broker, BrokerError};
use std::sync::RwLock;
use std::time::Duration;
use tokio::sync::watch;

pub struct RedisHandle {
    url: String,
    current: RwLock<Option<Broker>>,
}

impl RedisHandle {
    pub fn new(url: &str) -> RedisHandle {
        RedisHandle {
            url: url.to_string(),
            current: RwLock::new(None),
        }
    }

    /// The broker, once connected.
    pub fn get(&self) -> Option<Broker> {
        self.current.read().expect("redis handle").clone()
    }

    /// Count a transient error (the connection manager reconnects by itself).
    pub fn note_error(&self, e: &BrokerError) {
        if let Some(b) = self.get() {
            b.note_connection_error(e);
        }
    }

    /// Connect, retrying with backoff (0.5 s doubling to 10 s) until it works or `shutdown`; returns the broker.
    pub async fn connect(&self, mut shutdown: watch::Receiver<bool>) -> Option<Broker> {
        if let Some(b) = self.get() {
            return Some(b);
        }
        let mut backoff =
            transport::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let mut warned = false;
        loop {
            match Broker::connect(&self.url).await {
                Ok(b) => {
                    if warned {
                        tracing::info!(url = %broker::redact(&self.url), "connected to Redis");
                    }
                    *self.current.write().expect("redis handle") = Some(b.clone());
                    return Some(b);
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(url = %broker::redact(&self.url), error = %e,
                            "Redis unavailable; statistics answer without rate limits, job submission is refused until it connects");
                        warned = true;
                    }
                }
            }
            tokio::select! {
                _ = backoff.wait() => {}
                _ = shutdown.changed() => return None,
            }
        }
    }
}
