//! Mingle at start-up (Celery's `Mingle` bootstep): broadcast `hello` with our revoked ids, wait one second for
//! peers, adopt their revoked ids and move our clock past theirs. Revoked timestamps travel as floats
//! (`{id: [float, id]}`), because a Python peer's `LimitedSet.update` rejects integers.

use celeriac_control::ControlClient;
use celery_proto::command::ControlCommand;
use serde_json::Value;
use std::time::Duration;
use transport::SharedTransport;

use crate::state::WorkerState;

/// Merge a peer's revoked ids (`{id: [ts, id]}`, `{id: ts}` or `[id, ...]`) into ours; returns how many were new.
pub fn merge_revoked(state: &WorkerState, revoked: &Value) -> usize {
    let mut added = 0;
    let mut add = |id: &str, ts: Option<f64>| {
        if state.adopt_revoked(id, ts.unwrap_or(1.0)) {
            added += 1;
        }
    };
    match revoked {
        Value::Object(m) => {
            for (id, v) in m {
                let ts = match v {
                    Value::Array(a) => a.first().and_then(Value::as_f64),
                    other => other.as_f64(),
                };
                add(id, ts);
            }
        }
        Value::Array(ids) => {
            for id in ids.iter().filter_map(Value::as_str) {
                add(id, None);
            }
        }
        _ => {}
    }
    added
}

/// Run mingle; logs what it learned. Never fails the start-up: an error is logged and the worker goes on.
pub async fn sync(transport: SharedTransport, state: &WorkerState) {
    let client = ControlClient::new(transport);
    let hello = ControlCommand::Hello {
        from_node: state.hostname.clone(),
        revoked: Value::Object(state.revoked_for_mingle()),
    };
    let replies = match client
        .send_command(&hello, None, Duration::from_secs(1), None)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "mingle failed; starting without peers' state");
            return;
        }
    };
    let mut peers = Vec::new();
    for (node, value) in replies {
        if node == state.hostname || value.is_null() {
            continue;
        }
        if let Some(r) = value.get("revoked") {
            merge_revoked(state, r);
        }
        if let Some(c) = value.get("clock").and_then(Value::as_u64) {
            state.clock.adjust(c);
        }
        peers.push(node);
    }
    if peers.is_empty() {
        tracing::info!("mingle: all alone");
    } else {
        tracing::info!(peers = ?peers, "mingle: sync with {} nodes", peers.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_every_form_and_keeps_floats() {
        let s = WorkerState::new("me@h", vec![], false);
        assert_eq!(merge_revoked(&s, &json!({"a": [12.5, "a"], "b": 3.0})), 2);
        assert_eq!(merge_revoked(&s, &json!(["b", "c"])), 1);
        assert!(s.is_revoked("a") && s.is_revoked("c"));
        let m = s.revoked_for_mingle();
        assert!(m.values().all(|v| v[0].is_f64()));
        assert_eq!(m["a"][0], 12.5);
    }
}
