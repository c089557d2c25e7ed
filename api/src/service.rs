//! Every operation of the API, once. The REST handlers and the MCP tools both parse their input into a [`Query`]
//! and call these, so the two answer the same numbers and refuse the same input with the same messages.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};
use store::stats::{self, BucketSize, FindingKind, Scope};

use crate::AppState;
use crate::auth::Caller;
use crate::db::Target;
use crate::error::ApiError;
use crate::model::*;
use crate::params::{Query, SCOPE_PARAMS};

/// Parameters of each read, beside the scope ones.
pub const SESSIONS_STATS_PARAMS: &[&str] = &["bucket_size"];
pub const THREATS_PARAMS: &[&str] = &["limit"];
pub const SENSORS_PARAMS: &[&str] = &[];
pub const SESSION_LIST_PARAMS: &[&str] = &["src_ip", "username", "has_commands", "limit", "cursor"];
pub const SESSION_PARAMS: &[&str] = &["events_limit"];
pub const FINDINGS_PARAMS: &[&str] = &["sensor", "limit", "cursor"];

/// Parse a query string for an endpoint that takes the scope parameters plus `extra`.
pub fn scoped_query(qs: &str, extra: &[&str]) -> Result<Query, ApiError> {
    let allowed: Vec<&str> = SCOPE_PARAMS.iter().chain(extra).copied().collect();
    Query::parse(qs, &allowed)
}

fn window_info(scope: &Scope, target: Target) -> WindowInfo {
    WindowInfo {
        start: scope.start,
        end: scope.end,
        sensors: scope.sensors.clone(),
        source: target.as_str().to_string(),
    }
}

impl AppState {
    /// The sensor names the database knows (cached for a few seconds, re-read at most once a second on a miss).
    async fn known_sensors(&self, want: &[String]) -> Result<Vec<String>, ApiError> {
        {
            let g = self.sensors.lock().expect("sensors");
            let fresh = g.1.is_some_and(|t| t.elapsed() < Duration::from_secs(10));
            let recent = g.1.is_some_and(|t| t.elapsed() < Duration::from_secs(1));
            if (fresh && want.iter().all(|s| g.0.contains(s))) || recent {
                return Ok(g.0.clone());
            }
        }
        let (names, _) = self.db.read(&|c| Box::pin(stats::known_sensors(c))).await?;
        *self.sensors.lock().expect("sensors") = (names.clone(), Some(Instant::now()));
        Ok(names)
    }

    /// Every sensor named must be one the database knows (else 404 naming the first unknown one).
    async fn check_sensors(&self, sensors: &[String]) -> Result<(), ApiError> {
        if sensors.is_empty() {
            return Ok(());
        }
        let known = self.known_sensors(sensors).await?;
        match sensors.iter().find(|s| !known.contains(s)) {
            Some(s) => Err(ApiError::UnknownSensor(s.clone())),
            None => Ok(()),
        }
    }

    /// The scope of a query: its window and its sensors, each sensor known (else 404 naming it).
    pub async fn scope(&self, q: &Query) -> Result<Scope, ApiError> {
        let (start, end) = q.window(Utc::now())?;
        let sensors = q.sensors()?;
        self.check_sensors(&sensors).await?;
        Ok(Scope {
            sensors,
            start,
            end,
        })
    }

    /// `GET /api/v1/statistics/sessions`.
    pub async fn session_statistics(&self, q: &Query) -> Result<SessionStatistics, ApiError> {
        let size = match q.one("bucket_size")? {
            None | Some("day") => BucketSize::Day,
            Some("hour") => BucketSize::Hour,
            Some(v) => {
                return Err(ApiError::param(
                    "bucket_size",
                    format!("{v:?} is not hour or day"),
                ));
            }
        };
        let scope = self.scope(q).await?;
        let buckets = (scope.end - scope.start).num_seconds() / size.seconds();
        if buckets > 10_000 {
            return Err(ApiError::param(
                "bucket_size",
                format!(
                    "{buckets} buckets of an {} are too many (at most 10000); use day",
                    size.as_str()
                ),
            ));
        }
        let sc = scope.clone();
        let ((totals, timeline), target) = self
            .db
            .read(&move |c| {
                let sc = sc.clone();
                Box::pin(async move {
                    let t = stats::session_totals(c, &sc).await?;
                    let tl = stats::timeline(c, &sc, size).await?;
                    Ok((t, tl))
                })
            })
            .await?;
        Ok(SessionStatistics {
            window: window_info(&scope, target),
            total_sessions: totals.total_sessions,
            unique_ips: totals.unique_ips,
            login_attempts: totals.login_attempts,
            successful_logins: totals.successful_logins,
            sessions_with_commands: totals.sessions_with_commands,
            file_downloads: totals.file_downloads,
            avg_session_seconds: totals.avg_session_seconds,
            bucket_size: size.as_str().to_string(),
            timeline: timeline
                .into_iter()
                .map(|r| TimelineBucket {
                    bucket: r.bucket,
                    sessions: r.sessions,
                    events: r.events,
                    unique_ips: r.unique_ips,
                })
                .collect(),
        })
    }

