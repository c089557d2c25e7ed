//! Rate limits per key and route class, shared by every API replica through Redis (`broker::Broker::rate_limit`,
//! GCRA in one Lua script).
//!
//! Classes: `statistics` (every read, default 100/minute) and `analyses` (job submissions, default 5/minute), as the
//! original plan set them. A key may override either (`100/minute`, or `statistics=1000/minute,analyses=10/minute`).
//! Answers carry the IETF draft's headers (`RateLimit-Policy: "statistics";q=100;w=60` and
//! `RateLimit: "statistics";r=42;t=12`); a refusal is 429 with `Retry-After`.
//! When Redis cannot be asked (down, or no answer within `timeout`), reads are let through (fail open: logged and
//! counted) and submissions are refused with 503 (fail closed); for a second after such a failure Redis is not asked
//! at all, so a dead Redis costs requests no waiting.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::redis_handle::RedisHandle;

/// `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    pub limit: u64,
    pub period: Duration,
}

impl RatePolicy {
    /// Parse `N/second|minute|hour|day` (also `s`, `sec`, `min`, `m`, `h`, `d`).
    pub fn parse(s: &str) -> Result<RatePolicy, String> {
        let (n, unit) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("rate limit {s:?} is not N/unit (e.g. 100/minute)"))?;
        let limit: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("rate limit {s:?}: {n:?} is not a whole number"))?;
        if limit == 0 || limit > 1_000_000_000 {
            return Err(format!("rate limit {s:?}: the count must be 1 to 10^9"));
        }
        let secs = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            other => {
                return Err(format!(
                    "rate limit {s:?}: unknown unit {other:?} (second, minute, hour, day)"
                ));
            }
        };
        Ok(RatePolicy {
            limit,
            period: Duration::from_secs(secs),
        })
    }

    pub fn text(&self) -> String {
        let unit = match self.period.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            86_400 => "day",
            _ => return format!("{}/{}s", self.limit, self.period.as_secs()),
        };
        format!("{}/{unit}", self.limit)
    }
}

/// A route class: which bucket a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Statistics,
    Analyses,
}

impl RouteClass {
    pub const ALL: [RouteClass; 2] = [RouteClass::Statistics, RouteClass::Analyses];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Statistics => "statistics",
            RouteClass::Analyses => "analyses",
        }
    }

    /// What the limiter does with this class while Redis cannot be asked: statistics reads stay open, submissions
    /// close (the `action` label of `celeriac_api_rate_limiter_errors_total`).
    pub fn when_redis_fails(self) -> &'static str {
        match self {
            RouteClass::Statistics => "open",
            RouteClass::Analyses => "closed",
        }
    }
}

/// A key's own limits (each `None` = the class default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub statistics: Option<RatePolicy>,
    pub analyses: Option<RatePolicy>,
}

impl KeyLimits {
    /// `100/minute` (statistics) or `statistics=100/minute,analyses=10/minute`.
    pub fn parse(s: &str) -> Result<KeyLimits, String> {
        let mut out = KeyLimits::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => out.statistics = Some(RatePolicy::parse(part)?),
                Some((class, policy)) => match class.trim() {
                    "statistics" => out.statistics = Some(RatePolicy::parse(policy)?),
                    "analyses" => out.analyses = Some(RatePolicy::parse(policy)?),
                    other => {
                        return Err(format!(
                            "unknown rate-limit class {other:?} (statistics, analyses)"
                        ));
                    }
                },
            }
        }
        if out == KeyLimits::default() {
            return Err(format!("rate limit {s:?} names no limit"));
        }
        Ok(out)
    }
}

/// The headers to add to an answered request.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitHeaders {
    pub policy: String,
    pub state: String,
}

