//! The queues consumed from, changed at run time (`celery control add_consumer` / `cancel_consumer`).

use serde_json::Value;

use super::{ControlContext, err, ok};

/// `add_consumer`: declare `queue` and start consuming from it.
pub(super) async fn add(ctx: &ControlContext, queue: &str) -> Value {
    if ctx.state.consumes(queue) {
        return ok(format!("already consuming from {queue}"));
    }
    if let Err(e) = ctx.transport.declare_queue(queue).await {
        return err(format!("could not declare queue {queue}: {e}"));
    }
    ctx.state.add_queue(queue);
    tracing::info!(queue, "started consuming from queue");
    ok(format!("add consumer {queue}"))
}

/// `cancel_consumer`: stop consuming from `queue`.
pub(super) fn cancel(ctx: &ControlContext, queue: &str) -> Value {
    ctx.state.remove_queue(queue);
    tracing::info!(queue, "stopped consuming from queue");
    ok(format!("no longer consuming from {queue}"))
}