    /// `GET /api/v1/statistics/threats`.
    pub async fn threat_statistics(&self, q: &Query) -> Result<ThreatStatistics, ApiError> {
        let limit = q.int("limit", 1, 1000, 10)?;
        let scope = self.scope(q).await?;
        let sc = scope.clone();
        let (rows, target) = self
            .db
            .read(&move |c| {
                let sc = sc.clone();
                Box::pin(async move {
                    let ips = stats::top_source_ips(c, &sc, limit).await?;
                    let (creds, users) =
                        stats::top_credentials_and_usernames(c, &sc, limit).await?;
                    let cmds = stats::top_commands(c, &sc, limit).await?;
                    let dls = stats::downloads(c, &sc, limit).await?;
                    let mut latest = Vec::new();
                    for kind in FindingKind::ALL {
                        latest.push(stats::findings(c, kind, &sc.sensors, None, 1).await?.pop());
                    }
                    Ok((ips, creds, users, cmds, dls, latest))
                })
            })
            .await?;
        let (ips, creds, users, cmds, dls, latest) = rows;
        let mut latest = latest.into_iter();
        let mut next =
            |kind: FindingKind| latest.next().flatten().map(|r| finding_summary(kind, r));
        let latest_findings = LatestFindings {
            longtail: next(FindingKind::Longtail),
            snowshoe: next(FindingKind::Snowshoe),
            botnet: next(FindingKind::Botnet),
        };
        Ok(ThreatStatistics {
            window: window_info(&scope, target),
            top_source_ips: ips
                .into_iter()
                .map(|r| SourceIp {
                    ip: r.ip,
                    sessions: r.sessions,
                    events: r.events,
                    first_seen: r.first_seen,
                    last_seen: r.last_seen,
                })
                .collect(),
            top_credentials: creds
                .into_iter()
                .map(|r| Credential {
                    username: r.username,
                    password: r.password,
                    attempts: r.attempts,
                    successes: r.successes,
                })
                .collect(),
            top_usernames: users
                .into_iter()
                .map(|r| Username {
                    username: r.username,
                    attempts: r.attempts,
                    successes: r.successes,
                })
                .collect(),
            top_commands: cmds
                .into_iter()
                .map(|r| {
                    let a = analysis::analyze_command(&r.command);
                    Command {
                        risk_score: analysis::command_risk_score(&r.command),
                        risk_level: a.risk_level.as_str().to_string(),
                        command: analysis::create_safe_command(&r.command),
                        count: r.count,
                    }
                })
                .collect(),
            downloads: dls
                .into_iter()
                .map(|r| Download {
                    url: r.url,
                    sha256: r.sha256,
                    count: r.count,
                })
                .collect(),
            latest_findings,
        })
    }

    /// `GET /api/v1/statistics/sensors`.
    pub async fn sensor_statistics(&self, q: &Query) -> Result<SensorStatistics, ApiError> {
        let scope = self.scope(q).await?;
        let now = Utc::now();
        let recent =
            now - chrono::Duration::from_std(self.settings.failing_window).unwrap_or_default();
        let stale = chrono::Duration::from_std(self.settings.stale_after).unwrap_or_default();
        let sc = scope.clone();
        let (rows, target) = self
            .db
            .read(&move |c| {
                let sc = sc.clone();
                Box::pin(async move { stats::sensors(c, &sc, recent).await })
            })
            .await?;
        Ok(SensorStatistics {
            window: window_info(&scope, target),
            stale_after_seconds: self.settings.stale_after.as_secs(),
            sensors: rows
                .into_iter()
                .map(|r| {
                    let status = if r.recent_dead_letters > 0 {
                        "failing"
                    } else if r.last_ingest_at.is_none_or(|t| now - t > stale) {
                        "stale"
                    } else {
                        "ok"
                    };
                    SensorStatus {
                        sensor: r.sensor,
                        events: r.events,
                        sessions: r.sessions,
                        first_event_at: r.first_event_at,
                        last_event_at: r.last_event_at,
                        last_ingest_at: r.last_ingest_at,
                        dead_letters: r.dead_letters,
                        status: status.to_string(),
                    }
                })
                .collect(),
        })
    }

