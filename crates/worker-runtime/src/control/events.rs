//! The worker's events, steered remotely: task events on and off (`enable_events` / `disable_events`) and an
//! immediate heartbeat (`heartbeat`).

use serde_json::Value;

use super::{ControlContext, ok};

/// `enable_events`.
pub(super) fn enable(ctx: &ControlContext) -> Value {
    if ctx.state.set_task_events(true) {
        ok("task events already enabled")
    } else {
        tracing::info!("task events enabled by remote control");
        ok("task events enabled")
    }
}

/// `disable_events`.
pub(super) fn disable(ctx: &ControlContext) -> Value {
    if ctx.state.set_task_events(false) {
        tracing::info!("task events disabled by remote control");
        ok("task events disabled")
    } else {
        ok("task events already disabled")
    }
}

/// `heartbeat`: send a `worker-heartbeat` now; replies `None`.
pub(super) async fn heartbeat(ctx: &ControlContext) -> Value {
    ctx.events.heartbeat_wakeup().await;
    Value::Null
}
