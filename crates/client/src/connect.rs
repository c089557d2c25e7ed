//! Picking the broker by its URL's scheme: Redis (`redis://`, `rediss://`, `redis+sentinel://`, `unix://`) or
//! RabbitMQ (`amqp://`, `amqps://`, `pyamqp://`), both behind the `transport` seam. Used by the client and the CLI.

use std::sync::Arc;

use broker::Broker;
use broker_amqp::{AmqpOptions, AmqpTransport};
use transport::{SharedTransport, TransportError};

/// True for Celery's `rpc://` result backend (results sent to the caller's reply queue).
pub fn is_rpc_url(url: &str) -> bool {
    url == "rpc" || url.starts_with("rpc://")
}

/// Connect to the broker at `url`. `amqp` shapes the queue declarations on RabbitMQ (ignored on Redis).
pub async fn transport(url: &str, amqp: AmqpOptions) -> Result<SharedTransport, TransportError> {
    Ok(transport_with_amqp(url, amqp).await?.0)
}

/// [`transport`], also returning the AMQP transport itself when the broker is RabbitMQ (an `rpc://` backend shares
/// its connection).
pub(crate) async fn transport_with_amqp(
    url: &str,
    amqp: AmqpOptions,
) -> Result<(SharedTransport, Option<AmqpTransport>), TransportError> {
    if broker_amqp::is_amqp_url(url) {
        let t = AmqpTransport::connect(url, amqp).await?;
        Ok((Arc::new(t.clone()), Some(t)))
    } else {
        Ok((Arc::new(Broker::connect(url).await?), None))
    }
}
