//! Picking the broker by its URL's scheme: Redis (`redis://`, `rediss://`, `redis+sentinel://`, `unix://`) or
//! RabbitMQ (`amqp://`, `amqps://`, `pyamqp://`), both behind the `transport` seam. The one place that choice is made
//! for the client, the CLI, the coordinator and the API (`jobs::Connections`); the worker binary makes it with its
//! own retries and feature flag.

use std::sync::Arc;

use broker::Broker;
use broker_amqp::{AmqpOptions, AmqpTransport};
use transport::{SharedTransport, TransportError};

/// True for Celery's `rpc://` result backend (results sent to the caller's reply queue).
pub fn is_rpc_url(url: &str) -> bool {
    url == "rpc" || url.starts_with("rpc://")
}

/// A connected broker, with its concrete type for what only that broker offers (kombu's Redis lists, an `rpc://`
/// backend on the AMQP connection).
#[derive(Clone)]
pub enum BrokerConnection {
    Redis(Broker),
    Amqp(AmqpTransport),
}

impl BrokerConnection {
    /// The broker behind the transport seam.
    pub fn transport(&self) -> SharedTransport {
        match self {
            BrokerConnection::Redis(b) => Arc::new(b.clone()),
            BrokerConnection::Amqp(t) => Arc::new(t.clone()),
        }
    }
}

/// Connect to the broker at `url`. `amqp` shapes the queue declarations on RabbitMQ (ignored on Redis).
pub async fn broker(url: &str, amqp: AmqpOptions) -> Result<BrokerConnection, TransportError> {
    if broker_amqp::is_amqp_url(url) {
        Ok(BrokerConnection::Amqp(
            AmqpTransport::connect(url, amqp).await?,
        ))
    } else {
        Ok(BrokerConnection::Redis(Broker::connect(url).await?))
    }
}

/// [`broker`], behind the transport seam.
pub async fn transport(url: &str, amqp: AmqpOptions) -> Result<SharedTransport, TransportError> {
    Ok(broker(url, amqp).await?.transport())
}
