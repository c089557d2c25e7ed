//! Result backend values: the `celery-task-meta-<id>` JSON and exceptions as Celery's JSON serializer writes them.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::json::to_py_json;
use crate::state::State;
use crate::time::isoformat;

/// An exception as `{exc_type, exc_message, exc_module}`; Python rebuilds it as `module.type(*exc_message)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionInfo {
    pub exc_type: String,
    pub exc_message: Vec<Value>,
    pub exc_module: String,
}

impl ExceptionInfo {
    /// An exception of a Python builtin type, e.g. `ValueError("boom")`.
    pub fn builtin(exc_type: &str, message: impl Into<String>) -> ExceptionInfo {
        ExceptionInfo::new("builtins", exc_type, message)
    }

    pub fn new(module: &str, exc_type: &str, message: impl Into<String>) -> ExceptionInfo {
        ExceptionInfo {
            exc_type: exc_type.to_string(),
            exc_message: vec![Value::String(message.into())],
            exc_module: module.to_string(),
        }
    }

    /// `celery.exceptions.TaskRevokedError(reason)` with reason `revoked`, `terminated` or `expired`.
    pub fn revoked(reason: &str) -> ExceptionInfo {
        ExceptionInfo::new("celery.exceptions", "TaskRevokedError", reason)
    }

    /// `celery.exceptions.NotRegistered(name)`.
    pub fn not_registered(name: &str) -> ExceptionInfo {
        ExceptionInfo::new("celery.exceptions", "NotRegistered", name)
    }

    pub fn to_value(&self) -> Value {
        json!({"exc_type": self.exc_type, "exc_message": self.exc_message, "exc_module": self.exc_module})
    }

    /// Read an exception dict back; `None` if the value is not one.
    pub fn from_value(v: &Value) -> Option<ExceptionInfo> {
        let exc_type = v.get("exc_type")?.as_str()?.to_string();
        let exc_message = match v.get("exc_message") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => vec![other.clone()],
        };
        let exc_module = v
            .get("exc_module")
            .and_then(Value::as_str)
            .unwrap_or("builtins")
            .to_string();
        Some(ExceptionInfo {
            exc_type,
            exc_message,
            exc_module,
        })
    }

    /// Python's `repr(exc)`, as events carry it: `ValueError('boom')`.
    pub fn repr(&self) -> String {
        let args: Vec<String> = self.exc_message.iter().map(crate::pyrepr::repr).collect();
        format!("{}({})", self.exc_type, args.join(", "))
    }

    /// Python's `str(exc)`.
    pub fn message(&self) -> String {
        match self.exc_message.as_slice() {
            [] => String::new(),
            [Value::String(s)] => s.clone(),
            [one] => crate::pyrepr::repr(one),
            many => crate::pyrepr::py_repr_tuple(many),
        }
    }
}

/// Fields `result_extended=True` adds.
#[derive(Debug, Clone, PartialEq)]
pub struct Extended {
    pub name: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub worker: String,
    pub retries: u32,
    pub queue: String,
}

/// The value of `celery-task-meta-<id>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMeta {
    pub task_id: String,
    pub status: State,
    /// The return value, the exception dict, or `{pid, hostname}` for STARTED, or progress meta.
    pub result: Value,
    pub traceback: Option<String>,
    /// `[]` normally, `null` for revokes from a control command, or child tuples.
    pub children: Value,
    pub date_done: Option<DateTime<Utc>>,
    pub group_id: Option<String>,
    pub parent_id: Option<String>,
    pub extended: Option<Extended>,
}

impl ResultMeta {
    pub fn new(task_id: &str, status: State, result: Value) -> ResultMeta {
        let date_done = status.is_ready().then(Utc::now);
        ResultMeta {
            task_id: task_id.to_string(),
            status,
            result,
            traceback: None,
            children: json!([]),
            date_done,
            group_id: None,
            parent_id: None,
            extended: None,
        }
    }

    /// The meta as a JSON object in Celery's key order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("status".into(), json!(self.status.as_str()));
        m.insert("result".into(), self.result.clone());
        m.insert("traceback".into(), json!(self.traceback));
        m.insert("children".into(), self.children.clone());
        m.insert(
            "date_done".into(),
            self.date_done
                .map(|d| json!(isoformat(d)))
                .unwrap_or(Value::Null),
        );
        if let Some(g) = &self.group_id {
            m.insert("group_id".into(), json!(g));
        }
        if let Some(p) = &self.parent_id {
            m.insert("parent_id".into(), json!(p));
        }
        if let Some(e) = &self.extended {
            m.insert("name".into(), json!(e.name));
            m.insert("args".into(), json!(e.args));
            m.insert("kwargs".into(), json!(e.kwargs));
            m.insert("worker".into(), json!(e.worker));
            m.insert("retries".into(), json!(e.retries));
            m.insert("queue".into(), json!(e.queue));
        }
        m.insert("task_id".into(), json!(self.task_id));
        Value::Object(m)
    }

    pub fn encode(&self) -> Vec<u8> {
        to_py_json(&self.to_value())
    }

    /// Parse a stored meta. Unknown keys are ignored; a missing status means PENDING.
    pub fn decode(raw: &[u8]) -> Result<ResultMeta, serde_json::Error> {
        let v: Value = serde_json::from_slice(raw)?;
        let status = State::from(
            v.get("status")
                .and_then(Value::as_str)
                .unwrap_or("PENDING")
                .to_string(),
        );
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(ResultMeta {
            task_id: s("task_id").unwrap_or_default(),
            status,
            result: v.get("result").cloned().unwrap_or(Value::Null),
            traceback: s("traceback"),
            children: v.get("children").cloned().unwrap_or(Value::Null),
            date_done: s("date_done").and_then(|d| crate::time::parse_iso(&d)),
            group_id: s("group_id"),
            parent_id: s("parent_id"),
            extended: match (s("name"), s("worker")) {
                (Some(name), Some(worker)) => Some(Extended {
                    name,
                    worker,
                    args: v
                        .get("args")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    kwargs: v
                        .get("kwargs")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                    retries: v.get("retries").and_then(Value::as_u64).unwrap_or(0) as u32,
                    queue: s("queue").unwrap_or_default(),
                }),
                _ => None,
            },
        })
    }

    /// The exception of a FAILURE/RETRY/REVOKED meta.
    pub fn exception(&self) -> Option<ExceptionInfo> {
        ExceptionInfo::from_value(&self.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_repr_and_message() {
        let e = ExceptionInfo::builtin("ValueError", "bad value 'x'");
        assert_eq!(e.repr(), "ValueError(\"bad value 'x'\")");
        assert_eq!(e.message(), "bad value 'x'");
        assert_eq!(ExceptionInfo::from_value(&e.to_value()), Some(e));
    }

    #[test]
    fn meta_key_order_matches_celery() {
        let mut m = ResultMeta::new("t1", State::Success, json!(5));
        m.date_done = crate::time::parse_iso("2026-11-22T05:37:51.112851+00:00");
        m.parent_id = Some("p".into());
        let s = String::from_utf8(m.encode()).unwrap();
        assert_eq!(
            s,
            r#"{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-22T05:37:51.112851+00:00", "parent_id": "p", "task_id": "t1"}"#
        );
    }
}
