//! The longtail tasks: `cowrieprocessor.workers.longtail_analysis` (one task does the whole window) and the pieces
//! of its fan-out, `cowrieprocessor.workers.longtail_day` (reduce one UTC day to its cached aggregate) and
//! `cowrieprocessor.workers.longtail_merge` (the chord body: the window from the cached days).
//!
//! What a run reads, in order, stopping as soon as it has its answer:
//! 1. the day fingerprints of the window (one `GROUP BY` over `session_summaries`) and the cached window result
//!    (`longtail_window_cache`): when every day's fingerprint is what it was, the cached result is returned;
//! 2. the cached aggregates of the days whose fingerprint did not change (`longtail_day_cache`);
//! 3. for the other days, contiguous runs of days at a time, only the session features and command inputs
//!    (`store::analysis::longtail_sessions_in_window`), reduced to one `DayAggregate` per day in parallel.
//!
//! CPU work runs on the blocking pool inside this crate's rayon pool ([`crate::cpu`]), whose size is the worker's
//! concurrency. New day aggregates are written while the window is analysed. The stored and returned result leaves
//! out the per-session lists of the rare commands unless `include_sessions=True` is passed (see docs/analysis.md).

use analysis::{DayAggregate, LongtailParams, Session};
use chrono::{Duration as ChronoDuration, NaiveDate, Utc};
use rayon::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use worker_runtime::task::run_blocking;
use worker_runtime::{TaskContext, TaskError};

use crate::{
    AnalysisDb, LONGTAIL, Window, analysis_error, db_error, params_from, parse_window, peak_rss_mb,
    progress_reporter, sensor_arg, split_days,
};

/// The `DayAggregate` format this build writes; older cache rows are recomputed.
const AGG_FORMAT: i32 = 1;
/// The cached window result's format; older rows are recomputed.
const RESULT_FORMAT: i32 = 1;

/// A stable key for the parameters that shape a day aggregate (FNV-1a of their JSON).
pub(crate) fn params_key(p: &LongtailParams) -> String {
    fnv(&serde_json::to_string(p).expect("parameters serialise"))
}

fn fnv(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The task's own keyword arguments (beside the thresholds).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Shape {
    /// Keep every rare command's `sessions` list (the original's full shape; can be megabytes).
    pub include_sessions: bool,
}

impl Shape {
    fn take(kwargs: &mut Map<String, Value>) -> Result<Shape, TaskError> {
        match kwargs.remove("include_sessions") {
            None | Some(Value::Null) => Ok(Shape::default()),
            Some(Value::Bool(b)) => Ok(Shape {
                include_sessions: b,
            }),
            Some(other) => Err(TaskError::type_error(format!(
                "{LONGTAIL}(): include_sessions must be a bool, got {other}"
            ))),
        }
    }
}

/// The analysis input of one session, from what longtail reads of it.
fn to_session(r: store::analysis::LongtailSessionRecord) -> Session {
    Session {
        session_id: r.session_id,
        sensor: None,
        src_ip: r.src_ip,
        start: r.first_event_at,
        end: r.last_event_at,
        closed_duration: None,
        // The same text the original's detectors saw: sanitised and defanged, as its loader stored `input`.
        commands: r
            .commands
            .iter()
            .map(|c| analysis::create_safe_command(&analysis::text::sanitize_text(c)))
            .filter(|c| !c.is_empty())
            .collect(),
        command_events: 0,
        login_attempts: r.login_attempts.max(0) as u32,
        logins: Vec::new(),
        file_events: r.file_downloads.max(0) as u32,
        file_downloads: Vec::new(),
        client_version: None,
        hassh: None,
        protocol: None,
        event_count: 0,
        country: None,
        asn: None,
    }
}

