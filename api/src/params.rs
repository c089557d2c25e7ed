//! Query-string parsing with errors that name the parameter: repeatable `sensor`, the time window (`start`/`end`
//! RFC 3339, or `days=N`, default the last 7 days), `limit`, and strict refusal of parameters an endpoint does not take.

use chrono::{DateTime, Duration, Utc};

use crate::error::ApiError;

/// The window and sensor parameters every statistics endpoint takes.
pub const SCOPE_PARAMS: [&str; 4] = ["sensor", "start", "end", "days"];

/// The longest window a request may ask for.
pub const MAX_DAYS: i64 = 3660;

/// A parsed query string.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parse `qs`, refusing any parameter not in `allowed`.
    pub fn parse(qs: &str, allowed: &[&str]) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(qs.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (k, _) in &pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::UnknownParameter(k.clone()));
            }
        }
        Ok(Query { pairs })
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of a parameter given at most once.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.all(name).as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => Err(ApiError::param(name, "given more than once")),
        }
    }

    /// An integer in `min..=max`, or `default`.
    pub fn int(&self, name: &str, min: i64, max: i64, default: i64) -> Result<i64, ApiError> {
        let Some(v) = self.one(name)? else {
            return Ok(default);
        };
        let n: i64 = v
            .trim()
            .parse()
            .map_err(|_| ApiError::param(name, format!("{v:?} is not a whole number")))?;
        if !(min..=max).contains(&n) {
            return Err(ApiError::param(
                name,
                format!("{n} is out of range {min} to {max}"),
            ));
        }
        Ok(n)
    }

    /// `true`/`false` (also `1`/`0`), if given.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.one(name)? {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(v) => Err(ApiError::param(name, format!("{v:?} is not true or false"))),
        }
    }

    /// A non-empty text value of at most `max_len` characters, if given.
    pub fn text(&self, name: &str, max_len: usize) -> Result<Option<String>, ApiError> {
        match self.one(name)? {
            None => Ok(None),
            Some("") => Err(ApiError::param(name, "is empty")),
            Some(v) if v.chars().count() > max_len => Err(ApiError::param(
                name,
                format!("is longer than {max_len} characters"),
            )),
            Some(v) if v.contains('\0') => Err(ApiError::param(name, "contains a NUL character")),
            Some(v) => Ok(Some(v.to_string())),
        }
    }

    /// An RFC 3339 time, if given.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.one(name)? {
            None => Ok(None),
            Some(v) => DateTime::parse_from_rfc3339(v.trim())
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| {
                    ApiError::param(
                        name,
                        format!("{v:?} is not an RFC 3339 time like 2024-05-01T00:00:00Z ({e})"),
                    )
                }),
        }
    }

    /// The sensors named (repeatable `sensor`), deduplicated, in order.
    pub fn sensors(&self) -> Result<Vec<String>, ApiError> {
        let mut out: Vec<String> = Vec::new();
        for s in self.all("sensor") {
            if s.is_empty() || s.len() > 128 || s.contains('\0') {
                return Err(ApiError::param(
                    "sensor",
                    "must be 1 to 128 characters without NUL",
                ));
            }
            if !out.iter().any(|x| x == s) {
                out.push(s.to_string());
            }
        }
        Ok(out)
    }

    /// The window `[start, end)`: `start` and `end`, or `days` (ending at `end` or now); default the last 7 days.
    pub fn window(&self, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let start = self.time("start")?;
        let end = self.time("end")?;
        let days = match self.one("days")? {
            None => None,
            Some(_) => Some(self.int("days", 1, MAX_DAYS, 7)?),
        };
        let window_err = |parameter: &str, message: String| ApiError::InvalidWindow {
            parameter: parameter.to_string(),
            message,
        };
        if days.is_some() && start.is_some() {
            return Err(window_err(
                "days",
                "give `days` or `start`, not both".into(),
            ));
        }
        let end = end.unwrap_or(now);
        let start = match (start, days) {
            (Some(s), _) => s,
            (None, d) => end
                .checked_sub_signed(Duration::days(d.unwrap_or(7)))
                .ok_or_else(|| window_err("days", "reaches before the earliest time".into()))?,
        };
        if end <= start {
            return Err(window_err(
                "end",
                format!(
                    "{} is not after start {}",
                    end.to_rfc3339(),
                    start.to_rfc3339()
                ),
            ));
        }
        if (end - start).num_days() > MAX_DAYS {
            return Err(window_err(
                "start",
                format!("the window is longer than {MAX_DAYS} days"),
            ));
        }
        Ok((start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<Query, ApiError> {
        Query::parse(s, &["sensor", "start", "end", "days", "limit", "flag"])
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let e = q("limit=5&colour=red").unwrap_err();
        assert_eq!(e.code(), "unknown_parameter");
        assert_eq!(e.parameter(), Some("colour"));
        let e = q("limit=5&limit=6")
            .unwrap()
            .int("limit", 1, 10, 3)
            .unwrap_err();
        assert_eq!(e.parameter(), Some("limit"));
    }

    #[test]
    fn limits_and_booleans() {
        assert_eq!(q("").unwrap().int("limit", 1, 1000, 10).unwrap(), 10);
        assert_eq!(
            q("limit=1000").unwrap().int("limit", 1, 1000, 10).unwrap(),
            1000
        );
        for bad in ["limit=0", "limit=1001", "limit=x", "limit=-1", "limit=1e3"] {
            let e = q(bad).unwrap().int("limit", 1, 1000, 10).unwrap_err();
            assert_eq!(
                (e.code(), e.parameter()),
                ("invalid_parameter", Some("limit")),
                "{bad}"
            );
        }
        assert_eq!(q("flag=1").unwrap().bool("flag").unwrap(), Some(true));
        assert!(q("flag=yes").unwrap().bool("flag").is_err());
    }

    #[test]
    fn windows_default_to_seven_days_and_refuse_nonsense() {
        let (s, e) = q("").unwrap().window(now()).unwrap();
        assert_eq!((e - s).num_days(), 7);
        assert_eq!(e, now());
        let (s, e) = q("days=2&end=2026-01-10T00:00:00Z")
            .unwrap()
            .window(now())
            .unwrap();
        assert_eq!(s.to_rfc3339(), "2026-01-08T00:00:00+00:00");
        assert_eq!(e.to_rfc3339(), "2026-01-10T00:00:00+00:00");
        let (s, _) = q("start=2026-12-01T00:00:00%2B02:00")
            .unwrap()
            .window(now())
            .unwrap();
        assert_eq!(s.to_rfc3339(), "2026-11-30T22:00:00+00:00");
        let cases = [
            ("start=yesterday", "start", "invalid_parameter"),
            (
                "start=2026-12-02T00:00:00Z&end=2026-12-01T00:00:00Z",
                "end",
                "invalid_window",
            ),
            (
                "days=3&start=2026-12-01T00:00:00Z",
                "days",
                "invalid_window",
            ),
            ("days=0", "days", "invalid_parameter"),
            ("days=99999", "days", "invalid_parameter"),
            ("start=1900-01-01T00:00:00Z", "start", "invalid_window"),
        ];
        for (query, param, code) in cases {
            let e = q(query).unwrap().window(now()).unwrap_err();
            assert_eq!((e.code(), e.parameter()), (code, Some(param)), "{query}");
        }
    }

    #[test]
    fn sensors_repeat_and_are_checked() {
        assert_eq!(
            q("sensor=a&sensor=b&sensor=a").unwrap().sensors().unwrap(),
            vec!["a", "b"]
        );
        assert!(q("sensor=").unwrap().sensors().is_err());
    }
}
