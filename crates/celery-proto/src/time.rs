//! Timestamps on the wire: Celery's ISO-8601 `eta`/`expires` (naive means UTC) and Python's `isoformat()`.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// Parse an ISO-8601 date-time the way the Celery worker does (`dateutil.isoparse`, naive values are UTC).
pub fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    // Offsets without a colon or a space as the separator.
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(naive.and_utc());
        }
    }
    None
}

/// Python's `datetime.isoformat()` of an aware UTC time: microseconds (omitted when zero) and `+00:00`.
pub fn isoformat(dt: DateTime<Utc>) -> String {
    let fmt = if dt.timestamp_subsec_micros() == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Micros
    };
    dt.to_rfc3339_opts(fmt, false)
}

/// Seconds since the Unix epoch as a float, like Python's `time.time()`.
pub fn unix_f64(dt: DateTime<Utc>) -> f64 {
    dt.timestamp() as f64 + f64::from(dt.timestamp_subsec_micros()) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_celery_sends() {
        let aware = parse_iso("2026-11-22T05:37:55.814957+00:00").unwrap();
        assert_eq!(isoformat(aware), "2026-11-22T05:37:55.814957+00:00");
        let naive = parse_iso("2026-11-22T05:37:55.814957").unwrap();
        assert_eq!(naive, aware);
        let shifted = parse_iso("2026-11-22T07:37:55.814957+02:00").unwrap();
        assert_eq!(shifted, aware);
        assert_eq!(
            isoformat(parse_iso("2030-01-02T03:04:05Z").unwrap()),
            "2030-01-02T03:04:05+00:00"
        );
        assert!(parse_iso("tomorrow").is_none());
        assert!(parse_iso("").is_none());
    }
}