/// Runs of consecutive days, as windows `[first 00:00, last + 1 day 00:00)`.
fn day_runs(days: &[NaiveDate]) -> Vec<(Window, Vec<NaiveDate>)> {
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let mut runs: Vec<(Window, Vec<NaiveDate>)> = Vec::new();
    for &d in days {
        match runs.last_mut() {
            Some((w, ds)) if ds.last().and_then(|l| l.succ_opt()) == Some(d) => {
                w.end = midnight(d) + ChronoDuration::days(1);
                ds.push(d);
            }
            _ => runs.push((
                Window {
                    start: midnight(d),
                    end: midnight(d) + ChronoDuration::days(1),
                },
                vec![d],
            )),
        }
    }
    runs
}

/// One piece of the window to reduce: a full day (cached afterwards) or a partial edge (`day = None`).
struct Piece {
    day: Option<NaiveDate>,
    sessions: Vec<store::analysis::LongtailSessionRecord>,
}

/// Reads the sessions of these days (contiguous runs in one read each) and of the edge windows, split by piece.
async fn read_pieces(
    db: &AnalysisDb,
    sensor: Option<&str>,
    days: &[NaiveDate],
    edges: &[Window],
) -> Result<Vec<Piece>, TaskError> {
    let mut pieces = Vec::new();
    let mut conn = db.read().await?;
    for (w, ds) in day_runs(days) {
        let rows = store::analysis::longtail_sessions_in_window(&mut conn, sensor, w.start, w.end)
            .await
            .map_err(db_error)?;
        let mut by_day: HashMap<NaiveDate, Vec<_>> = ds.iter().map(|d| (*d, Vec::new())).collect();
        for r in rows {
            by_day
                .get_mut(&r.first_event_at.date_naive())
                .expect("a session of the run starts on one of its days")
                .push(r);
        }
        for d in ds {
            let sessions = by_day.remove(&d).unwrap_or_default();
            pieces.push(Piece {
                day: Some(d),
                sessions,
            });
        }
    }
    for e in edges {
        let sessions =
            store::analysis::longtail_sessions_in_window(&mut conn, sensor, e.start, e.end)
                .await
                .map_err(db_error)?;
        pieces.push(Piece {
            day: None,
            sessions,
        });
    }
    Ok(pieces)
}

/// A reduced piece: its day, its session count, its aggregate, and (for a full day) the aggregate's JSON bytes for
/// the cache.
type Reduced = (Option<NaiveDate>, usize, DayAggregate, Option<Vec<u8>>);

/// Reduces the pieces to aggregates and serialises the full days' ones for the cache, in parallel on the crate's
/// rayon pool.
async fn reduce_pieces(
    pieces: Vec<Piece>,
    params: &LongtailParams,
) -> Result<Vec<Reduced>, TaskError> {
    let p = params.clone();
    run_blocking(move || {
        crate::on_cpu(|| {
            pieces
                .into_par_iter()
                .map(|piece| {
                    let n = piece.sessions.len();
                    let sessions: Vec<Session> =
                        piece.sessions.into_iter().map(to_session).collect();
                    let agg = DayAggregate::from_sessions(
                        piece.day,
                        &sessions,
                        &p,
                        &mut analysis::no_progress(),
                    )
                    .map_err(analysis_error)?;
                    let value = match piece.day {
                        Some(_) => Some(
                            serde_json::to_vec(&agg)
                                .map_err(|e| TaskError::fail("RuntimeError", e.to_string()))?,
                        ),
                        None => None,
                    };
                    Ok((piece.day, n, agg, value))
                })
                .collect()
        })
    })
    .await
}

/// Merges aggregates pairwise in parallel (the merge is order-independent: everything in it is sorted).
fn merge_all(aggs: Vec<DayAggregate>) -> Result<Option<DayAggregate>, TaskError> {
    aggs.into_par_iter().map(|a| Ok(Some(a))).try_reduce(
        || None,
        |x, y| match (x, y) {
            (Some(a), Some(b)) => a.merge(b).map(Some).map_err(analysis_error),
            (a, None) => Ok(a),
            (None, b) => Ok(b),
        },
    )
}