    /// `GET /api/v1/sessions`.
    pub async fn search_sessions(&self, q: &Query) -> Result<SessionList, ApiError> {
        let limit = q.int("limit", 1, 1000, 50)?;
        let filter = stats::SessionFilter {
            src_ip: q.text("src_ip", 64)?,
            username: q.text("username", 256)?,
            has_commands: q.bool("has_commands")?,
            after: q.one("cursor")?.map(decode_session_cursor).transpose()?,
        };
        let scope = self.scope(q).await?;
        let sc = scope.clone();
        let f = filter.clone();
        let (mut rows, target) = self
            .db
            .read(&move |c| {
                let (sc, f) = (sc.clone(), f.clone());
                Box::pin(async move { stats::list_sessions(c, &sc, &f, limit + 1).await })
            })
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last())
            .flatten()
            .map(|r| encode_session_cursor(r.first_event_at, &r.session_id));
        Ok(SessionList {
            window: window_info(&scope, target),
            sessions: rows.into_iter().map(session_summary).collect(),
            next_cursor,
        })
    }

    /// `GET /api/v1/sessions/{id}`.
    pub async fn session_detail(&self, id: &str, q: &Query) -> Result<SessionDetail, ApiError> {
        let limit = q.int("events_limit", 1, 100_000, 10_000)?;
        let sid = id.to_string();
        let ((summary, mut events), _) = self
            .db
            .read(&move |c| {
                let sid = sid.clone();
                Box::pin(async move {
                    let s = stats::session(c, &sid).await?;
                    let e = match s {
                        Some(_) => stats::session_events(c, &sid, limit + 1).await?,
                        None => Vec::new(),
                    };
                    Ok((s, e))
                })
            })
            .await?;
        let summary = summary.ok_or_else(|| ApiError::SessionNotFound(id.to_string()))?;
        let truncated = events.len() as i64 > limit;
        events.truncate(limit as usize);
        Ok(SessionDetail {
            session: session_summary(summary),
            events: events
                .into_iter()
                .map(|e| SessionEvent {
                    command_safe: (e.event_type == "cowrie.command.input")
                        .then(|| e.payload.get("input").and_then(Value::as_str))
                        .flatten()
                        .map(analysis::create_safe_command),
                    id: e.id,
                    timestamp: e.timestamp,
                    event_type: e.event_type,
                    risk_score: e.risk_score,
                    payload: e.payload,
                })
                .collect(),
            events_truncated: truncated,
        })
    }

    /// `GET /api/v1/findings/{kind}`.
    pub async fn list_findings(&self, kind: &str, q: &Query) -> Result<FindingList, ApiError> {
        let kind = finding_kind(kind)?;
        let limit = q.int("limit", 1, 1000, 20)?;
        let before = match q.one("cursor")? {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::param("cursor", format!("{c:?} is not a cursor from next_cursor"))
            })?),
        };
        let sensors = q.sensors()?;
        self.check_sensors(&sensors).await?;
        let (mut rows, _) = self
            .db
            .read(&move |c| {
                let sensors = sensors.clone();
                Box::pin(async move { stats::findings(c, kind, &sensors, before, limit + 1).await })
            })
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last())
            .flatten()
            .map(|r| r.id.to_string());
        Ok(FindingList {
            kind: kind.as_str().to_string(),
            findings: rows.into_iter().map(|r| finding_summary(kind, r)).collect(),
            next_cursor,
        })
    }

    /// `GET /api/v1/findings/{kind}/{id}`.
    pub async fn finding(&self, kind: &str, id: &str) -> Result<FindingDetail, ApiError> {
        let kind = finding_kind(kind)?;
        let not_found = || ApiError::FindingNotFound {
            kind: kind.as_str().to_string(),
            id: id.to_string(),
        };
        let n: i64 = id.parse().map_err(|_| not_found())?;
        let ((row, detections), _) = self
            .db
            .read(&move |c| {
                Box::pin(async move {
                    let row = stats::finding(c, kind, n).await?;
                    let det = match (kind, &row) {
                        (FindingKind::Longtail, Some(_)) => {
                            Some(stats::longtail_detections(c, n, 10_000).await?)
                        }
                        _ => None,
                    };
                    Ok((row, det))
                })
            })
            .await?;
        let mut row = row.ok_or_else(not_found)?;
        let result = row.result.take().unwrap_or(Value::Null);
        Ok(FindingDetail {
            finding: finding_summary(kind, row),
            result,
            detections: detections.map(|d| {
                d.into_iter()
                    .map(|d| Detection {
                        id: d.id,
                        detection_type: d.detection_type,
                        session_id: d.session_id,
                        source_ip: d.source_ip,
                        detection_data: d.detection_data,
                    })
                    .collect()
            }),
        })
    }

    /// `POST /api/v1/analyses`: validate, then submit the task through the shared routing.
    pub async fn submit_analysis(
        &self,
        caller: &Caller,
        req: &AnalysisRequest,
    ) -> Result<JobAccepted, ApiError> {
        let invalid = |parameter: &str, message: String| ApiError::InvalidBody {
            parameter: Some(parameter.to_string()),
            message,
        };
        if let Some(s) = &req.sensor {
            self.check_sensors(std::slice::from_ref(s)).await?;
        }
        let window = req.time_window.clone().unwrap_or_else(|| Value::from("7d"));
        analysis::window::parse_window(&window, Utc::now())
            .map_err(|m| invalid("time_window", m))?;
        check_params(req.kind, &req.params)
            .map_err(|m| invalid("params", format!("params: {m}")))?;
        if let Some(p) = req.priority
            && !(0..=9).contains(&p)
        {
            return Err(invalid(
                "priority",
                format!("priority: {p} is out of range 0 to 9"),
            ));
        }
        let jobs = self.jobs()?;
        let job = jobs::JobRequest {
            task: req.kind.task().to_string(),
            args: vec![
                req.sensor.clone().map(Value::from).unwrap_or(Value::Null),
                window,
            ],
            kwargs: req.params.clone(),
            queue: None,
            priority: req.priority,
            requirements: None,
            countdown: None,
            eta: None,
            expires: None,
        };
        let record = match jobs.submit(&job).await {
            Ok(r) => r,
            Err(e) => {
                let outcome = match &e {
                    jobs::JobError::RoutingRejected { .. } => "rejected",
                    _ => "error",
                };
                self.metrics
                    .jobs_submitted
                    .with_label_values(&[req.kind.as_str(), outcome])
                    .inc();
                return Err(e.into());
            }
        };
        self.metrics
            .jobs_submitted
            .with_label_values(&[req.kind.as_str(), record.decision.outcome.kind()])
            .inc();
        tracing::info!(id = %record.id, kind = req.kind.as_str(), key = %caller.key_id,
            queue = ?record.published_to, "analysis submitted");
        Ok(JobAccepted {
            status_url: format!("/api/v1/jobs/{}", record.id),
            events_url: format!("/api/v1/jobs/{}/events", record.id),
            id: record.id,
            kind: req.kind.as_str().to_string(),
            task: record.task,
            queue: record.published_to,
            node: record.node,
            decision: serde_json::to_value(&record.decision).unwrap_or(Value::Null),
        })
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<JobStatus, ApiError> {
        let view = self.jobs()?.view(id).await?;
        job_status(&view)
    }

    /// `DELETE /api/v1/jobs/{id}`.
    pub async fn revoke_job(&self, id: &str, terminate: bool) -> Result<JobRevoked, ApiError> {
        self.jobs()?.revoke(id, terminate, None).await?;
        Ok(JobRevoked {
            id: id.to_string(),
            revoked: true,
            terminate,
        })
    }

    /// Readiness: PostgreSQL answers (required), the replica and Redis (reported).
    pub async fn health(&self) -> Result<Health, ApiError> {
        self.db.ping_primary().await?;
        let redis = match self.redis.get() {
            None => "unavailable".to_string(),
            Some(b) => match tokio::time::timeout(Duration::from_secs(1), b.ping()).await {
                Ok(Ok(())) => "ok".into(),
                Ok(Err(e)) => format!("unavailable: {e}"),
                Err(_) => "unavailable: no answer within 1 s".into(),
            },
        };
        let replica = match (&self.settings.db.replica_url, self.db.replica_in_use()) {
            (None, _) => "not configured".to_string(),
            (Some(_), true) => "ok".into(),
            (Some(_), false) => "down (reads fall back to the primary)".into(),
        };
        let degraded = redis != "ok" || replica.starts_with("down");
        Ok(Health {
            status: if degraded { "degraded" } else { "ok" }.into(),
            database: "ok".into(),
            replica,
            redis,
        })
    }
}

