//! `cowrie-loader delta --all`: every sensor of the sensors file in one run, a bounded number at a time, one status
//! line per sensor and a summary; one `loader_runs` row per sensor; `--every` repeats the run until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use store::PgPool;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::engine::{Engine, IngestOptions, ensure_schema, expand_logdir};
use crate::metrics::LoaderMetrics;
use crate::sensors::{Sensor, load_sensors};
use crate::status::{Stats, exit};

/// Settings of a `delta --all` run.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub database_url: String,
    pub sensors_file: PathBuf,
    /// How many sensors load at the same time (at least 1).
    pub parallel: usize,
    /// Batch size, dry run, retry window and testing aids for every sensor (its `sensor` and `mode` are replaced).
    pub template: IngestOptions,
    /// Create the schema in an empty database (`--no-migrate` turns it off).
    pub migrate: bool,
    /// Where to write the summary with every sensor's status (atomically).
    pub status_file: Option<PathBuf>,
}

/// The result of one `delta --all` run: the last line on stdout (without `results`) and the status file (with).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub summary: bool,
    pub mode: String,
    pub sensors_file: String,
    pub sensors: usize,
    pub ok: usize,
    pub failed: usize,
    pub failed_sensors: Vec<String>,
    pub events_inserted: u64,
    pub dead_letters_inserted: u64,
    pub duration_seconds: f64,
    pub errors: Vec<String>,
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<Stats>,
}

impl Summary {
    fn new(opts: &FleetOptions) -> Summary {
        Summary {
            summary: true,
            mode: "delta --all".into(),
            sensors_file: opts.sensors_file.display().to_string(),
            sensors: 0,
            ok: 0,
            failed: 0,
            failed_sensors: Vec::new(),
            events_inserted: 0,
            dead_letters_inserted: 0,
            duration_seconds: 0.0,
            errors: Vec::new(),
            exit_code: exit::OK,
            results: Vec::new(),
        }
    }