/// What [`collect_days`] found: aggregates for every piece of the window, and how much it reused.
struct Collected {
    aggregates: Vec<DayAggregate>,
    /// Cache rows of the days it computed (not yet written).
    new_rows: Vec<store::day_cache::CachedDay>,
    reused: usize,
    recomputed: usize,
    sessions_read: usize,
    sessions_reused: usize,
    cache_read_s: f64,
    decode_s: f64,
    read_s: f64,
    reduce_s: f64,
}

/// Cached aggregates of the unchanged days, fresh ones (read and reduced) for the others and for the edges.
async fn collect_days(
    db: &AnalysisDb,
    sensor: Option<&str>,
    key: &str,
    params: &LongtailParams,
    fingerprints: &HashMap<NaiveDate, (String, i64)>,
    days: &[NaiveDate],
    edges: &[Window],
) -> Result<Collected, TaskError> {
    let phase = Instant::now();
    let with_data: Vec<NaiveDate> = days
        .iter()
        .copied()
        .filter(|d| fingerprints.contains_key(d))
        .collect();
    let cached = if with_data.is_empty() {
        Vec::new()
    } else {
        let mut conn = db.read().await?;
        store::day_cache::load_days(&mut conn, sensor, key, &with_data)
            .await
            .map_err(db_error)?
    };
    let cache_read_s = phase.elapsed().as_secs_f64();

    // Decode the hits in parallel; a row that does not decode is recomputed.
    let phase = Instant::now();
    let hits: Vec<(NaiveDate, Vec<u8>)> = cached
        .into_iter()
        .filter(|c| {
            c.format_version == AGG_FORMAT
                && fingerprints.get(&c.day).map(|f| &f.0) == Some(&c.fingerprint)
        })
        .map(|c| (c.day, c.aggregate))
        .collect();
    let decoded: Vec<(NaiveDate, Option<DayAggregate>)> = run_blocking(move || {
        Ok(crate::on_cpu(|| {
            hits.into_par_iter()
                .map(|(d, bytes)| (d, serde_json::from_slice::<DayAggregate>(&bytes).ok()))
                .collect()
        }))
    })
    .await?;
    let decode_s = phase.elapsed().as_secs_f64();
    let mut aggregates = Vec::with_capacity(days.len() + edges.len());
    let mut have = std::collections::HashSet::new();
    let mut sessions_reused = 0;
    for (d, agg) in decoded {
        if let Some(a) = agg {
            have.insert(d);
            sessions_reused += fingerprints.get(&d).map_or(0, |f| f.1 as usize);
            aggregates.push(a);
        }
    }
    let reused = have.len();
    let missing: Vec<NaiveDate> = with_data
        .iter()
        .copied()
        .filter(|d| !have.contains(d))
        .collect();

    let phase = Instant::now();
    let pieces = read_pieces(db, sensor, &missing, edges).await?;
    let read_s = phase.elapsed().as_secs_f64();
    let sessions_read = pieces.iter().map(|p| p.sessions.len()).sum();
    let phase = Instant::now();
    let reduced = reduce_pieces(pieces, params).await?;
    let mut new_rows = Vec::new();
    for (day, n, agg, value) in reduced {
        if let (Some(d), Some(aggregate)) = (day, value)
            && let Some((fp, _)) = fingerprints.get(&d)
        {
            new_rows.push(store::day_cache::CachedDay {
                day: d,
                fingerprint: fp.clone(),
                format_version: AGG_FORMAT,
                session_count: n as i32,
                aggregate,
            });
        }
        aggregates.push(agg);
    }
    let recomputed = new_rows.len();
    let reduce_s = phase.elapsed().as_secs_f64();
    Ok(Collected {
        aggregates,
        new_rows,
        reused,
        recomputed,
        sessions_read,
        sessions_reused,
        cache_read_s,
        decode_s,
        read_s,
        reduce_s,
    })
}

