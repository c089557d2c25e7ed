//! The input model (one [`Session`] per Cowrie session) and a pure builder that folds a stream
//! of Cowrie JSON events (`serde_json::Value`) into sessions.
//!
//! Counters follow the original loader's session aggregation (spec 2.5), so the detectors see the
//! same numbers: `command_events` counts events whose id contains `command`, `login_attempts`
//! those containing `login`, `file_events` those containing `file_download` or
//! `cowrie.session.file`.
//! The source IP comes from the events themselves (the `cowrie.session.connect` event, else the
//! first event carrying one), never from enrichment (bug F8 of the original).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::defang::create_safe_command;
use crate::error::AnalysisError;
use crate::text::sanitize_text;

/// One login attempt (`cowrie.login.success` or `cowrie.login.failed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginAttempt {
    /// Username tried (control characters removed).
    #[serde(default)]
    pub username: String,
    /// Password tried (control characters removed).
    #[serde(default)]
    pub password: String,
    /// Whether the honeypot accepted it.
    pub success: bool,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
}

/// One file transfer event (`cowrie.session.file_download`, `.failed`, `cowrie.session.file_upload`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDownload {
    /// The event id it came from.
    pub eventid: String,
    /// Source URL when Cowrie logged one.
    #[serde(default)]
    pub url: Option<String>,
    /// SHA-256 of the content when Cowrie logged one.
    #[serde(default)]
    pub shasum: Option<String>,
    /// Where Cowrie stored it.
    #[serde(default)]
    pub outfile: Option<String>,
}

/// Everything the detectors need about one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Cowrie session id.
    pub session_id: String,
    /// First non-empty `sensor` value, if any.
    #[serde(default)]
    pub sensor: Option<String>,
    /// Source IP from the session's own events.
    #[serde(default)]
    pub src_ip: Option<String>,
    /// Earliest event time.
    pub start: DateTime<Utc>,
    /// Latest event time.
    pub end: DateTime<Utc>,
    /// Duration Cowrie logged on `cowrie.session.closed`, in seconds, if present.
    #[serde(default)]
    pub closed_duration: Option<f64>,
    /// Inputs of `cowrie.command.input` events in log order (non-empty only).
    #[serde(default)]
    pub commands: Vec<String>,
    /// Number of events whose id contains `command` (the original's `command_count`).
    #[serde(default)]
    pub command_events: u32,
    /// Number of events whose id contains `login`.
    #[serde(default)]
    pub login_attempts: u32,
    /// Usernames and passwords tried, in log order.
    #[serde(default)]
    pub logins: Vec<LoginAttempt>,
    /// Number of file transfer events (the original's `file_downloads`).
    #[serde(default)]
    pub file_events: u32,
    /// File transfers in log order.
    #[serde(default)]
    pub file_downloads: Vec<FileDownload>,
    /// SSH client version string.
    #[serde(default)]
    pub client_version: Option<String>,
    /// HASSH fingerprint.
    #[serde(default)]
    pub hassh: Option<String>,
    /// `ssh` or `telnet`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Number of events seen.
    #[serde(default)]
    pub event_count: u32,
    /// Country code from enrichment, if the caller has one (the original's always-empty SPUR field).
    #[serde(default)]
    pub country: Option<String>,
    /// ASN from enrichment, if the caller has one.
    #[serde(default)]
    pub asn: Option<String>,
}

impl Session {
    /// `end - start` in seconds (microsecond precision), never negative.
    pub fn duration_seconds(&self) -> f64 {
        let micros = (self.end - self.start)
            .num_microseconds()
            .unwrap_or(i64::MAX);
        (micros as f64 / 1e6).max(0.0)
    }

    /// Start time as seconds since the Unix epoch (Python's `datetime.timestamp()`).
    pub fn start_epoch(&self) -> f64 {
        epoch_seconds(&self.start)
    }