    /// The summary line for stdout (the per-sensor lines were printed already).
    pub fn to_json_line(&self) -> String {
        let mut s = self.clone();
        s.results.clear();
        serde_json::to_string(&s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The exit code of a run from its sensors' codes: 0 when all succeeded, 3 when every failure was PostgreSQL
/// being unreachable (run again later), else 4 (some sensors failed; the others were loaded).
pub fn combined_exit_code(codes: &[i32]) -> i32 {
    let failed: Vec<i32> = codes.iter().copied().filter(|c| *c != exit::OK).collect();
    if failed.is_empty() {
        exit::OK
    } else if failed.iter().all(|c| *c == exit::DB_UNAVAILABLE) {
        exit::DB_UNAVAILABLE
    } else {
        exit::PARTIAL
    }
}

/// Records one finished run of one sensor in `loader_runs` (one attempt; a failure is logged, not fatal: the
/// run's data is safe either way).
pub async fn record_run(pool: &PgPool, stats: &Stats, started_at: DateTime<Utc>) {
    let run = store::loader_runs::NewRun {
        sensor: stats.sensor.clone(),
        mode: stats.mode.clone(),
        ingest_id: Some(stats.ingest_id.clone()).filter(|s| !s.is_empty()),
        started_at,
        finished_at: Utc::now(),
        outcome: if stats.exit_code == exit::OK {
            store::loader_runs::Outcome::Ok
        } else {
            store::loader_runs::Outcome::Failed
        },
        exit_code: stats.exit_code,
        events_loaded: stats.events_inserted as i64,
        dead_letters: stats.dead_letters_inserted as i64,
        error: Some(stats.errors.join("; ")).filter(|s| !s.is_empty()),
    };
    let res = async {
        let mut c = pool.get().await?;
        store::loader_runs::record(&mut c, &run).await
    }
    .await;
    if let Err(e) = res {
        tracing::warn!(sensor = %stats.sensor, error = %e, "could not record the run in loader_runs");
    }
}

/// Loads one sensor: its log directory as `delta` would, then its `loader_runs` row.
async fn run_sensor(pool: Option<PgPool>, template: IngestOptions, sensor: Sensor) -> Stats {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let opts = IngestOptions {
        mode: "delta".into(),
        sensor: sensor.name.clone(),
        progress: false,
        status_file: None,
        ..template
    };
    let mut stats = match expand_logdir(&sensor.logdir) {
        Ok(files) => {
            let mut engine = Engine::new(pool.clone(), opts);
            engine.run(&files).await;
            engine.stats
        }
        Err(e) => {
            tracing::error!(sensor = %sensor.name, logdir = %sensor.logdir.display(), error = %e, "cannot read the log directory");
            Stats {
                mode: opts.mode.clone(),
                ingest_id: uuid::Uuid::now_v7().to_string(),
                sensor: sensor.name.clone(),
                dry_run: opts.dry_run,
                errors: vec![format!("cannot read {}: {e}", sensor.logdir.display())],
                exit_code: exit::FAILURE,
                ..Stats::default()
            }
        }
    };
    stats.duration_seconds = (t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    if let Some(pool) = pool.filter(|_| !stats.dry_run) {
        record_run(&pool, &stats, started_at).await;
    }
    stats
}

/// One `delta --all` run: prints a status line per sensor as it finishes, then returns the summary (not printed).
pub async fn run_once(opts: &FleetOptions, metrics: Option<&LoaderMetrics>) -> Summary {
    let t0 = Instant::now();
    let mut summary = Summary::new(opts);
    let sensors = match load_sensors(&opts.sensors_file) {
        Ok(s) => s,
        Err(e) => {
            summary.errors.push(e.to_string());
            summary.exit_code = exit::FAILURE;
            return summary;
        }
    };
    summary.sensors = sensors.len();
    if let Some(m) = metrics {
        for s in &sensors {
            m.touch(&s.name);
        }
    }
    let pool = if opts.template.dry_run {
        None
    } else {
        if opts.migrate
            && let Err((code, msg)) =
                ensure_schema(&opts.database_url, opts.template.max_wait).await
        {
            summary.errors.push(msg);
            summary.exit_code = code;
            summary.failed = sensors.len();
            summary.failed_sensors = sensors.iter().map(|s| s.name.clone()).collect();
            return summary;
        }
        let size = (opts.parallel.max(1) * opts.template.files_in_flight.max(1)) as u32 + 1;
        Some(store::build_pool(
            &opts.database_url,
            size,
            Duration::from_secs(5),
        ))
    };
    let permits = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let mut tasks = JoinSet::new();
    for (i, sensor) in sensors.iter().cloned().enumerate() {
        let (pool, template, permits) = (pool.clone(), opts.template.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let t = Instant::now();
            let stats = run_sensor(pool, template, sensor).await;
            (i, stats, t.elapsed())
        });
    }
    let mut results: Vec<Option<Stats>> = vec![None; sensors.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, stats, elapsed)) => {
                println!("{}", stats.to_json_line());
                if let Some(m) = metrics {
                    m.observe(&stats, stats.exit_code == exit::OK, elapsed);
                }
                results[i] = Some(stats);
            }
            Err(e) => summary.errors.push(format!("a sensor's task failed: {e}")),
        }
    }
    let mut codes = Vec::new();
    for (sensor, r) in sensors.iter().zip(results) {
        let stats = r.unwrap_or_else(|| Stats {
            mode: "delta".into(),
            sensor: sensor.name.clone(),
            errors: vec!["the sensor's task did not finish".into()],
            exit_code: exit::FAILURE,
            ..Stats::default()
        });
        codes.push(stats.exit_code);
        summary.events_inserted += stats.events_inserted;
        summary.dead_letters_inserted += stats.dead_letters_inserted;
        if stats.exit_code == exit::OK {
            summary.ok += 1;
        } else {
            summary.failed += 1;
            summary.failed_sensors.push(sensor.name.clone());
        }
        summary.results.push(stats);
    }
    summary.exit_code = combined_exit_code(&codes);
    summary.duration_seconds = (t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    summary
}

/// Prints a finished run's summary line, names its failures on stderr and writes the status file.
pub fn report(opts: &FleetOptions, summary: &Summary) {
    println!("{}", summary.to_json_line());
    for e in &summary.errors {
        eprintln!("cowrie-loader: {e}");
    }
    for s in &summary.results {
        if s.exit_code != exit::OK {
            eprintln!(
                "cowrie-loader: sensor {} failed (exit code {}): {}",
                s.sensor,
                s.exit_code,
                s.errors.join("; ")
            );
        }
    }
    if !summary.failed_sensors.is_empty() {
        eprintln!(
            "cowrie-loader: failed sensors: {}",
            summary.failed_sensors.join(", ")
        );
    }
    if let Some(p) = &opts.status_file {
        let tmp = p.with_extension("tmp");
        let body = serde_json::to_vec_pretty(summary).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, body).and_then(|_| std::fs::rename(&tmp, p)) {
            tracing::warn!(path = %p.display(), error = %e, "cannot write status file");
        }
    }
}

/// `delta --all`, once or (with `every`) until SIGTERM or SIGINT, serving metrics on `metrics_port` if given.
/// Once: the run's exit code. Repeating: a signal lets the current run finish, then the loader exits with 0.
pub async fn run(opts: FleetOptions, every: Option<Duration>, metrics_port: Option<u16>) -> i32 {
    // Signal handlers first: a SIGTERM in the middle of the first run must not kill the process.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    if every.is_some() {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("cowrie-loader: cannot install signal handlers: {e}");
                return exit::FAILURE;
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("signal received: finishing the current run, then exiting");
            let _ = stop_tx.send(true);
        });
    }
    let metrics = match metrics_port {
        None => None,
        Some(port) => {
            let m = LoaderMetrics::new();
            match m.serve(port).await {
                Ok(addr) => {
                    eprintln!("cowrie-loader: metrics on http://{addr}/metrics");
                    Some(m)
                }
                Err(e) => {
                    eprintln!("cowrie-loader: cannot serve metrics on port {port}: {e}");
                    return exit::FAILURE;
                }
            }
        }
    };
    let Some(every) = every else {
        let summary = run_once(&opts, metrics.as_ref()).await;
        report(&opts, &summary);
        return summary.exit_code;
    };
    loop {
        let summary = run_once(&opts, metrics.as_ref()).await;
        report(&opts, &summary);
        if *stop_rx.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop_rx.changed() => break,
        }
    }
    eprintln!("cowrie-loader: stopped by signal");
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_combine() {
        assert_eq!(combined_exit_code(&[]), 0);
        assert_eq!(combined_exit_code(&[0, 0]), 0);
        assert_eq!(combined_exit_code(&[0, 3, 3]), 3);
        assert_eq!(combined_exit_code(&[0, 1]), 4);
        assert_eq!(combined_exit_code(&[3, 4]), 4);
    }
}
