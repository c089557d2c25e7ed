//! The built-in `celeriac.*` tasks of `system.md`, which outside tests call by name.

use serde_json::{Value, json};
use std::time::Duration;

use crate::task::{Task, TaskError, TaskRegistry};

/// Register `celeriac.ping`, `celeriac.echo`, `celeriac.add`, `celeriac.sleep`, `celeriac.fail`, plus
/// `celeriac.noop` (benchmarks) and `celeriac.flaky` (retry demos).
pub fn register(reg: &mut TaskRegistry) {
    reg.register(Task::new("celeriac.ping", &[], |_ctx, (): ()| async {
        Ok(json!("pong"))
    }));
    // The benchmarks' task: does nothing and returns None, like `tasks.noop` on the Python side.
    reg.register(Task::new("celeriac.noop", &[], |_ctx, (): ()| async {
        Ok(Value::Null)
    }));
    reg.register(Task::raw(
        "celeriac.echo",
        |_ctx, args, kwargs| async move { Ok(json!({"args": args, "kwargs": kwargs})) },
    ));
    reg.register(Task::new(
        "celeriac.add",
        &["x", "y"],
        |_ctx, (x, y): (Value, Value)| async move { add(&x, &y) },
    ));
    reg.register(Task::new(
        "celeriac.sleep",
        &["seconds"],
        |ctx, (seconds,): (f64,)| async move {
            if !(0.0..=86_400.0).contains(&seconds) {
                return Err(TaskError::fail(
                    "ValueError",
                    format!("seconds must be between 0 and 86400, got {seconds}"),
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
                _ = ctx.stop.wait() => ctx.check_stop()?,
            }
            Ok(json!(seconds))
        },
    ));
    reg.register(Task::new(
        "celeriac.fail",
        &["message", "exc_type=\"ValueError\""],
        |_ctx, (message, exc_type): (String, String)| async move {
            Err::<Value, _>(TaskError::fail(&exc_type, message))
        },
    ));
    reg.register(Task::new(
        "celeriac.flaky",
        &["succeed_on=1", "countdown=0.1"],
        |ctx, (succeed_on, countdown): (u32, f64)| async move {
            if ctx.retries >= succeed_on {
                Ok(json!(format!("ok after {} retries", ctx.retries)))
            } else {
                Err(TaskError::Retry {
                    countdown: Some(countdown),
                    exc: Some(celery_proto::ExceptionInfo::builtin(
                        "ValueError",
                        format!("try again #{}", ctx.retries),
                    )),
                    max_retries: Some(5),
                })
            }
        },
    ));
}

/// `x + y` with Python's number semantics: int + int stays an int, otherwise float.
fn add(x: &Value, y: &Value) -> Result<Value, TaskError> {
    match (x, y) {
        (Value::Number(a), Value::Number(b)) => {
            if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
                return Ok(a
                    .checked_add(b)
                    .map(Value::from)
                    .unwrap_or_else(|| json!(a as f64 + b as f64)));
            }
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            Ok(json!(a + b))
        }
        (Value::String(a), Value::String(b)) => Ok(json!(format!("{a}{b}"))),
        (Value::Array(a), Value::Array(b)) => Ok(json!([a.as_slice(), b.as_slice()].concat())),
        _ => Err(TaskError::type_error(format!(
            "unsupported operand type(s) for +: '{}' and '{}'",
            py_type(x),
            py_type(y)
        ))),
    }
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_builtin_is_registered() {
        let mut reg = TaskRegistry::new();
        register(&mut reg);
        for name in [
            "celeriac.ping",
            "celeriac.noop",
            "celeriac.echo",
            "celeriac.add",
            "celeriac.sleep",
            "celeriac.fail",
            "celeriac.flaky",
        ] {
            assert!(reg.get(name).is_some(), "{name} is not registered");
        }
    }

    #[test]
    fn add_follows_python() {
        assert_eq!(add(&json!(2), &json!(3)).unwrap(), json!(5));
        assert_eq!(add(&json!(2), &json!(0.5)).unwrap(), json!(2.5));
        assert_eq!(add(&json!("a"), &json!("b")).unwrap(), json!("ab"));
        assert!(add(&json!(1), &json!("b")).is_err());
    }
}
