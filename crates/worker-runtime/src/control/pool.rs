//! The execution pool's size (`celery control pool_grow` / `pool_shrink`), and the pool commands celeriac
//! declines as a Celery worker without autoscaler or restartable pool does (`autoscale`, `pool_restart`).

use serde_json::Value;

use super::{ControlContext, err, ok};

/// `pool_grow`: `n` more concurrent slots.
pub(super) fn grow(ctx: &ControlContext, n: usize) -> Value {
    ctx.pool.grow(n);
    tracing::info!(n, "pool grown");
    ok("pool will grow")
}

/// `pool_shrink`: up to `n` fewer slots (never below one).
pub(super) fn shrink(ctx: &ControlContext, n: usize) -> Value {
    let n = ctx.pool.shrink(n);
    tracing::info!(n, "pool shrunk");
    ok("pool will shrink")
}

/// `autoscale`: Celery's answer without `--autoscale`.
pub(super) fn autoscale() -> Value {
    err("ValueError('Autoscale not enabled')")
}

/// `pool_restart`: Celery's answer without `worker_pool_restarts`.
pub(super) fn restart() -> Value {
    err("ValueError('Pool restarts not enabled')")
}
