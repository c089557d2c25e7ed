//! Per-task rate limits with Celery's syntax (`10/s`, `100/m`, `5/h`, or a bare number per second),
//! as a token bucket per task name inside this worker (Celery's limits are per worker too).

use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Parse a Celery rate string into tasks per second; `None` for "no limit" (`0` or empty).
pub fn parse_rate(s: &str) -> Result<Option<f64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let (n, unit) = s.split_once('/').unwrap_or((s, "s"));
    let n: f64 = n
        .trim()
        .parse()
        .map_err(|_| format!("Invalid rate limit string: {s:?}"))?;
    let per = match unit.trim() {
        "s" | "" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("Invalid rate limit string: unknown unit {other:?}")),
    };
    if n <= 0.0 {
        Ok(None)
    } else {
        Ok(Some(n / per))
    }
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    next: Instant,
}

#[derive(Debug, Default)]
pub struct RateLimiters {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiters {
    /// Wait until `task` may start under `limit`. Invalid or empty limits do not wait.
    pub async fn acquire(&self, task: &str, limit: &str) {
        let Ok(Some(rate)) = parse_rate(limit) else {
            return;
        };
        let wait = {
            let mut buckets = self.buckets.lock().await;
            let now = Instant::now();
            let b = buckets
                .entry(task.to_string())
                .or_insert(Bucket { rate, next: now });
            b.rate = rate;
            let start = b.next.max(now);
            b.next = start + Duration::from_secs_f64(1.0 / rate);
            start - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_like_celery() {
        assert_eq!(parse_rate("10/s"), Ok(Some(10.0)));
        assert_eq!(parse_rate("60/m"), Ok(Some(1.0)));
        assert_eq!(parse_rate("5"), Ok(Some(5.0)));
        assert_eq!(parse_rate("0"), Ok(None));
        assert!(parse_rate("ten/s").is_err());
        assert!(parse_rate("1/d").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_spaces_starts() {
        let r = RateLimiters::default();
        let t0 = tokio::time::Instant::now();
        for _ in 0..3 {
            r.acquire("t", "2/s").await;
        }
        // Three starts at 2/s: the third waits until 1 s after the first (paused clock: exact).
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
    }
}
