//! `celeriac events`: watch the cluster's events. `--dump` prints every event like `celery events --dump`;
//! `--json` prints one JSON object per event; the default shows a worker table (online, heartbeat age, active,
//! processed, load) refreshed every second. `--count` / `--duration` make it stop by itself.

use celeriac_control::{ClusterState, ControlClient, Event, EventReceiver};
use celery_proto::event::EventKind;
use celery_proto::pyrepr::repr;
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use transport::SharedTransport;

use crate::Cli;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print every event as `celery events --dump` does.
    #[arg(long)]
    pub dump: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Do not broadcast `heartbeat` at start (by default workers are woken up so they show at once).
    #[arg(long)]
    pub no_wakeup: bool,
}

/// Python's `str()` of a field value.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => repr(other),
    }
}

/// How the dumper names an event type: Celery's words for worker events, else the type with spaces.
fn human_type(kind: Option<EventKind>, event_type: &str) -> String {
    match kind {
        Some(EventKind::WorkerOffline) => "shutdown".into(),
        Some(EventKind::WorkerOnline) => "started".into(),
        Some(EventKind::WorkerHeartbeat) => "heartbeat".into(),
        _ => event_type.to_lowercase().replace('-', " "),
    }
}

fn py_datetime(ts: f64) -> String {
    let dt = DateTime::<Utc>::from_timestamp_micros((ts * 1e6).round() as i64).unwrap_or_default();
    if dt.timestamp_subsec_micros() == 0 {
        dt.format("%Y-%m-%d %H:%M:%S+00:00").to_string()
    } else {
        dt.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
    }
}

/// One line of Celery's event dumper (`celery/events/dumper.py`); `names` remembers task descriptions.
pub fn dump_line(ev: &Event, names: &mut HashMap<String, String>) -> String {
    let mut body = ev.body.clone();
    body.entry("local_received")
        .or_insert_with(|| json!(ev.received_at));
    let ts = body
        .remove("timestamp")
        .and_then(|v| v.as_f64())
        .unwrap_or(ev.received_at);
    let event_type = body
        .remove("type")
        .map(|v| py_str(&v).to_lowercase())
        .unwrap_or_default();
    let kind = EventKind::parse(&event_type);
    let host = body
        .remove("hostname")
        .map(|v| py_str(&v))
        .unwrap_or_default();
    let mut task = None;
    // Like Celery's dumper, any `task-*` type (an app's custom `task-progress` too) is shown with its task.
    if event_type.starts_with("task-") {
        let uuid = body.remove("uuid").map(|v| py_str(&v)).unwrap_or_default();
        if matches!(kind, Some(EventKind::TaskReceived | EventKind::TaskSent)) {
            let mut take = |k: &str| {
                body.remove(k)
                    .map(|v| py_str(&v))
                    .unwrap_or_else(|| "None".into())
            };
            let desc = format!(
                "{}({uuid}) args={} kwargs={}",
                take("name"),
                take("args"),
                take("kwargs")
            );
            names.insert(uuid.clone(), desc.clone());
            task = Some(desc);
        } else {
            task = Some(names.get(&uuid).cloned().unwrap_or_default());
        }
    }
    let mut keys: Vec<&String> = body.keys().collect();
    keys.sort();
    let fields = keys
        .iter()
        .map(|k| format!("{k}={}", py_str(&body[*k])))
        .collect::<Vec<_>>()
        .join(", ");
    let sep = if fields.is_empty() { "" } else { ":" };
    match task {
        Some(t) => format!(
            "{host} [{}] {}{sep} {t} {fields}",
            py_datetime(ts),
            human_type(kind, &event_type)
        ),
        None => format!(
            "{host} [{}] {}{sep} {fields}",
            py_datetime(ts),
            human_type(kind, &event_type)
        ),
    }
}

fn table(state: &ClusterState) -> String {
    let now = transport::now_f64();
    let mut out = format!(
        "{:<32} {:<8} {:>9} {:>7} {:>10} {:<18} {}\n",
        "worker", "status", "heartbeat", "active", "processed", "loadavg", "software"
    );
    for w in state.workers.values() {
        let age = w
            .last_heartbeat
            .map(|t| format!("{:.1}s", now - t))
            .unwrap_or_else(|| "-".into());
        let load = w
            .loadavg
            .iter()
            .map(|l| format!("{l:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "{:<32} {:<8} {:>9} {:>7} {:>10} {:<18} {} {}\n",
            w.hostname,
            if w.alive(now) { "ONLINE" } else { "OFFLINE" },
            age,
            w.active,
            w.processed,
            load,
            w.sw_ident.as_deref().unwrap_or("-"),
            w.sw_ver.as_deref().unwrap_or(""),
        ));
    }
    out
}

