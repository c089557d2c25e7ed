//! Chord joins on the Redis backend, as Celery 5.7 does them: every finished header task adds
//! `[1, id, state, result]` to `celery-taskset-meta-<group>.j`; the one that completes the set claims the chord and
//! applies the body with the list of results (or stores a `ChordError` on the body when a header task failed).
//! The keys and the claim are the same as Python's, so one chord can span Python and Rust workers.

use celery_proto::{ExceptionInfo, ResultMeta, Signature, State, TaskMessage};
use serde_json::{Value, json};

use transport::{ChordPart, ResultBackend, Transport};

/// Called after a header task's result was stored; results expire after `expires` seconds.
pub(crate) async fn part_return(
    backend: &dyn ResultBackend,
    broker: &dyn Transport,
    expires: u64,
    req: &TaskMessage,
    state: &State,
    result: &Value,
) {
    let (Some(body), Some(gid)) = (&req.embed.chord, &req.group) else {
        return;
    };
    let value = celery_proto::json::to_py_json(&json!([1, req.id, state.as_str(), result]));
    let token = uuid::Uuid::new_v4().simple().to_string();
    let part = ChordPart {
        group_id: gid,
        task_id: &req.id,
        value: &value,
        group_index: req.group_index,
        expires_secs: expires,
        token: &token,
    };
    let claimed = match backend.chord_join(part).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(group = %gid, id = %req.id, error = %e, "chord join failed");
            return;
        }
    };
    if !claimed {
        return;
    }
    let Some(sig) = Signature::from_value(body) else {
        tracing::error!(group = %gid, "chord body is not a signature: {body}");
        return;
    };
    let parts = match backend.chord_results(gid).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(group = %gid, error = %e, "could not read the chord's results");
            return;
        }
    };
    let mut values = Vec::with_capacity(parts.len());
    let mut failed = None;
    for raw in &parts {
        let v: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
        let st = v.get(2).and_then(Value::as_str).unwrap_or("");
        if st == "FAILURE" || st == "REVOKED" {
            let tid = v.get(1).and_then(Value::as_str).unwrap_or("?").to_string();
            let exc = v
                .get(3)
                .and_then(ExceptionInfo::from_value)
                .map(|e| e.repr())
                .unwrap_or_else(|| st.to_string());
            failed.get_or_insert((tid, exc));
        }
        values.push(v.get(3).cloned().unwrap_or(Value::Null));
    }
    match failed {
        Some((tid, exc)) => {
            // Celery marks the body FAILURE with ChordError and does not run it.
            let body_id = sig
                .options
                .get("task_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let err = ExceptionInfo::new(
                "celery.exceptions",
                "ChordError",
                format!("Dependency {tid} raised {exc}"),
            );
            let meta = ResultMeta::new(&body_id, State::Failure, err.to_value());
            if let Err(e) = backend
                .store((&body_id).into(), &meta.encode(), expires)
                .await
            {
                tracing::error!(group = %gid, error = %e, "could not store the chord error");
            }
        }
        None => {
            let next = sig.to_request(Some(&Value::Array(values)), "celery");
            if let Err(e) = broker.publish(&next.queue, &next.envelope()).await {
                tracing::error!(group = %gid, error = %e, "could not apply the chord body; the chord stays claimed until its claim expires");
                return;
            }
        }
    }
    if let Err(e) = backend.chord_done(gid, &token, expires).await {
        tracing::warn!(group = %gid, error = %e, "could not clean up the chord's join keys");
    }
}
