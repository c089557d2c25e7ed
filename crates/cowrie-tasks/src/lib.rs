//! The cowrieprocessor analyses as Celery tasks, under the names Python users already call:
//! `cowrieprocessor.workers.longtail_analysis`, `.snowshoe_detection` and `.botnet_detection`.
//!
//! This crate owns those three tasks (their signatures, results, progress and errors), where they read and write
//! ([`AnalysisDb`]: the primary, an optional read replica, and whether the analysis schema is ready), and the
//! background preparation of that schema ([`spawn_prepare`]). It builds on `worker-runtime`'s public task API only;
//! the runtime knows nothing of Cowrie or PostgreSQL. A binary wires it in with:
//!
//! ```ignore
//! let db = cowrie_tasks::AnalysisDb::new(&database_url, database_read_url.as_deref());
//! cowrie_tasks::register(&mut registry, db.clone());
//! cowrie_tasks::spawn_prepare(db);
//! ```
//!
//! Arguments are `(sensor=None, time_window="7d", **thresholds)`: `sensor` may be null, `""` or `"*"` for all
//! sensors; `time_window` is `"7d"`, `"24h"`, `"90m"` or `{"start": iso, "end": iso}`; thresholds are keyword
//! arguments named like the original's. Sessions are read from PostgreSQL (the read replica when
//! `DATABASE_READ_URL` is set and answers), the CPU work runs on the blocking pool, progress is published as Celery
//! `PROGRESS` state (`AsyncResult.info`), results are stored in the detection tables and returned as the original's
//! result objects.
//!
//! Migrations never run inside a task: [`spawn_prepare`] migrates in the background, retrying with backoff, so a
//! worker without PostgreSQL still starts. Until the schema is ready the tasks fail with
//! `sqlalchemy.exc.OperationalError("database unavailable: analysis schema not ready: <last error>")`.
//!
//! Longtail is incremental: each full UTC day of the window is reduced to an `analysis::DayAggregate` cached in
//! `longtail_day_cache`, keyed by a fingerprint of that day's sessions; a re-run recomputes only changed days and
//! says in its result how much it reused.

mod longtail;
mod readiness;

use analysis::{BotnetParams, Progress, Session, SnowshoeParams};
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worker_runtime::task::run_blocking;
use worker_runtime::{Task, TaskContext, TaskError, TaskOptions, TaskRegistry};

use readiness::Readiness;
pub use readiness::SchemaState;

pub const LONGTAIL: &str = "cowrieprocessor.workers.longtail_analysis";
pub const SNOWSHOE: &str = "cowrieprocessor.workers.snowshoe_detection";
pub const BOTNET: &str = "cowrieprocessor.workers.botnet_detection";
/// The chord header task of a fanned-out longtail: one UTC day reduced to its cached aggregate.
pub const LONGTAIL_DAY: &str = "cowrieprocessor.workers.longtail_day";
/// The chord body of a fanned-out longtail: the window's result from the cached days.
pub const LONGTAIL_MERGE: &str = "cowrieprocessor.workers.longtail_merge";

/// How many threads the analyses' parallel loops use (0 until [`set_cpu_threads`]: then the machine's cores).
static CPU_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static CPU_POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();

/// Bound the analyses' parallel loops to `n` threads (the worker's concurrency: a task's CPU work never takes more
/// cores than the worker was given). Takes effect if called before the first analysis runs; later calls are ignored.
pub fn set_cpu_threads(n: usize) {
    CPU_THREADS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// Runs `f` in the analyses' rayon pool with the caller's tokio runtime entered, so progress reports (which publish
/// through the runtime) work from the pool's threads. Call it from a blocking-pool thread.
pub(crate) fn on_cpu<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let handle = tokio::runtime::Handle::try_current().ok();
    cpu().install(move || {
        let _entered = handle.as_ref().map(|h| h.enter());
        f()
    })
}

/// The rayon pool every analysis runs in (see [`set_cpu_threads`]); concurrent tasks share its threads.
pub(crate) fn cpu() -> &'static rayon::ThreadPool {
    CPU_POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let n = match CPU_THREADS.load(std::sync::atomic::Ordering::Relaxed) {
            0 => cores,
            n => n,
        };
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("analysis-{i}"))
            .build()
            .expect("analysis thread pool")
    })
}

