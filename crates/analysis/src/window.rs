//! Analysis windows as the tasks take them: `"7d"`, `"24h"`, `"90m"`, `"2w"` (ending now) or
//! `{"start": iso, "end": iso}` (end defaults to now). Shared by the worker's tasks and the public API, so a window
//! the API accepts is one the task accepts.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::Value;

/// A resolved analysis window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn hours(&self) -> f64 {
        (self.end - self.start).num_milliseconds() as f64 / 3_600_000.0
    }
}

/// Parse `"7d"`, `"24h"`, `"90m"`, `"2w"` (ending now) or `{"start": iso, "end": iso}` (end defaults to now).
pub fn parse_window(v: &Value, now: DateTime<Utc>) -> Result<Window, String> {
    let bad = |why: String| format!("time_window: {why}");
    match v {
        Value::String(s) => {
            let s = s.trim();
            let (num, unit) = s.split_at(
                s.find(|c: char| !c.is_ascii_digit() && c != '.')
                    .unwrap_or(s.len()),
            );
            let n: f64 = num
                .parse()
                .map_err(|_| bad(format!("{s:?} is not like \"7d\" or \"24h\"")))?;
            let secs = match unit {
                "d" => n * 86_400.0,
                "h" => n * 3_600.0,
                "m" => n * 60.0,
                "w" => n * 7.0 * 86_400.0,
                _ => return Err(bad(format!("{s:?}: unit must be m, h, d or w"))),
            };
            if !(secs > 0.0 && secs <= 3_660.0 * 86_400.0) {
                return Err(bad(format!("{s:?} must be positive and at most ten years")));
            }
            Ok(Window {
                start: now - ChronoDuration::milliseconds((secs * 1000.0) as i64),
                end: now,
            })
        }
        Value::Object(m) => {
            let time = |k: &str| -> Result<Option<DateTime<Utc>>, String> {
                match m.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => parse_time(s)
                        .map(Some)
                        .ok_or_else(|| bad(format!("{k} {s:?} is not an ISO-8601 time"))),
                    Some(other) => Err(bad(format!("{k} must be an ISO-8601 string, got {other}"))),
                }
            };
            let start =
                time("start")?.ok_or_else(|| bad("an object window needs \"start\"".into()))?;
            let end = time("end")?.unwrap_or(now);
            if end <= start {
                return Err(bad(format!("end {end} is not after start {start}")));
            }
            Ok(Window { start, end })
        }
        other => Err(bad(format!(
            "expected \"7d\", \"24h\" or {{\"start\", \"end\"}}, got {other}"
        ))),
    }
}

/// An ISO-8601 time with an offset (RFC 3339, or `+0200` without a colon), or without one (taken as UTC, as Python's naive datetimes are here).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let aware = [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
    ];
    if let Some(t) = aware
        .iter()
        .find_map(|f| DateTime::parse_from_str(s, f).ok())
    {
        return Some(t.with_timezone(&Utc));
    }
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
    .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_parse_like_the_tasks_take_them() {
        let now = parse_time("2026-12-03T12:00:00Z").unwrap();
        let w = parse_window(&json!("24h"), now).unwrap();
        assert_eq!((w.end - w.start).num_hours(), 24);
        assert_eq!(w.end, now);
        let w = parse_window(&json!({"start": "2026-12-01T00:00:00"}), now).unwrap();
        assert_eq!(w.start, parse_time("2026-12-01T00:00:00+00:00").unwrap());
        for bad in [
            json!("7y"),
            json!("0d"),
            json!({"end": "2026-12-01T00:00:00Z"}),
            json!(5),
            json!({"start": "2026-12-04T00:00:00Z"}),
            json!("99999d"),
        ] {
            let e = parse_window(&bad, now).unwrap_err();
            assert!(e.starts_with("time_window: "), "{e}");
        }
    }
}
