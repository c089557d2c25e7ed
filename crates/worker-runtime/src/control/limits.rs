//! Per-task limits set at run time (`celery control rate_limit` / `time_limit`), for registered tasks only.

use serde_json::Value;

use super::{ControlContext, err, ok};

/// `{"error": "unknown task"}` (logged) when `task` is not registered; `None` when it is. `method` is the command
/// asking, `rate_limit` or `time_limit`.
pub(super) fn unknown_task(ctx: &ControlContext, method: &str, task: &str) -> Option<Value> {
    if ctx.registry.get(task).is_some() {
        return None;
    }
    match method {
        "rate_limit" => tracing::error!(task, "rate limit attempt for unknown task"),
        _ => tracing::error!(task, "change time limit attempt for unknown task"),
    }
    Some(err("unknown task"))
}

/// `rate_limit`: a Celery rate string (`10/m`) for `task`; `None`, empty or `0` disables its limit.
pub(super) fn rate_limit(ctx: &ControlContext, task: &str, limit: Option<&str>) -> Value {
    if let Some(unknown) = unknown_task(ctx, "rate_limit", task) {
        return unknown;
    }
    let parsed = match limit.map(crate::ratelimit::parse_rate) {
        None => None,
        Some(Ok(p)) => p,
        Some(Err(e)) => return err(e),
    };
    match parsed {
        None => {
            ctx.state.set_rate_limit(task, None);
            tracing::info!(task, "rate limits disabled");
            ok("rate limit disabled successfully")
        }
        Some(_) => {
            ctx.state.set_rate_limit(task, limit.map(str::to_string));
            tracing::info!(task, limit = ?limit, "new rate limit set");
            ok("new rate limit set successfully")
        }
    }
}

/// `time_limit`: soft and hard limits in seconds for `task` (`None` removes one).
pub(super) fn time_limit(
    ctx: &ControlContext,
    task: &str,
    soft: Option<f64>,
    hard: Option<f64>,
) -> Value {
    if let Some(unknown) = unknown_task(ctx, "time_limit", task) {
        return unknown;
    }
    ctx.state.set_time_limits(task, (soft, hard));
    tracing::info!(task, ?soft, ?hard, "new time limits");
    ok("time limits set successfully")
}