/// The signature of the three tasks: `(sensor=None, time_window="7d", **thresholds)`.
const PARAMS: &[&str] = &["sensor=null", "time_window=\"7d\"", "**thresholds"];

/// How long a task waits for the schema to become ready before failing with `OperationalError`.
const READY_WAIT: Duration = Duration::from_secs(30);

/// Where the analysis tasks read and write, and whether the schema there is ready.
pub struct AnalysisDb {
    primary_url: String,
    primary: store::PgPool,
    replica: Option<store::PgPool>,
    readiness: Readiness,
    /// One preparation at a time.
    preparing: tokio::sync::Mutex<()>,
}

impl AnalysisDb {
    /// Pools on the primary and the optional read replica. Nothing connects here: the pools connect on first use,
    /// and the schema is prepared by [`AnalysisDb::prepare`] (in the background: [`spawn_prepare`]).
    pub fn new(primary_url: &str, read_url: Option<&str>) -> Arc<AnalysisDb> {
        let timeout = Duration::from_secs(5);
        Arc::new(AnalysisDb {
            primary_url: primary_url.to_string(),
            primary: store::build_pool(primary_url, 4, timeout),
            replica: read_url
                .filter(|u| *u != primary_url)
                .map(|u| store::build_pool(u, 4, timeout)),
            readiness: Readiness::new(),
            preparing: tokio::sync::Mutex::new(()),
        })
    }

    /// Run the migrations on the primary (once it succeeded, again is a no-op). The outcome is recorded: the tasks
    /// work from the first success on, and until then fail with the last error.
    pub async fn prepare(&self) -> Result<(), store::StoreError> {
        let _one_at_a_time = self.preparing.lock().await;
        if self.readiness.state().is_ready() {
            return Ok(());
        }
        let outcome = store::run_migrations(&self.primary_url).await.map(|_| ());
        self.readiness
            .record(outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        outcome
    }

    /// Where the schema stands (ready, or pending with the last preparation error).
    pub fn schema_state(&self) -> SchemaState {
        self.readiness.state()
    }

    /// True once the schema is prepared.
    pub fn is_ready(&self) -> bool {
        self.readiness.state().is_ready()
    }

    async fn ensure_ready(&self) -> Result<(), TaskError> {
        self.readiness
            .wait(READY_WAIT)
            .await
            .map_err(|why| db_unavailable(&why))
    }

    async fn write(&self) -> Result<store::PooledConnOwned, TaskError> {
        self.ensure_ready().await?;
        self.primary
            .get_owned()
            .await
            .map_err(|e| db_unavailable(&e.to_string()))
    }

    /// A connection to the read replica, or to the primary when there is none or it does not answer.
    async fn read(&self) -> Result<store::PooledConnOwned, TaskError> {
        self.ensure_ready().await?;
        if let Some(r) = &self.replica {
            match r.get_owned().await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(error = %e, "read replica unavailable; reading from the primary")
                }
            }
        }
        self.primary
            .get_owned()
            .await
            .map_err(|e| db_unavailable(&e.to_string()))
    }
}

/// Prepare the analysis schema in the background, starting when the first analysis task needs it:
/// [`AnalysisDb::prepare`] until it succeeds, with exponential backoff (200 ms doubling up to 10 s, cut short when a
/// task asks for the schema). Call it once, after [`register`], inside the tokio runtime.
pub fn spawn_prepare(db: Arc<AnalysisDb>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Only when an analysis task first needs it: a worker that runs no analysis never connects to PostgreSQL
        // (and does not carry the migration's memory).
        db.readiness.demanded().await;
        let mut backoff =
            transport::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match db.prepare().await {
                Ok(()) => {
                    tracing::info!("analysis schema ready");
                    return;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "analysis schema not ready; the analysis tasks fail until it is");
                    db.readiness.pause(delay).await;
                }
            }
        }
    })
}

fn db_unavailable(msg: &str) -> TaskError {
    TaskError::Fail {
        exc: celery_proto::ExceptionInfo::new(
            "sqlalchemy.exc",
            "OperationalError",
            format!("database unavailable: {msg}"),
        ),
        traceback: None,
    }
}

pub(crate) fn db_error(e: store::StoreError) -> TaskError {
    if e.is_retryable() {
        db_unavailable(&e.to_string())
    } else {
        TaskError::fail("RuntimeError", e.to_string())
    }
}

pub(crate) fn analysis_error(e: analysis::AnalysisError) -> TaskError {
    TaskError::fail("ValueError", e.to_string())
}