/// Convert the shared job view into the API's documented shape.
pub fn job_status(view: &jobs::JobView) -> Result<JobStatus, ApiError> {
    serde_json::to_value(view)
        .and_then(serde_json::from_value)
        .map_err(|e| ApiError::Internal(format!("job view: {e}")))
}

fn finding_kind(kind: &str) -> Result<FindingKind, ApiError> {
    FindingKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| {
            ApiError::RouteNotFound(format!(
                "findings of kind {kind:?} (longtail, snowshoe, botnet)"
            ))
        })
}

fn finding_summary(kind: FindingKind, r: stats::FindingRow) -> FindingSummary {
    FindingSummary {
        id: r.id,
        kind: kind.as_str().to_string(),
        detected_at: r.detected_at,
        sensor: r.sensor,
        window_start: r.window_start,
        window_end: r.window_end,
        score: r.score.filter(|s| s.is_finite()),
        positive: r.positive,
        summary: r.summary,
        recommendation: r.recommendation,
    }
}

fn session_summary(r: stats::SessionSummary) -> SessionSummary {
    SessionSummary {
        session_id: r.session_id,
        sensor: r.sensor,
        src_ip: r.src_ip,
        first_event_at: r.first_event_at,
        last_event_at: r.last_event_at,
        event_count: r.event_count,
        command_count: r.command_count,
        login_attempts: r.login_attempts,
        file_downloads: r.file_downloads,
        login_success: r.login_success,
        username: r.username,
        password: r.password,
        protocol: r.protocol,
        client_version: r.client_version,
        hassh: r.hassh,
        duration_seconds: r.duration_seconds.filter(|d| d.is_finite()),
        risk_score: r.risk_score,
    }
}