pub async fn events(cli: &Cli, a: &EventsArgs) -> anyhow::Result<ExitCode> {
    let transport: SharedTransport = cli.transport().await?;
    let mut rx = EventReceiver::new(&transport).await?;
    if !a.no_wakeup {
        let client = ControlClient::new(transport.clone());
        client
            .broadcast(
                "heartbeat",
                json!({}),
                None,
                false,
                Duration::from_secs(1),
                None,
            )
            .await?;
    }
    if a.dump && !cli.json {
        println!("-> celeriac events: starting capture...");
    }
    let started = Instant::now();
    let deadline = a
        .duration
        .map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    let mut names = HashMap::new();
    let mut state = ClusterState::default();
    let mut seen = 0u64;
    let mut redraw = tokio::time::interval(Duration::from_secs(1));
    let stdout = std::io::stdout();
    loop {
        if a.count.is_some_and(|c| seen >= c) {
            break;
        }
        let sleep_until = deadline.map(tokio::time::Instant::from_std);
        let ev = tokio::select! {
            ev = rx.next() => match ev {
                Some(ev) => ev,
                None => anyhow::bail!("the event subscription was lost"),
            },
            _ = async { match sleep_until { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => break,
            _ = redraw.tick(), if !a.dump && !cli.json => {
                print!("\x1b[2J\x1b[H{}", table(&state));
                let _ = stdout.lock().flush();
                continue;
            }
        };
        seen += 1;
        state.apply(&ev);
        let mut out = stdout.lock();
        if cli.json {
            let mut body = ev.body.clone();
            body.entry("local_received")
                .or_insert_with(|| json!(ev.received_at));
            let _ = writeln!(out, "{}", Value::Object(body));
        } else if a.dump {
            let _ = writeln!(out, "{}", dump_line(&ev, &mut names));
        }
        let _ = out.flush();
    }
    if !a.dump && !cli.json {
        print!("{}", table(&state));
    }
    rx.close().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_lines_like_celery() {
        let body = json!({"hostname": "w1@vm", "utcoffset": 0.0, "pid": 21280, "clock": 2, "uuid": "u1", "name": "tasks.add", "args": "(2, 3)", "kwargs": "{}", "root_id": "u1", "parent_id": null, "retries": 0, "eta": null, "expires": null, "timestamp": 1795326112.54301, "type": "task-received"});
        let ev = Event::new(body.as_object().unwrap().clone(), 1795326112.5440774);
        let mut names = HashMap::new();
        assert_eq!(
            dump_line(&ev, &mut names),
            "w1@vm [2026-11-22 05:41:52.543010+00:00] task received: tasks.add(u1) args=(2, 3) kwargs={} clock=2, eta=None, expires=None, local_received=1795326112.5440774, parent_id=None, pid=21280, retries=0, root_id=u1, utcoffset=0.0"
        );
        let hb = json!({"hostname": "w1@vm", "clock": 3, "freq": 2.0, "loadavg": [1.86, 1.06, 0.48], "timestamp": 1795326114.538548, "type": "worker-heartbeat"});
        let line = dump_line(
            &Event::new(hb.as_object().unwrap().clone(), 1.5),
            &mut names,
        );
        assert_eq!(
            line,
            "w1@vm [2026-11-22 05:41:54.538548+00:00] heartbeat: clock=3, freq=2.0, loadavg=[1.86, 1.06, 0.48], local_received=1.5"
        );
    }

    #[test]
    fn dumps_unknown_types_like_celery() {
        let mut names = HashMap::new();
        names.insert(
            "u1".to_string(),
            "tasks.add(u1) args=(2, 3) kwargs={}".to_string(),
        );
        let progress = json!({"hostname": "w1@vm", "uuid": "u1", "done": 3, "timestamp": 2.0, "type": "task-progress"});
        let ev = Event::new(progress.as_object().unwrap().clone(), 2.5);
        assert_eq!(ev.kind(), None);
        assert_eq!(
            dump_line(&ev, &mut names),
            "w1@vm [1970-01-01 00:00:02+00:00] task progress: tasks.add(u1) args=(2, 3) kwargs={} done=3, local_received=2.5"
        );
        let custom = json!({"hostname": "w1@vm", "timestamp": 2.0, "type": "Worker-Custom"});
        let ev = Event::new(custom.as_object().unwrap().clone(), 2.5);
        assert_eq!(
            dump_line(&ev, &mut names),
            "w1@vm [1970-01-01 00:00:02+00:00] worker custom: local_received=2.5"
        );
    }
}