/// Register the analysis tasks against this database: the three of the original, and longtail's chord pieces.
pub fn register(reg: &mut TaskRegistry, db: Arc<AnalysisDb>) {
    let opts = TaskOptions {
        acks_late: true,
        ..TaskOptions::default()
    };
    let d = db.clone();
    reg.register(
        Task::new(LONGTAIL, PARAMS, move |ctx, args: Args| {
            let db = d.clone();
            async move { longtail::longtail_task(db, ctx, args).await }
        })
        .with_options(opts.clone()),
    );
    let d = db.clone();
    reg.register(
        Task::new(
            LONGTAIL_DAY,
            &["sensor=null", "day=null", "**thresholds"],
            move |_ctx, args: Args| {
                let db = d.clone();
                async move { longtail::longtail_day_task(db, args).await }
            },
        )
        .with_options(opts.clone()),
    );
    let d = db.clone();
    reg.register(
        Task::new(
            LONGTAIL_MERGE,
            &[
                "day_results",
                "sensor=null",
                "time_window=\"7d\"",
                "**thresholds",
            ],
            move |ctx, args: (Value, Value, Value, Map<String, Value>)| {
                let db = d.clone();
                async move { longtail::longtail_merge_task(db, ctx, args).await }
            },
        )
        .with_options(opts.clone()),
    );
    let d = db.clone();
    reg.register(
        Task::new(SNOWSHOE, PARAMS, move |ctx, args: Args| {
            let db = d.clone();
            async move { scored_task::<SnowshoeParams>(Kind::Snowshoe, db, ctx, args).await }
        })
        .with_options(opts.clone()),
    );
    reg.register(
        Task::new(BOTNET, PARAMS, move |ctx, args: Args| {
            let db = db.clone();
            async move { scored_task::<BotnetParams>(Kind::Botnet, db, ctx, args).await }
        })
        .with_options(opts),
    );
}

pub use analysis::window::Window;

/// Parse `time_window` (`analysis::window::parse_window`); a bad one fails the task with `ValueError`.
pub fn parse_window(v: &Value, now: DateTime<Utc>) -> Result<Window, TaskError> {
    analysis::window::parse_window(v, now).map_err(|why| TaskError::fail("ValueError", why))
}

/// The bound `(sensor, time_window, thresholds)`.
pub(crate) type Args = (Value, Value, Map<String, Value>);

/// `sensor` as a filter: null, `""` or `"*"` mean all sensors; anything but a string is a TypeError.
pub(crate) fn sensor_arg(task: &str, sensor: Value) -> Result<Option<String>, TaskError> {
    match sensor {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() || s == "*" => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(TaskError::type_error(format!(
            "{task}(): sensor must be a string or None, got {other}"
        ))),
    }
}

/// Thresholds from keyword arguments onto the defaults; unknown names are a TypeError like Python's.
pub(crate) fn params_from<P: Serialize + DeserializeOwned + Default>(
    task: &str,
    kwargs: Map<String, Value>,
) -> Result<P, TaskError> {
    let Value::Object(mut base) = serde_json::to_value(P::default()).expect("parameters serialise")
    else {
        unreachable!("parameters are a struct")
    };
    for (k, v) in kwargs {
        if !base.contains_key(&k) {
            return Err(TaskError::type_error(format!(
                "{task}() got an unexpected keyword argument '{k}'"
            )));
        }
        base.insert(k, v);
    }
    serde_json::from_value(Value::Object(base))
        .map_err(|e| TaskError::fail("ValueError", format!("{task}(): {e}")))
}

/// Turns analysis progress into throttled Celery PROGRESS updates.
pub(crate) fn progress_reporter(
    ctx: &TaskContext,
    offset: u64,
    total_hint: Arc<Mutex<u64>>,
) -> impl FnMut(Progress) + Send + 'static {
    let ctx = ctx.clone();
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut last_stage = "";
    move |p: Progress| {
        if p.stage != last_stage
            || last.elapsed() >= Duration::from_millis(250)
            || p.current == p.total
        {
            last = Instant::now();
            last_stage = p.stage;
            let total = (*total_hint.lock().expect("hint")).max(1);
            ctx.update_state(
                "PROGRESS",
                json!({"stage": p.stage, "current": p.current, "total": p.total, "step": offset, "steps": total}),
            );
        }
    }
}