fn encode_session_cursor(t: DateTime<Utc>, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{id}",
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    ))
}

fn decode_session_cursor(c: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let bad = || ApiError::param("cursor", format!("{c:?} is not a cursor from next_cursor"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (t, id) = text.split_once('|').ok_or_else(bad)?;
    let t = DateTime::parse_from_rfc3339(t).map_err(|_| bad())?;
    if id.contains('\0') {
        return Err(bad());
    }
    Ok((t.with_timezone(&Utc), id.to_string()))
}

/// Thresholds must be fields of the detector's parameters with values of the right type, as the task will check.
pub fn check_params(kind: AnalysisKind, params: &Map<String, Value>) -> Result<(), String> {
    fn merge<P: serde::Serialize + serde::de::DeserializeOwned + Default>(
        params: &Map<String, Value>,
    ) -> Result<(), String> {
        let Value::Object(mut base) =
            serde_json::to_value(P::default()).map_err(|e| e.to_string())?
        else {
            return Err("parameters are not an object".into());
        };
        let known: Vec<String> = base.keys().cloned().collect();
        for (k, v) in params {
            if !base.contains_key(k) {
                return Err(format!(
                    "unknown parameter {k:?} (known: {})",
                    known.join(", ")
                ));
            }
            base.insert(k.clone(), v.clone());
        }
        serde_json::from_value::<P>(Value::Object(base))
            .map(|_| ())
            .map_err(|e| format!("bad parameter value: {e}"))
    }
    match kind {
        AnalysisKind::Longtail => merge::<analysis::LongtailParams>(params),
        AnalysisKind::Snowshoe => merge::<analysis::SnowshoeParams>(params),
        AnalysisKind::Botnet => merge::<analysis::BotnetParams>(params),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_cursors_round_trip_and_refuse_garbage() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = encode_session_cursor(t, "abc|def");
        assert_eq!(
            decode_session_cursor(&c).unwrap(),
            (t, "abc|def".to_string())
        );
        for bad in ["", "!!!", "bm90IGEgY3Vyc29y"] {
            let e = decode_session_cursor(bad).unwrap_err();
            assert_eq!(e.parameter(), Some("cursor"));
        }
    }

    #[test]
    fn thresholds_are_checked_like_the_task_checks_them() {
        let p = |v: Value| v.as_object().unwrap().clone();
        assert!(
            check_params(
                AnalysisKind::Botnet,
                &p(json!({"credential_reuse_threshold": 5}))
            )
            .is_ok()
        );
        assert!(check_params(AnalysisKind::Longtail, &p(json!({"rarity_threshold": 0.1}))).is_ok());
        let e = check_params(AnalysisKind::Snowshoe, &p(json!({"nope": 1}))).unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
        assert!(
            check_params(
                AnalysisKind::Botnet,
                &p(json!({"credential_reuse_threshold": "x"}))
            )
            .is_err()
        );
    }
}