/// A hash of the whole window's state: every day's fingerprint (full days and edges alike, since the fingerprint
/// query covers exactly the window), the parameters and the result shape.
fn window_fingerprint(fps: &HashMap<NaiveDate, (String, i64)>, key: &str, shape: Shape) -> String {
    let mut days: Vec<_> = fps.iter().collect();
    days.sort_by_key(|(d, _)| **d);
    let mut text = format!("{key}|{}|", shape.include_sessions);
    for (d, (fp, _)) in days {
        text.push_str(&format!("{d}={fp};"));
    }
    format!("{}:{}", fps.len(), fnv(&text))
}

/// The result as stored and returned: without the per-session lists of the rare commands unless asked for.
fn shaped(mut out: Value, shape: Shape) -> Value {
    if !shape.include_sessions
        && let Some(rcs) = out.get_mut("rare_commands").and_then(Value::as_array_mut)
    {
        for rc in rcs {
            if let Some(o) = rc.as_object_mut() {
                o.remove("sessions");
            }
        }
    }
    out["session_lists_included"] = json!(shape.include_sessions);
    out
}

pub(crate) async fn longtail_task(
    db: Arc<AnalysisDb>,
    ctx: TaskContext,
    (sensor, window_v, mut kwargs): crate::Args,
) -> Result<Value, TaskError> {
    let started = Instant::now();
    let sensor = sensor_arg(LONGTAIL, sensor)?;
    let window = parse_window(&window_v, Utc::now())?;
    let shape = Shape::take(&mut kwargs)?;
    let params: LongtailParams = params_from(LONGTAIL, kwargs)?;
    params.validate().map_err(analysis_error)?;
    let key = params_key(&params);
    let window_key = format!("{key}-{}", u8::from(shape.include_sessions));
    let sensor_ref = sensor.as_deref();
    let (days, edges) = split_days(window);
    let steps = Arc::new(Mutex::new(3u64));
    ctx.update_state(
        "PROGRESS",
        json!({"stage": "fingerprint", "current": 0, "total": days.len(), "step": 0, "steps": 3}),
    );

    // Which days changed? When none did, the window's last result stands.
    let phase = Instant::now();
    let (fingerprints, cached_window) = {
        let mut conn = db.read().await?;
        let fps =
            store::day_cache::day_fingerprints(&mut conn, sensor_ref, window.start, window.end)
                .await
                .map_err(db_error)?;
        let cw = store::day_cache::load_window(
            &mut conn,
            sensor_ref,
            &window_key,
            window.start,
            window.end,
        )
        .await
        .map_err(db_error)?;
        (fps, cw)
    };
    let window_fp = window_fingerprint(&fingerprints, &key, shape);
    let fingerprint_s = phase.elapsed().as_secs_f64();
    if let Some(cw) = cached_window.filter(|c| {
        c.fingerprint == window_fp && c.format_version == RESULT_FORMAT && c.result.is_object()
    }) {
        let mut out = cw.result;
        out["analysis_id"] = json!(cw.analysis_id);
        out["incremental"]["window_reused"] = json!(true);
        out["incremental"]["days_recomputed"] = json!(0);
        out["incremental"]["days_reused"] = out["incremental"]["days_total"].clone();
        out["incremental"]["sessions_read"] = json!(0);
        out["incremental"]["seconds"] = json!({"fingerprints_and_cache_read": fingerprint_s,
            "task": started.elapsed().as_secs_f64()});
        return Ok(out);
    }

    let c = collect_days(&db, sensor_ref, &key, &params, &fingerprints, &days, &edges).await?;
    ctx.check_stop()?;

    // Write the new day aggregates while the window is analysed.
    let new_rows = c.new_rows;
    let writer = {
        let db = db.clone();
        let sensor = sensor.clone();
        let key = key.clone();
        tokio::spawn(async move {
            if new_rows.is_empty() {
                return Ok(0.0);
            }
            let t = Instant::now();
            let mut conn = db.write().await?;
            store::day_cache::store_days(&mut conn, sensor.as_deref(), &key, &new_rows)
                .await
                .map_err(db_error)?;
            Ok::<f64, TaskError>(t.elapsed().as_secs_f64())
        })
    };

    let phase = Instant::now();
    let p = params.clone();
    let mut report = progress_reporter(&ctx, 2, steps.clone());
    let aggregates = c.aggregates;
    let mut result = run_blocking(move || {
        crate::on_cpu(|| {
            let merged = merge_all(aggregates)?;
            match merged {
                Some(m) => analysis::longtail_from_aggregate(&m, &p, &mut report),
                None => analysis::longtail_from_aggregates(Vec::new(), &p, &mut report),
            }
            .map_err(analysis_error)
        })
    })
    .await?;
    let analyze_s = phase.elapsed().as_secs_f64();
    result.memory_usage_mb = peak_rss_mb();
    let cache_write_s = writer
        .await
        .map_err(|e| TaskError::fail("RuntimeError", format!("cache writer: {e}")))??;

    let phase = Instant::now();
    let detections = crate::detections(&result);
    let full = serde_json::to_value(&result)
        .map_err(|e| TaskError::fail("RuntimeError", e.to_string()))?;
    drop(result);
    let mut out = shaped(full, shape);
    let days_with_data = days.iter().filter(|d| fingerprints.contains_key(d)).count();
    out["incremental"] = json!({
        "days_in_window": days.len(), "days_total": days_with_data, "days_reused": c.reused,
        "days_recomputed": c.recomputed, "edge_ranges": edges.len(), "sessions_read": c.sessions_read,
        "sessions_reused": c.sessions_reused, "window_reused": false,
        "seconds": {"fingerprints_and_cache_read": fingerprint_s + c.cache_read_s, "cache_decode": c.decode_s,
                    "read_sessions": c.read_s, "reduce_days": c.reduce_s, "days_collected": c.read_s + c.reduce_s,
                    "cache_write": cache_write_s, "analysis": analyze_s},
    });
    out["sensor"] = json!(sensor);
    out["window"] = json!({"start": celery_proto::time::isoformat(window.start), "end": celery_proto::time::isoformat(window.end)});
    let analysis_row = crate::analysis_row(&sensor, window, &out, started);
    let mut conn = db.write().await?;
    let id = store::analysis::insert_longtail_analysis(&mut conn, &analysis_row, &detections)
        .await
        .map_err(db_error)?;
    out["analysis_id"] = json!(id);
    out["incremental"]["seconds"]["store"] = json!(phase.elapsed().as_secs_f64());
    out["incremental"]["seconds"]["task"] = json!(started.elapsed().as_secs_f64());
    store::day_cache::store_window(
        &mut conn,
        sensor_ref,
        &window_key,
        window.start,
        window.end,
        &store::day_cache::CachedWindow {
            fingerprint: window_fp,
            format_version: RESULT_FORMAT,
            analysis_id: id,
            result: out.clone(),
        },
    )
    .await
    .map_err(db_error)?;
    Ok(out)
}