/// The limiter.
pub struct Limiter {
    redis: Arc<RedisHandle>,
    /// After a failed check, Redis is not asked again until this time: while it is down every request is decided at
    /// once (open or closed) instead of waiting `timeout` each.
    down_until: std::sync::Mutex<Option<std::time::Instant>>,
    pub statistics: RatePolicy,
    pub analyses: RatePolicy,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Limiter {
    pub fn new(
        redis: Arc<RedisHandle>,
        statistics: RatePolicy,
        analyses: RatePolicy,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Limiter {
        // Every label combination starts at 0, so a rate or an alert sees a series before the first event
        // (Prometheus's advice: a series that appears only on its first increment hides that first increase).
        for class in RouteClass::ALL {
            metrics.rate_limited.with_label_values(&[class.as_str()]);
            metrics
                .limiter_errors
                .with_label_values(&[class.as_str(), class.when_redis_fails()]);
        }
        Limiter {
            redis,
            down_until: std::sync::Mutex::new(None),
            statistics,
            analyses,
            timeout,
            metrics,
        }
    }

    /// The policy of a class for a key: its own limit when it has one, else the server's.
    pub fn policy(&self, limits: &KeyLimits, class: RouteClass) -> RatePolicy {
        match class {
            RouteClass::Statistics => limits.statistics.unwrap_or(self.statistics),
            RouteClass::Analyses => limits.analyses.unwrap_or(self.analyses),
        }
    }

    /// Count one request of key `key_id` (with its own `limits`) in `class`: the headers to send, or 429 / 503.
    pub async fn check(
        &self,
        key_id: &str,
        limits: &KeyLimits,
        class: RouteClass,
    ) -> Result<Option<LimitHeaders>, ApiError> {
        let policy = self.policy(limits, class);
        let name = class.as_str();
        let policy_header = format!(
            "\"{name}\";q={};w={}",
            policy.limit,
            policy.period.as_secs()
        );
        let key = format!("celeriac:ratelimit:{key_id}:{name}");
        let down = self
            .down_until
            .lock()
            .expect("limiter")
            .is_some_and(|t| std::time::Instant::now() < t);
        let failure = match self.redis.get() {
            None => "Redis is not connected".to_string(),
            Some(_) if down => "Redis failed a check less than a second ago".to_string(),
            Some(b) => match tokio::time::timeout(
                self.timeout,
                b.rate_limit(&key, policy.limit, policy.period),
            )
            .await
            {
                Ok(Ok(d)) if d.allowed => {
                    return Ok(Some(LimitHeaders {
                        policy: policy_header,
                        state: format!(
                            "\"{name}\";r={};t={}",
                            d.remaining,
                            d.reset.as_secs_f64().ceil() as u64
                        ),
                    }));
                }
                Ok(Ok(d)) => {
                    self.metrics.rate_limited.with_label_values(&[name]).inc();
                    return Err(ApiError::RateLimited {
                        class: name,
                        policy: policy.text(),
                        retry_after: (d.retry_after.as_secs_f64().ceil() as u64).max(1),
                    });
                }
                Ok(Err(e)) => {
                    self.redis.note_error(&e);
                    e.to_string()
                }
                Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
            },
        };
        if !down {
            *self.down_until.lock().expect("limiter") =
                Some(std::time::Instant::now() + Duration::from_secs(1));
        }
        self.metrics
            .limiter_errors
            .with_label_values(&[name, class.when_redis_fails()])
            .inc();
        match class {
            RouteClass::Statistics => {
                if !down {
                    tracing::warn!(class = name, error = %failure, "rate limiter unavailable; letting reads through");
                }
                Ok(None)
            }
            RouteClass::Analyses => {
                if !down {
                    tracing::warn!(class = name, error = %failure, "rate limiter unavailable; refusing submissions");
                }
                Err(ApiError::RateLimiterUnavailable(failure))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print() {
        let p = RatePolicy::parse("100/minute").unwrap();
        assert_eq!((p.limit, p.period.as_secs()), (100, 60));
        assert_eq!(p.text(), "100/minute");
        assert_eq!(RatePolicy::parse("5/min").unwrap().period.as_secs(), 60);
        assert_eq!(RatePolicy::parse("2/s").unwrap().period.as_secs(), 1);
        for bad in ["", "100", "x/minute", "0/minute", "10/fortnight", "-1/s"] {
            assert!(RatePolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_limits_override_one_or_both_classes() {
        let k = KeyLimits::parse("30/minute").unwrap();
        assert_eq!(k.statistics.unwrap().limit, 30);
        assert_eq!(k.analyses, None);
        let k = KeyLimits::parse("statistics=1000/hour, analyses=2/minute").unwrap();
        assert_eq!(k.statistics.unwrap().period.as_secs(), 3600);
        assert_eq!(k.analyses.unwrap().limit, 2);
        assert!(KeyLimits::parse("jobs=1/s").is_err());
        assert!(KeyLimits::parse(",").is_err());
    }
}