fn to_session(r: store::analysis::SessionRecord) -> Session {
    Session {
        session_id: r.session_id,
        sensor: Some(r.sensor),
        src_ip: r.src_ip,
        start: r.first_event_at,
        end: r.last_event_at,
        closed_duration: r.duration_seconds,
        // The same text the original's detectors saw: sanitised and defanged, as its loader stored `input`.
        commands: r
            .commands
            .iter()
            .map(|c| analysis::create_safe_command(&analysis::text::sanitize_text(c)))
            .filter(|c| !c.is_empty())
            .collect(),
        command_events: r.command_count.max(0) as u32,
        login_attempts: r.login_attempts.max(0) as u32,
        logins: r
            .logins
            .into_iter()
            .map(|l| analysis::LoginAttempt {
                username: l
                    .username
                    .as_deref()
                    .map(analysis::text::sanitize_text)
                    .unwrap_or_default(),
                password: l
                    .password
                    .as_deref()
                    .map(analysis::text::sanitize_text)
                    .unwrap_or_default(),
                success: l.success,
                timestamp: l.timestamp,
            })
            .collect(),
        file_events: r.file_downloads.max(0) as u32,
        file_downloads: r
            .downloads
            .into_iter()
            .map(|d| analysis::FileDownload {
                eventid: if d.succeeded {
                    "cowrie.session.file_download"
                } else {
                    "cowrie.session.file_download.failed"
                }
                .to_string(),
                url: d.url.as_deref().map(analysis::text::sanitize_text),
                shasum: d.shasum,
                outfile: None,
            })
            .collect(),
        client_version: r.client_version,
        hassh: r.hassh,
        protocol: r.protocol,
        event_count: r.event_count.max(0) as u32,
        country: None,
        asn: None,
    }
}

