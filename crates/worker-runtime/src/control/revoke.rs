//! Revoking (`celery control revoke` / `terminate` / `revoke_by_stamped_headers`): flag ids as revoked, stop the
//! requests this worker holds, and store REVOKED for ids it never saw.

use celery_proto::pyrepr::repr;
use celery_proto::{ExceptionInfo, ResultMeta, State};
use serde_json::{Map, Value, json};

use super::{ControlContext, ok};
use crate::state::Phase;
use crate::task::StopReason;

/// `revoke` / `terminate`: flag ids as revoked, stop reserved/scheduled ones, terminate active ones when asked,
/// and store REVOKED for ids this worker does not hold (unless already SUCCESS).
pub(super) async fn revoke(ctx: &ControlContext, ids: &[String], terminate: bool) -> Value {
    let state = &ctx.state;
    let mut terminated = Vec::new();
    let mut untracked = Vec::new();
    for id in ids {
        state.revoke(id);
        let tracked = state.requests.by_id(id).into_iter().next();
        match tracked {
            Some((Phase::Active, stop)) => {
                if terminate {
                    stop.stop(StopReason::Terminated);
                    terminated.push(id.clone());
                }
            }
            Some((_, stop)) => stop.stop(StopReason::Terminated),
            None => untracked.push(id.clone()),
        }
    }
    for id in &untracked {
        let mut meta = ResultMeta::new(
            id,
            State::Revoked,
            ExceptionInfo::revoked("revoked").to_value(),
        );
        meta.children = Value::Null;
        if let Err(e) = ctx
            .backend
            .store(id.into(), &meta.encode(), ctx.config.result_expires)
            .await
        {
            tracing::warn!(id = %id, error = %e, "could not store REVOKED state");
        }
    }
    tracing::info!(ids = ?ids, terminate, "tasks flagged as revoked");
    if terminate {
        if terminated.is_empty() {
            ok("terminate: tasks unknown")
        } else {
            ok(format!("terminate: {}", terminated.join(", ")))
        }
    } else {
        let set: Vec<String> = ids.iter().map(|i| repr(&json!(i))).collect();
        ok(format!("tasks {{{}}} flagged as revoked", set.join(", ")))
    }
}

/// `revoke_by_stamped_headers`: revoke the requests with a stamp matching one of `headers` (a value or a list of
/// values per stamp); reserved/scheduled ones stop, active ones only with `terminate`.
pub(super) fn revoke_by_stamped_headers(
    ctx: &ControlContext,
    headers: &Map<String, Value>,
    terminate: bool,
) -> Value {
    let wanted = |stamps: &Map<String, Value>| {
        headers.iter().any(|(k, v)| {
            let Some(have) = stamps.get(k) else {
                return false;
            };
            let values: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            values.iter().any(|want| match have {
                Value::Array(h) => h.contains(want),
                single => single == *want,
            })
        })
    };
    let state = &ctx.state;
    let hits = state.requests.matching(|info| wanted(&info.stamps));
    let mut terminated = 0;
    for (id, phase, stop) in &hits {
        state.revoke(id);
        if *phase != Phase::Active {
            stop.stop(StopReason::Terminated);
        } else if terminate {
            stop.stop(StopReason::Terminated);
            terminated += 1;
        }
    }
    let shown = repr(&Value::Object(headers.clone()));
    if !terminate {
        ok(format!(
            "headers {shown} flagged as revoked, but not terminated"
        ))
    } else if terminated > 0 {
        ok(format!("headers {shown} revoked"))
    } else {
        ok(format!("headers {shown} were not terminated"))
    }
}
