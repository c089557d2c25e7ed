//! The task API: how Rust code becomes a Celery task.
//!
//! A task is a name, parameter names (so Python positional and keyword arguments map onto them like a Python
//! signature), options (acks_late, time limits, rate limit, retries, ignore_result), and an async body that
//! returns `Result<Value, TaskError>`. The worker matches on `TaskError`; nothing is found by downcasting.
//!
//! ```ignore
//! registry.register(Task::new("celeriac.add", &["x", "y"], |_ctx, (x, y): (f64, f64)| async move {
//!     Ok(json!(x + y))
//! }));
//! ```

use celery_proto::ExceptionInfo;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::sync::Notify;

/// How a task ends other than with a value.
#[derive(Debug, Clone)]
pub enum TaskError {
    /// Fail with this Python exception (stored as FAILURE; Python re-raises it by module and type).
    Fail {
        exc: ExceptionInfo,
        traceback: Option<String>,
    },
    /// Retry later (Celery's `self.retry`): republished with the same id and `retries + 1`.
    Retry {
        countdown: Option<f64>,
        exc: Option<ExceptionInfo>,
        max_retries: Option<u32>,
    },
    /// Reject the message (Celery's `Reject`): requeue it or drop it.
    Reject { requeue: bool, reason: String },
}

impl TaskError {
    /// A failure with a builtin Python exception type, e.g. `TaskError::fail("ValueError", "bad input")`.
    pub fn fail(exc_type: &str, message: impl Into<String>) -> TaskError {
        TaskError::Fail {
            exc: ExceptionInfo::builtin(exc_type, message),
            traceback: None,
        }
    }

    /// Python's `TypeError`, used when arguments do not fit the task's parameters.
    pub fn type_error(message: impl Into<String>) -> TaskError {
        TaskError::fail("TypeError", message)
    }

    pub fn retry(countdown: f64) -> TaskError {
        TaskError::Retry {
            countdown: Some(countdown),
            exc: None,
            max_retries: None,
        }
    }
}

/// Why a running task was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Terminated,
    SoftTimeLimit,
}

/// A cancellation flag a task can poll or await (revoke with terminate, soft time limit).
#[derive(Debug, Default)]
pub struct StopSignal {
    stopped: AtomicBool,
    reason: std::sync::Mutex<Option<StopReason>>,
    notify: Notify,
}

impl StopSignal {
    pub fn stop(&self, reason: StopReason) {
        *self.reason.lock().expect("stop reason") = Some(reason);
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().expect("stop reason")
    }

    /// Resolves when the task is told to stop.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// Progress callback: publishes a custom state (e.g. `PROGRESS`) with meta to the result backend.
pub type ProgressFn = Arc<dyn Fn(&str, Value) + Send + Sync>;

/// What a running task knows about its request.
#[derive(Clone)]
pub struct TaskContext {
    pub id: String,
    pub name: String,
    pub retries: u32,
    pub hostname: String,
    pub stop: Arc<StopSignal>,
    progress: Option<ProgressFn>,
}

impl TaskContext {
    pub fn new(
        id: &str,
        name: &str,
        retries: u32,
        hostname: &str,
        progress: Option<ProgressFn>,
    ) -> TaskContext {
        TaskContext {
            id: id.to_string(),
            name: name.to_string(),
            retries,
            hostname: hostname.to_string(),
            stop: Arc::new(StopSignal::default()),
            progress,
        }
    }

    /// Report a custom state, like Python's `self.update_state(state="PROGRESS", meta={...})`.
    pub fn update_state(&self, state: &str, meta: Value) {
        if let Some(p) = &self.progress {
            p(state, meta);
        }
    }

    /// Return an error if the task has been told to stop, for cooperative CPU loops.
    pub fn check_stop(&self) -> Result<(), TaskError> {
        match self.stop.reason() {
            Some(StopReason::Terminated) => Err(TaskError::Fail {
                exc: ExceptionInfo::revoked("terminated"),
                traceback: None,
            }),
            Some(StopReason::SoftTimeLimit) => Err(TaskError::Fail {
                exc: ExceptionInfo::new(
                    "celery.exceptions",
                    "SoftTimeLimitExceeded",
                    "SoftTimeLimitExceeded()",
                ),
                traceback: None,
            }),
            None => Ok(()),
        }
    }
}

/// A parameter of a task signature; `default` makes it optional; `rest` collects the remaining keyword arguments
/// (Python's `**kwargs`) into one object.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: &'static str,
    pub default: Option<Value>,
    pub rest: bool,
}

/// Per-task options, mirroring Celery's task attributes.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    pub acks_late: bool,
    pub ignore_result: bool,
    /// (soft, hard) seconds.
    pub soft_time_limit: Option<f64>,
    pub time_limit: Option<f64>,
    /// Celery rate string: `10/s`, `100/m`, `5/h`.
    pub rate_limit: Option<String>,
    pub max_retries: Option<u32>,
    pub default_retry_delay: f64,
    pub track_started: bool,
}