async fn load_sessions(
    db: &AnalysisDb,
    sensor: Option<&str>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<Session>, TaskError> {
    let mut conn = db.read().await?;
    let rows = store::analysis::sessions_in_window(&mut conn, sensor, start, end)
        .await
        .map_err(db_error)?;
    Ok(rows.into_iter().map(to_session).collect())
}

/// Full UTC days inside the window, and the partial pieces at its edges.
pub(crate) fn split_days(w: Window) -> (Vec<NaiveDate>, Vec<Window>) {
    let day_start = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let mut first = w.start.date_naive();
    if day_start(first) < w.start {
        first = first.succ_opt().expect("date");
    }
    let last_excl = w.end.date_naive();
    let mut days = Vec::new();
    let mut d = first;
    while day_start(d) < w.end && d < last_excl {
        days.push(d);
        d = d.succ_opt().expect("date");
    }
    if days.is_empty() {
        return (days, vec![w]);
    }
    let mut edges = Vec::new();
    let full_start = day_start(days[0]);
    let full_end = day_start(*days.last().expect("day")) + ChronoDuration::days(1);
    if w.start < full_start {
        edges.push(Window {
            start: w.start,
            end: full_start,
        });
    }
    if full_end < w.end {
        edges.push(Window {
            start: full_end,
            end: w.end,
        });
    }
    (days, edges)
}

/// The `longtail_analysis` row of a result (`out` is the result as returned: its lists as stored).
pub(crate) fn analysis_row(
    sensor: &Option<String>,
    window: Window,
    out: &Value,
    started: Instant,
) -> store::analysis::NewLongtailAnalysis {
    let int = |k: &str| out[k].as_u64().unwrap_or(0).min(i32::MAX as u64) as i32;
    store::analysis::NewLongtailAnalysis {
        sensor: sensor.clone(),
        window_start: window.start,
        window_end: window.end,
        lookback_days: Some(
            ((window.end - window.start).num_seconds() as f64 / 86_400.0).ceil() as i32,
        ),
        confidence_score: None,
        total_events_analyzed: int("total_events_analyzed"),
        rare_command_count: int("rare_command_count"),
        anomalous_sequence_count: int("anomalous_sequence_count"),
        outlier_session_count: int("outlier_session_count"),
        emerging_pattern_count: int("emerging_pattern_count"),
        high_entropy_payload_count: int("high_entropy_payload_count"),
        analysis_results: json!({
            "rare_commands": out["rare_commands"], "anomalous_sequences": out["anomalous_sequences"],
            "outlier_sessions": out["outlier_sessions"], "emerging_patterns": [], "high_entropy_payloads": [],
            "session_lists_included": out["session_lists_included"], "incremental": out["incremental"],
        }),
        statistical_summary: Some(out["statistical_summary"].clone()),
        recommendation: out["recommendation"].as_str().map(str::to_owned),
        analysis_duration_seconds: Some(started.elapsed().as_secs_f64()),
        memory_usage_mb: out["memory_usage_mb"].as_f64(),
    }
}

/// One `longtail_detections` row per finding, as the original stores them; a rare command lists its sessions'
/// ids in `detection_data.session_ids` (where the per-session lists stay available when the result leaves them out).
pub(crate) fn detections(
    result: &analysis::LongtailResult,
) -> Vec<store::analysis::NewLongtailDetection> {
    let now = Utc::now();
    let mut detections = Vec::new();
    for rc in &result.rare_commands {
        let ids: Vec<&str> = rc.sessions.iter().map(|s| s.session_id.as_str()).collect();
        detections.push(store::analysis::NewLongtailDetection {
            detection_type: "rare_command".into(),
            session_id: rc.sessions.first().map(|s| s.session_id.clone()),
            detection_data: json!({"command": rc.command, "frequency": rc.frequency, "rarity_score": rc.rarity_score,
                "session_count": rc.session_count, "session_ids": ids}),
            confidence_score: Some(1.0 - rc.rarity_score),
            severity_score: None,
            timestamp: rc.sessions.first().map(|s| s.timestamp).unwrap_or(now),
            source_ip: rc.sessions.first().and_then(|s| s.src_ip.clone()),
        });
    }
    for a in &result.anomalous_sequences {
        detections.push(store::analysis::NewLongtailDetection {
            detection_type: "anomalous_sequence".into(),
            session_id: None,
            detection_data: serde_json::to_value(a).unwrap_or(Value::Null),
            confidence_score: Some(a.anomaly_score),
            severity_score: None,
            timestamp: now,
            source_ip: None,
        });
    }
    for o in &result.outlier_sessions {
        detections.push(store::analysis::NewLongtailDetection {
            detection_type: "outlier_session".into(),
            session_id: Some(o.session_id.clone()),
            detection_data: serde_json::to_value(o).unwrap_or(Value::Null),
            confidence_score: Some(o.anomaly_score),
            severity_score: None,
            timestamp: now,
            source_ip: o.src_ip.clone(),
        });
    }
    detections
}

#[derive(Clone, Copy)]
enum Kind {
    Snowshoe,
    Botnet,
}

async fn scored_task<P>(
    kind: Kind,
    db: Arc<AnalysisDb>,
    ctx: TaskContext,
    (sensor, window_v, mut kwargs): Args,
) -> Result<Value, TaskError>
where
    P: Serialize + DeserializeOwned + Default + Send + 'static,
{
    let name = match kind {
        Kind::Snowshoe => SNOWSHOE,
        Kind::Botnet => BOTNET,
    };
    let sensor = sensor_arg(name, sensor)?;
    let window = parse_window(&window_v, Utc::now())?;
    // The detectors' `window_hours` (their rate denominators); by default the length of the window.
    let hours = match kwargs.remove("window_hours") {
        None | Some(Value::Null) => window.hours(),
        Some(v) => v.as_f64().filter(|h| *h > 0.0).ok_or_else(|| {
            TaskError::fail(
                "ValueError",
                format!("{name}(): window_hours must be a positive number, got {v}"),
            )
        })?,
    };
    let params: P = params_from(name, kwargs)?;
    ctx.update_state(
        "PROGRESS",
        json!({"stage": "load", "current": 0, "total": 1, "step": 0, "steps": 2}),
    );
    let sessions = load_sessions(&db, sensor.as_deref(), window.start, window.end).await?;
    let mut report = progress_reporter(&ctx, 1, Arc::new(Mutex::new(2)));
    let params_json = serde_json::to_value(&params).expect("parameters serialise");
    let mut result = run_blocking(move || {
        on_cpu(|| {
            let v = match kind {
                Kind::Snowshoe => {
                    let p: SnowshoeParams = serde_json::from_value(params_json)
                        .map_err(|e| TaskError::fail("ValueError", e.to_string()))?;
                    serde_json::to_value(
                        analysis::snowshoe(&sessions, hours, &p, &mut report)
                            .map_err(analysis_error)?,
                    )
                }
                Kind::Botnet => {
                    let p: BotnetParams = serde_json::from_value(params_json)
                        .map_err(|e| TaskError::fail("ValueError", e.to_string()))?;
                    serde_json::to_value(
                        analysis::botnet(&sessions, hours, &p, &mut report)
                            .map_err(analysis_error)?,
                    )
                }
            };
            v.map_err(|e| TaskError::fail("RuntimeError", e.to_string()))
        })
    })
    .await?;
    let mut conn = db.write().await?;
    let id = match kind {
        Kind::Snowshoe => {
            store::analysis::insert_snowshoe_detection(
                &mut conn,
                sensor.as_deref(),
                window.start,
                window.end,
                &result,
            )
            .await
        }
        Kind::Botnet => {
            store::analysis::insert_botnet_detection(
                &mut conn,
                sensor.as_deref(),
                window.start,
                window.end,
                &result,
            )
            .await
        }
    }
    .map_err(db_error)?;
    result["detection_id"] = json!(id);
    result["sensor"] = json!(sensor);
    result["window"] = json!({"start": celery_proto::time::isoformat(window.start), "end": celery_proto::time::isoformat(window.end)});
    Ok(result)
}

/// Peak resident memory of this process in MiB (`VmHWM`).
pub(crate) fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use analysis::LongtailParams;

    fn t(s: &str) -> DateTime<Utc> {
        celery_proto::time::parse_iso(s).unwrap()
    }

    #[test]
    fn windows_like_the_original() {
        let now = t("2024-01-10T12:00:00Z");
        assert_eq!(
            parse_window(&json!("7d"), now).unwrap(),
            Window {
                start: t("2024-01-03T12:00:00Z"),
                end: now
            }
        );
        assert_eq!(
            parse_window(&json!("24h"), now).unwrap().start,
            t("2024-01-09T12:00:00Z")
        );
        let w = parse_window(
            &json!({"start": "2024-01-01T00:00:00", "end": "2024-01-02T00:00:00Z"}),
            now,
        )
        .unwrap();
        assert_eq!(w.hours(), 24.0);
        for bad in [
            json!("7x"),
            json!("-1d"),
            json!(7),
            json!({"end": "2024-01-01T00:00:00Z"}),
            json!({"start": "2024-01-02T00:00:00Z", "end": "2024-01-01T00:00:00Z"}),
        ] {
            assert!(parse_window(&bad, now).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn full_days_and_edges() {
        let w = Window {
            start: t("2024-01-01T06:00:00Z"),
            end: t("2024-01-04T03:00:00Z"),
        };
        let (days, edges) = split_days(w);
        assert_eq!(
            days,
            vec![
                NaiveDate::from_ymd_opt(2024, 1, 2).unwrap(),
                NaiveDate::from_ymd_opt(2024, 1, 3).unwrap()
            ]
        );
        assert_eq!(
            edges,
            vec![
                Window {
                    start: w.start,
                    end: t("2024-01-02T00:00:00Z")
                },
                Window {
                    start: t("2024-01-04T00:00:00Z"),
                    end: w.end
                }
            ]
        );
        let short = Window {
            start: t("2024-01-01T06:00:00Z"),
            end: t("2024-01-01T09:00:00Z"),
        };
        assert_eq!(split_days(short), (vec![], vec![short]));
        let exact = Window {
            start: t("2024-01-01T00:00:00Z"),
            end: t("2024-01-03T00:00:00Z"),
        };
        assert_eq!(split_days(exact).0.len(), 2);
        assert!(split_days(exact).1.is_empty());
    }

    #[test]
    fn thresholds_come_from_kwargs() {
        let mut kw = Map::new();
        kw.insert("rarity_threshold".into(), json!(0.1));
        let p: LongtailParams = params_from(LONGTAIL, kw).unwrap();
        assert_eq!(p.rarity_threshold, 0.1);
        let mut kw = Map::new();
        kw.insert("nope".into(), json!(1));
        assert!(params_from::<LongtailParams>(LONGTAIL, kw).is_err());
        assert_eq!(
            sensor_arg(LONGTAIL, json!("honeypot-a"))
                .unwrap()
                .as_deref(),
            Some("honeypot-a")
        );
        for all in [json!(null), json!(""), json!("*")] {
            assert_eq!(sensor_arg(LONGTAIL, all).unwrap(), None);
        }
    }

    /// A database nothing listens on (connection refused at once).
    fn no_database() -> Arc<AnalysisDb> {
        AnalysisDb::new("postgres://postgres@127.0.0.1:1/none", None)
    }

    fn registry(db: Arc<AnalysisDb>) -> TaskRegistry {
        let mut reg = TaskRegistry::new();
        register(&mut reg, db);
        reg
    }

    async fn call(
        reg: &TaskRegistry,
        name: &str,
        args: Value,
        kwargs: Value,
    ) -> Result<Value, TaskError> {
        let task = reg.get(name).expect("registered");
        let ctx = TaskContext::new("id", name, 0, "w@h", None);
        let Value::Array(args) = args else {
            panic!("args")
        };
        let Value::Object(kwargs) = kwargs else {
            panic!("kwargs")
        };
        task.call(ctx, args, kwargs).await
    }

    /// `(module, type, message)` of a failure.
    fn failure(r: Result<Value, TaskError>) -> (String, String, String) {
        match r {
            Err(TaskError::Fail { exc, .. }) => {
                (exc.exc_module.clone(), exc.exc_type.clone(), exc.message())
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn arguments_bind_like_the_original_signature() {
        let reg = registry(no_database());
        for name in [LONGTAIL, SNOWSHOE, BOTNET] {
            assert!(reg.get(name).unwrap().options.acks_late);
            let (_, ty, msg) = failure(call(&reg, name, json!([null, "1d", 3]), json!({})).await);
            assert_eq!(
                (ty.as_str(), msg),
                (
                    "TypeError",
                    format!("{name}() takes 2 positional arguments but 3 were given")
                )
            );
            let (_, ty, msg) = failure(call(&reg, name, json!([5]), json!({})).await);
            assert_eq!(
                (ty.as_str(), msg),
                (
                    "TypeError",
                    format!("{name}(): sensor must be a string or None, got 5")
                )
            );
            let (_, ty, _) = failure(call(&reg, name, json!([null, "7 parsecs"]), json!({})).await);
            assert_eq!(ty, "ValueError");
            let (_, ty, msg) = failure(
                call(
                    &reg,
                    name,
                    json!([]),
                    json!({"time_window": "1d", "no_such_threshold": 1}),
                )
                .await,
            );
            assert_eq!(
                (ty.as_str(), msg),
                (
                    "TypeError",
                    format!("{name}() got an unexpected keyword argument 'no_such_threshold'")
                )
            );
        }
    }

    #[tokio::test]
    async fn without_a_database_the_tasks_fail_with_operational_error() {
        let db = no_database();
        let reg = registry(db.clone());
        let prep = spawn_prepare(db.clone());
        let started = Instant::now();
        for name in [LONGTAIL, SNOWSHOE, BOTNET] {
            let (module, ty, msg) = failure(call(&reg, name, json!(["s", "1d"]), json!({})).await);
            assert_eq!(
                (module.as_str(), ty.as_str()),
                ("sqlalchemy.exc", "OperationalError")
            );
            assert!(
                msg.starts_with("database unavailable: analysis schema not ready: "),
                "{msg}"
            );
        }
        // Each task took the outcome of one more attempt, not the whole wait.
        assert!(started.elapsed() < READY_WAIT, "{:?}", started.elapsed());
        assert!(
            matches!(db.schema_state(), SchemaState::Pending { attempts, last_error: Some(_) } if attempts >= 1)
        );
        prep.abort();
    }

    #[tokio::test]
    async fn background_preparation_makes_the_tasks_work() {
        let Some(test_db) = store::test_support::TestDb::create().await else {
            return;
        };
        let db = AnalysisDb::new(&test_db.url, None);
        let reg = registry(db.clone());
        spawn_prepare(db.clone());
        let r = call(&reg, BOTNET, json!(["nobody", "1d"]), json!({}))
            .await
            .unwrap();
        assert!(db.is_ready());
        assert_eq!(r["is_likely_botnet"], json!(false));
        assert_eq!(r["sensor"], json!("nobody"));
        assert!(r["detection_id"].as_i64().is_some(), "{r}");
        let r = call(
            &reg,
            LONGTAIL,
            json!([]),
            json!({"sensor": "nobody", "time_window": "2d"}),
        )
        .await
        .unwrap();
        assert!(r["analysis_id"].as_i64().is_some(), "{r}");
        test_db.drop_db().await;
    }
}