    /// The first successful login with a non-empty username and password.
    pub fn first_success_credentials(&self) -> Option<(&str, &str)> {
        self.logins
            .iter()
            .find(|l| l.success && !l.username.is_empty() && !l.password.is_empty())
            .map(|l| (l.username.as_str(), l.password.as_str()))
    }
}

/// Seconds since the Unix epoch with microseconds, as Python's `datetime.timestamp()`.
pub fn epoch_seconds(t: &DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6
}

/// Parses Cowrie timestamps: `2018-05-06T17:44:32.123456Z`, `...+0000`, `...+00:00`, or no zone (UTC).
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// Cowrie's `duration` on `session.closed`: float seconds, a string `"12.3"`, `"H:MM:SS"`, or `duration_ms`.
fn parse_closed_duration(ev: &Value) -> Option<f64> {
    if let Some(ms) = ev.get("duration_ms").and_then(Value::as_f64) {
        return Some(ms / 1000.0);
    }
    match ev.get("duration")? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            if let Ok(v) = s.trim().parse::<f64>() {
                return Some(v);
            }
            let parts: Vec<&str> = s.trim().split(':').collect();
            if parts.len() == 3 {
                let h: f64 = parts[0].parse().ok()?;
                let m: f64 = parts[1].parse().ok()?;
                let sec: f64 = parts[2].parse().ok()?;
                return Some(h * 3600.0 + m * 60.0 + sec);
            }
            None
        }
        _ => None,
    }
}

/// How events become sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventOptions {
    /// Store commands in their defanged form (what the original loader writes into `input`,
    /// and so what its longtail and botnet analyses see).
    pub defang_commands: bool,
}

impl Default for EventOptions {
    fn default() -> Self {
        EventOptions {
            defang_commands: true,
        }
    }
}

/// Folds Cowrie events into sessions; events may come in any order and from several files.
#[derive(Debug, Default)]
pub struct SessionBuilder {
    opts: EventOptions,
    sessions: HashMap<String, Session>,
    connect_ip: HashMap<String, String>,
    seen: usize,
}

fn str_field<'a>(ev: &'a Value, key: &str) -> Option<&'a str> {
    ev.get(key).and_then(Value::as_str)
}

impl SessionBuilder {
    /// A builder with the given options.
    pub fn new(opts: EventOptions) -> Self {
        SessionBuilder {
            opts,
            ..Default::default()
        }
    }