pub type TaskFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;
type Body = Arc<dyn Fn(TaskContext, Vec<Value>, Map<String, Value>) -> TaskFuture + Send + Sync>;

/// A registered task.
#[derive(Clone)]
pub struct Task {
    pub name: String,
    pub params: Vec<Param>,
    pub options: TaskOptions,
    body: Body,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish()
    }
}

impl Task {
    /// A task whose parameters are named (`"x"`, `"exc_type=\"ValueError\""` with a JSON default, or a last
    /// `"**options"` that collects the other keyword arguments into an object) and whose arguments arrive as one
    /// deserialised tuple or struct `A`, bound like a Python signature with Python's `TypeError` messages.
    pub fn new<A, F, Fut>(name: &str, params: &[&'static str], f: F) -> Task
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(TaskContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        let params: Vec<Param> = params.iter().map(|p| parse_param(p)).collect();
        let sig = params.clone();
        let task_name = name.to_string();
        let f = Arc::new(f);
        let body: Body = Arc::new(move |ctx, args, kwargs| {
            let bound = bind_args(&task_name, &sig, args, kwargs);
            let f = f.clone();
            Box::pin(async move {
                let bound = bound?;
                // A task without parameters takes `()`, which serde reads from null, not from `[]`.
                let bound = if bound.is_empty() {
                    Value::Null
                } else {
                    Value::Array(bound)
                };
                let typed: A = serde_json::from_value(bound)
                    .map_err(|e| TaskError::type_error(format!("{}: {e}", ctx.name)))?;
                f(ctx, typed).await
            })
        });
        Task {
            name: name.to_string(),
            params,
            options: TaskOptions::default(),
            body,
        }
    }

    /// A task that takes the raw Python `*args, **kwargs`.
    pub fn raw<F, Fut>(name: &str, f: F) -> Task
    where
        F: Fn(TaskContext, Vec<Value>, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        let body: Body = Arc::new(move |ctx, args, kwargs| Box::pin(f(ctx, args, kwargs)));
        Task {
            name: name.to_string(),
            params: Vec::new(),
            options: TaskOptions::default(),
            body,
        }
    }

    /// A CPU-bound task: the closure runs on the blocking pool, off the async runtime.
    pub fn blocking<A, F>(name: &str, params: &[&'static str], f: F) -> Task
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(TaskContext, A) -> Result<Value, TaskError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        Task::new(name, params, move |ctx, args: A| {
            let f = f.clone();
            async move { run_blocking(move || f(ctx, args)).await }
        })
    }

    pub fn with_options(mut self, options: TaskOptions) -> Task {
        self.options = options;
        self
    }

    pub fn call(
        &self,
        ctx: TaskContext,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> TaskFuture {
        // A panic, in the call or in any poll of the body, fails the task as a raised exception fails a Python
        // task: FAILURE with a RuntimeError naming the panic (the panic hook still prints where it happened).
        match std::panic::catch_unwind(AssertUnwindSafe(|| (self.body)(ctx, args, kwargs))) {
            Ok(body) => Box::pin(CatchPanic(body)),
            Err(payload) => {
                let failure = panicked(payload.as_ref());
                Box::pin(async move { Err(failure) })
            }
        }
    }
}

/// A task body whose panics become failures.
struct CatchPanic(TaskFuture);

impl Future for CatchPanic {
    type Output = Result<Value, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(panicked(payload.as_ref()))),
        }
    }
}

/// The failure a panic becomes: `RuntimeError("task panicked: <message>")`.
fn panicked(payload: &(dyn std::any::Any + Send)) -> TaskError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    TaskError::fail("RuntimeError", format!("task panicked: {message}"))
}

fn parse_param(spec: &'static str) -> Param {
    if let Some(name) = spec.strip_prefix("**") {
        return Param {
            name,
            default: None,
            rest: true,
        };
    }
    match spec.split_once('=') {
        Some((name, default)) => Param {
            name,
            default: Some(
                serde_json::from_str(default)
                    .unwrap_or_else(|_| Value::String(default.to_string())),
            ),
            rest: false,
        },
        None => Param {
            name: spec,
            default: None,
            rest: false,
        },
    }
}