/// `cowrieprocessor.workers.longtail_day(sensor, day, **thresholds)`: one chord header task. Reduces one UTC day
/// (`"YYYY-MM-DD"`) to its aggregate and caches it (nothing to do when the cached one is current); returns
/// `{"day", "sessions", "reused"}`.
pub(crate) async fn longtail_day_task(
    db: Arc<AnalysisDb>,
    (sensor, day_v, kwargs): crate::Args,
) -> Result<Value, TaskError> {
    let sensor = sensor_arg(crate::LONGTAIL_DAY, sensor)?;
    let day = day_v
        .as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .ok_or_else(|| {
            TaskError::fail(
                "ValueError",
                format!(
                    "{}(): day must be a date as \"YYYY-MM-DD\", got {day_v}",
                    crate::LONGTAIL_DAY
                ),
            )
        })?;
    let params: LongtailParams = params_from(crate::LONGTAIL_DAY, kwargs)?;
    params.validate().map_err(analysis_error)?;
    let key = params_key(&params);
    let from = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let fingerprints = {
        let mut conn = db.read().await?;
        store::day_cache::day_fingerprints(
            &mut conn,
            sensor.as_deref(),
            from,
            from + ChronoDuration::days(1),
        )
        .await
        .map_err(db_error)?
    };
    let c = collect_days(
        &db,
        sensor.as_deref(),
        &key,
        &params,
        &fingerprints,
        &[day],
        &[],
    )
    .await?;
    if !c.new_rows.is_empty() {
        let mut conn = db.write().await?;
        store::day_cache::store_days(&mut conn, sensor.as_deref(), &key, &c.new_rows)
            .await
            .map_err(db_error)?;
    }
    Ok(
        json!({"day": day.to_string(), "sessions": c.sessions_read + c.sessions_reused, "reused": c.reused > 0}),
    )
}

