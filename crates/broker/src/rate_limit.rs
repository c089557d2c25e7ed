//! A rate limiter shared by every process that talks to the same Redis: GCRA in one Lua script
//! (`lua/gcra.lua`), with the server's clock, so two API replicas enforce one limit between them.

use std::time::Duration;

use crate::{Broker, Result};

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests still allowed right now after this one.
    pub remaining: u64,
    /// When refused: how long until one request is allowed again.
    pub retry_after: Duration,
    /// How long until the limiter is back to a full quota.
    pub reset: Duration,
}

impl Broker {
    /// Count one request against `key`, allowing `limit` per `period` (bursts up to `limit`).
    pub async fn rate_limit(
        &self,
        key: &str,
        limit: u64,
        period: Duration,
    ) -> Result<RateDecision> {
        let (allowed, remaining, retry_us, reset_us): (i64, i64, i64, i64) = self
            .inner
            .scripts
            .gcra
            .key(key)
            .arg(limit.max(1))
            .arg(period.as_micros().max(1) as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: remaining.max(0) as u64,
            retry_after: Duration::from_micros(retry_us.max(0) as u64),
            reset: Duration::from_micros(reset_us.max(0) as u64),
        })
    }
}