    /// Adds one event; events without a session id are ignored, events without a usable
    /// timestamp are rejected with [`AnalysisError::BadEvent`] and leave the builder unchanged.
    pub fn push(&mut self, ev: &Value) -> Result<(), AnalysisError> {
        let index = self.seen;
        self.seen += 1;
        let bad = |reason: &str| AnalysisError::BadEvent {
            index,
            reason: reason.to_string(),
        };
        if !ev.is_object() {
            return Err(bad("not a JSON object"));
        }
        let Some(sid) = str_field(ev, "session").or_else(|| str_field(ev, "session_id")) else {
            return Ok(());
        };
        if sid.is_empty() {
            return Ok(());
        }
        let eventid = str_field(ev, "eventid").unwrap_or("");
        let ts_text = str_field(ev, "timestamp")
            .or_else(|| str_field(ev, "time"))
            .ok_or_else(|| bad("no timestamp"))?;
        let ts = parse_timestamp(ts_text).ok_or_else(|| bad("unparsable timestamp"))?;
        let s = self
            .sessions
            .entry(sid.to_string())
            .or_insert_with(|| Session {
                session_id: sid.to_string(),
                sensor: None,
                src_ip: None,
                start: ts,
                end: ts,
                closed_duration: None,
                commands: Vec::new(),
                command_events: 0,
                login_attempts: 0,
                logins: Vec::new(),
                file_events: 0,
                file_downloads: Vec::new(),
                client_version: None,
                hassh: None,
                protocol: None,
                event_count: 0,
                country: None,
                asn: None,
            });
        s.event_count += 1;
        s.start = s.start.min(ts);
        s.end = s.end.max(ts);
        if s.sensor.is_none()
            && let Some(sensor) = str_field(ev, "sensor").filter(|v| !v.is_empty())
        {
            s.sensor = Some(sensor.to_string());
        }
        let ip = str_field(ev, "src_ip")
            .or_else(|| str_field(ev, "peer_ip"))
            .filter(|v| !v.is_empty());
        if let Some(ip) = ip {
            if eventid == "cowrie.session.connect" {
                self.connect_ip.insert(sid.to_string(), ip.to_string());
            }
            if s.src_ip.is_none() {
                s.src_ip = Some(ip.to_string());
            }
        }
        if eventid.contains("command") {
            s.command_events += 1;
        }
        if eventid.contains("login") {
            s.login_attempts += 1;
        }
        if eventid.contains("file_download") || eventid.contains("cowrie.session.file") {
            s.file_events += 1;
            s.file_downloads.push(FileDownload {
                eventid: eventid.to_string(),
                url: str_field(ev, "url").map(sanitize_text),
                shasum: str_field(ev, "shasum").map(str::to_string),
                outfile: str_field(ev, "outfile").map(sanitize_text),
            });
        }
        match eventid {
            "cowrie.command.input" => {
                if let Some(input) = str_field(ev, "input").or_else(|| str_field(ev, "command")) {
                    let clean = sanitize_text(input);
                    let stored = if self.opts.defang_commands {
                        create_safe_command(&clean)
                    } else {
                        clean
                    };
                    if !stored.is_empty() {
                        s.commands.push(stored);
                    }
                }
            }
            "cowrie.login.success" | "cowrie.login.failed" => s.logins.push(LoginAttempt {
                username: str_field(ev, "username")
                    .map(sanitize_text)
                    .unwrap_or_default(),
                password: str_field(ev, "password")
                    .map(sanitize_text)
                    .unwrap_or_default(),
                success: eventid == "cowrie.login.success",
                timestamp: ts,
            }),
            "cowrie.client.version" => {
                s.client_version = str_field(ev, "version").map(sanitize_text);
            }
            "cowrie.client.kex" => s.hassh = str_field(ev, "hassh").map(str::to_string),
            "cowrie.session.connect" => {
                s.protocol = str_field(ev, "protocol").map(str::to_string);
            }
            "cowrie.session.closed" => s.closed_duration = parse_closed_duration(ev),
            _ => {}
        }
        if s.protocol.is_none()
            && let Some(p) = str_field(ev, "protocol")
        {
            s.protocol = Some(p.to_string());
        }
        Ok(())
    }

    /// The sessions, sorted by session id.
    pub fn finish(mut self) -> Vec<Session> {
        for (sid, ip) in self.connect_ip {
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.src_ip = Some(ip);
            }
        }
        let mut out: Vec<Session> = self.sessions.into_values().collect();
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        out
    }
}

/// Folds events into sessions; rejected events are returned beside the sessions.
pub fn sessions_from_events<'a, I>(
    events: I,
    opts: EventOptions,
) -> (Vec<Session>, Vec<AnalysisError>)
where
    I: IntoIterator<Item = &'a Value>,
{
    let mut b = SessionBuilder::new(opts);
    let mut errors = Vec::new();
    for ev in events {
        if let Err(e) = b.push(ev) {
            errors.push(e);
        }
    }
    (b.finish(), errors)
}

/// Parses JSON lines (one Cowrie event per line); blank lines are skipped and lines that are not
/// JSON are returned as errors with their 0-based line index.
pub fn events_from_json_lines(text: &str) -> (Vec<Value>, Vec<AnalysisError>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v) => events.push(v),
            Err(e) => errors.push(AnalysisError::BadEvent {
                index: i,
                reason: format!("not JSON: {e}"),
            }),
        }
    }
    (events, errors)
}