/// `cowrieprocessor.workers.longtail_merge(day_results, sensor=None, time_window="7d", **thresholds)`: the chord
/// body after the `longtail_day` tasks; the longtail result of the window, from the days they cached.
pub(crate) async fn longtail_merge_task(
    db: Arc<AnalysisDb>,
    ctx: TaskContext,
    (day_results, sensor, window_v, kwargs): (Value, Value, Value, Map<String, Value>),
) -> Result<Value, TaskError> {
    let prepared = day_results.as_array().map_or(0, Vec::len);
    let mut out = longtail_task(db, ctx, (sensor, window_v, kwargs)).await?;
    out["incremental"]["days_prepared_by_chord"] = json!(prepared);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_consecutive_days() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let runs = day_runs(&[d("2024-01-01"), d("2024-01-02"), d("2024-01-04")]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].1, vec![d("2024-01-01"), d("2024-01-02")]);
        assert_eq!(
            runs[0].0.end,
            d("2024-01-03").and_hms_opt(0, 0, 0).unwrap().and_utc()
        );
        assert_eq!(runs[1].1, vec![d("2024-01-04")]);
        assert!(day_runs(&[]).is_empty());
    }

    #[test]
    fn the_window_fingerprint_follows_every_day_and_the_shape() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let mut fps = HashMap::new();
        fps.insert(d("2024-01-01"), ("3|10|1|2".to_string(), 3));
        fps.insert(d("2024-01-02"), ("1|4|1|2".to_string(), 1));
        let a = window_fingerprint(&fps, "k", Shape::default());
        assert_eq!(a, window_fingerprint(&fps.clone(), "k", Shape::default()));
        assert_ne!(
            a,
            window_fingerprint(
                &fps,
                "k",
                Shape {
                    include_sessions: true
                }
            )
        );
        assert_ne!(a, window_fingerprint(&fps, "other", Shape::default()));
        fps.insert(d("2024-01-02"), ("2|5|1|3".to_string(), 2));
        assert_ne!(a, window_fingerprint(&fps, "k", Shape::default()));
    }

    #[test]
    fn the_compact_shape_drops_only_the_session_lists() {
        let full = json!({"rare_commands": [{"command": "x", "sessions": [{"session_id": "a"}], "session_count": 1}],
                          "outlier_sessions": [{"session_id": "b"}]});
        let compact = shaped(full.clone(), Shape::default());
        assert_eq!(
            compact["rare_commands"][0],
            json!({"command": "x", "session_count": 1})
        );
        assert_eq!(compact["outlier_sessions"], full["outlier_sessions"]);
        assert_eq!(compact["session_lists_included"], json!(false));
        let kept = shaped(
            full.clone(),
            Shape {
                include_sessions: true,
            },
        );
        assert_eq!(kept["rare_commands"], full["rare_commands"]);
        let mut kw = Map::new();
        kw.insert("include_sessions".into(), json!("yes"));
        assert!(Shape::take(&mut kw).is_err());
    }
}