/// Map Python-style positional and keyword arguments onto named parameters, with Python's error messages.
pub fn bind_args(
    task: &str,
    params: &[Param],
    args: Vec<Value>,
    mut kwargs: Map<String, Value>,
) -> Result<Vec<Value>, TaskError> {
    let (params, rest) = match params.split_last() {
        Some((last, named)) if last.rest => (named, Some(last)),
        _ => (params, None),
    };
    if args.len() > params.len() {
        return Err(TaskError::type_error(format!(
            "{task}() takes {} positional arguments but {} were given",
            params.len(),
            args.len()
        )));
    }
    let mut out = Vec::with_capacity(params.len());
    let npos = args.len();
    out.extend(args);
    for p in &params[npos..] {
        match kwargs.remove(p.name).or_else(|| p.default.clone()) {
            Some(v) => out.push(v),
            None => {
                return Err(TaskError::type_error(format!(
                    "{task}() missing 1 required positional argument: '{}'",
                    p.name
                )));
            }
        }
    }
    for p in &params[..npos] {
        if kwargs.contains_key(p.name) {
            return Err(TaskError::type_error(format!(
                "{task}() got multiple values for argument '{}'",
                p.name
            )));
        }
    }
    if rest.is_some() {
        out.push(Value::Object(kwargs));
    } else if let Some(k) = kwargs.keys().next() {
        return Err(TaskError::type_error(format!(
            "{task}() got an unexpected keyword argument '{k}'"
        )));
    }
    Ok(out)
}

/// Run CPU-bound work on the blocking pool (off the async runtime); a panic becomes a `RuntimeError` failure.
pub async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TaskError> + Send + 'static,
) -> Result<T, TaskError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(TaskError::fail(
            "RuntimeError",
            format!("task panicked: {e}"),
        ))
    })
}

/// The tasks a worker can run, by name.
#[derive(Debug, Clone, Default)]
pub struct TaskRegistry {
    tasks: HashMap<String, Arc<Task>>,
}

impl TaskRegistry {
    pub fn new() -> TaskRegistry {
        TaskRegistry::default()
    }

    pub fn register(&mut self, task: Task) {
        self.tasks.insert(task.name.clone(), Arc::new(task));
    }

    pub fn get(&self, name: &str) -> Option<Arc<Task>> {
        self.tasks.get(name).cloned()
    }

    /// Task names, sorted (as `inspect registered` lists them).
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.tasks.keys().cloned().collect();
        n.sort();
        n
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Arc<Task>> {
        self.tasks.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(specs: &[&'static str]) -> Vec<Param> {
        specs.iter().map(|s| parse_param(s)).collect()
    }

    #[test]
    fn binds_like_python() {
        let p = params(&["message", "exc_type=\"ValueError\""]);
        let kw = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            bind_args("t", &p, vec![json!("m")], Map::new()).unwrap(),
            vec![json!("m"), json!("ValueError")]
        );
        assert_eq!(
            bind_args(
                "t",
                &p,
                vec![],
                kw(json!({"message": "m", "exc_type": "KeyError"}))
            )
            .unwrap(),
            vec![json!("m"), json!("KeyError")]
        );
        let err = |r: Result<Vec<Value>, TaskError>| match r {
            Err(TaskError::Fail { exc, .. }) => exc.message(),
            other => panic!("expected TypeError, got {other:?}"),
        };
        assert_eq!(
            err(bind_args("t", &p, vec![], Map::new())),
            "t() missing 1 required positional argument: 'message'"
        );
        assert_eq!(
            err(bind_args(
                "t",
                &p,
                vec![json!(1), json!(2), json!(3)],
                Map::new()
            )),
            "t() takes 2 positional arguments but 3 were given"
        );
        assert_eq!(
            err(bind_args(
                "t",
                &p,
                vec![json!(1)],
                kw(json!({"message": 2}))
            )),
            "t() got multiple values for argument 'message'"
        );
        assert_eq!(
            err(bind_args("t", &p, vec![json!(1)], kw(json!({"nope": 2})))),
            "t() got an unexpected keyword argument 'nope'"
        );
        // `**rest` collects what no named parameter took, and does not count as a positional parameter.
        let p = params(&["sensor=null", "window=\"7d\"", "**thresholds"]);
        assert_eq!(
            bind_args("t", &p, vec![json!("s")], kw(json!({"min_count": 3}))).unwrap(),
            vec![json!("s"), json!("7d"), json!({"min_count": 3})]
        );
        assert_eq!(
            err(bind_args(
                "t",
                &p,
                vec![json!(1), json!(2), json!(3)],
                Map::new()
            )),
            "t() takes 2 positional arguments but 3 were given"
        );
    }

    #[tokio::test]
    async fn typed_task_runs_and_rejects_bad_types() {
        let t = Task::new("add", &["x", "y"], |_c, (x, y): (f64, f64)| async move {
            Ok(json!(x + y))
        });
        let ctx = || TaskContext::new("id", "add", 0, "w@h", None);
        assert_eq!(
            t.call(ctx(), vec![json!(2), json!(3.5)], Map::new())
                .await
                .unwrap(),
            json!(5.5)
        );
        assert!(matches!(
            t.call(ctx(), vec![json!("a"), json!(1)], Map::new()).await,
            Err(TaskError::Fail { .. })
        ));
    }
}
