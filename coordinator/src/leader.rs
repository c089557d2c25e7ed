//! Leadership among several coordinators on one broker: a fenced lease in Redis (`broker::lease`).
//!
//! Every coordinator serves the whole API; one of them, the leader, also does the duty that must be done by one
//! process only: moving jobs out of offline workers' `.dq2` queues, including finishing a move a previous leader
//! left half done. The lease lives in the broker's Redis (so the move scripts can check it in the same atomic
//! step), or with RabbitMQ in the Redis that keeps celeriac's state.
//!
//! A background task renews the lease every [`Leader::renew_interval`] and, on a follower, tries to take it as
//! soon as it is free; a leader that dies stops renewing and its lease expires after `ttl`. A leader counts
//! itself leader only until `ttl` after the start of its last successful renewal (never beyond what Redis
//! grants), and every move step carries the lease's term and token, checked by Redis inside the step, so a
//! deposed leader moves nothing even if it has not noticed yet.

use broker::lease::{Fence, LeaseState};
use broker::{Broker, BrokerError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// The lease key (value `"<term>:<token>"`).
pub const LEASE_KEY: &str = "celeriac:coordinator:leader";
/// The fencing-term counter (`INCR` at every takeover).
pub const TERM_KEY: &str = "celeriac:coordinator:term";

/// This coordinator's view of the lease.
pub struct Leader {
    redis: Broker,
    token: String,
    ttl: Duration,
    metrics: Arc<Metrics>,
    state: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    fence: Option<Fence>,
    /// Until when this process may act as leader without another successful renewal.
    valid_until: Option<Instant>,
    /// The last term seen (held by us or by another coordinator).
    term_seen: u64,
}

/// Leadership as shown by the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaderStatus {
    /// `leader` or `follower`.
    pub role: &'static str,
    /// The last fencing term this coordinator saw.
    pub term: u64,
    /// This coordinator's lease token.
    pub token: String,
    pub lease_ttl_secs: f64,
}

impl Leader {
    /// A follower that will contend for the lease in `redis`, lasting `ttl` without renewal.
    pub fn new(redis: Broker, ttl: Duration, metrics: Arc<Metrics>) -> Leader {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let token = if host.is_empty() {
            id
        } else {
            format!("{host}/{id}")
        };
        Leader {
            redis,
            token,
            ttl,
            metrics,
            state: Mutex::new(Held::default()),
        }
    }

    /// How often the lease is renewed by its holder and tried by the others: a quarter of its life, between
    /// 100 ms and 1 s, so a dead leader is replaced within `ttl` plus one interval.
    pub fn renew_interval(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// The fence to carry on a move, when this coordinator leads now.
    pub fn fence(&self) -> Option<Fence> {
        let s = self.state.lock().expect("leader state");
        match (&s.fence, s.valid_until) {
            (Some(f), Some(until)) if Instant::now() < until => Some(f.clone()),
            _ => None,
        }
    }

    /// Take or renew the lease once; logs and counts a change of role. Returns the fence when leading.
    pub async fn tick(&self) -> Option<Fence> {
        let started = Instant::now();
        let got = self
            .redis
            .lease_acquire(LEASE_KEY, TERM_KEY, &self.token, self.ttl)
            .await;
        match got {
            Ok(LeaseState::Held(fence)) => {
                let mut s = self.state.lock().expect("leader state");
                let gained = s.fence.as_ref().map(|f| f.term) != Some(fence.term);
                if gained {
                    tracing::warn!(
                        term = fence.term,
                        token = %self.token,
                        "gained coordinator leadership: this coordinator now re-routes offline workers' jobs"
                    );
                    self.metrics.leader_changes.inc();
                }
                s.term_seen = fence.term;
                s.valid_until = Some(started + self.ttl);
                s.fence = Some(fence.clone());
                drop(s);
                self.metrics.is_leader.set(1);
                self.metrics.leader_term.set(fence.term as i64);
                Some(fence)
            }
            Ok(LeaseState::Other { term, holder }) => {
                let lost = {
                    let mut s = self.state.lock().expect("leader state");
                    s.term_seen = s.term_seen.max(term);
                    s.valid_until = None;
                    s.fence.take()
                };
                if let Some(old) = lost {
                    tracing::warn!(
                        term = old.term,
                        new_term = term,
                        leader = %holder,
                        "lost coordinator leadership: another coordinator holds the lease; no more moves here"
                    );
                    self.metrics.leader_changes.inc();
                }
                self.metrics.is_leader.set(0);
                self.metrics.leader_term.set(term as i64);
                None
            }
            Err(e) => {
                self.on_error(&e);
                self.fence()
            }
        }
    }

    /// A renewal failed (Redis unreachable): keep leading only until the last grant runs out.
    fn on_error(&self, e: &BrokerError) {
        let expired = {
            let mut s = self.state.lock().expect("leader state");
            let expired = s.valid_until.is_some_and(|until| Instant::now() >= until);
            if expired {
                s.valid_until = None;
                s.fence.take()
            } else {
                None
            }
        };
        if let Some(old) = expired {
            tracing::warn!(term = old.term, error = %e, "lost coordinator leadership: the lease could not be renewed in time");
            self.metrics.leader_changes.inc();
            self.metrics.is_leader.set(0);
        } else {
            tracing::debug!(error = %e, "lease renewal failed; will retry");
        }
    }

    /// A fenced step answered that `fence` is not current any more: stop leading at once.
    pub fn deposed(&self, fence: &Fence) {
        let was = {
            let mut s = self.state.lock().expect("leader state");
            if s.fence.as_ref() == Some(fence) {
                s.valid_until = None;
                s.fence.take()
            } else {
                None
            }
        };
        if let Some(old) = was {
            tracing::warn!(
                term = old.term,
                "lost coordinator leadership: Redis refused a move under this lease; the move is left to the new leader"
            );
            self.metrics.leader_changes.inc();
            self.metrics.is_leader.set(0);
        }
    }

    /// Give the lease up (graceful stop), so a follower takes over at its next try instead of after `ttl`.
    pub async fn release(&self) {
        let fence = {
            let mut s = self.state.lock().expect("leader state");
            s.valid_until = None;
            s.fence.take()
        };
        if let Some(f) = fence {
            self.metrics.is_leader.set(0);
            match self.redis.lease_release(&f).await {
                Ok(true) => {
                    tracing::info!(term = f.term, "gave up coordinator leadership (stopping)")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not give the lease up; it expires by itself")
                }
            }
        }
    }

    /// Leadership as the API shows it.
    pub fn status(&self) -> LeaderStatus {
        let leading = self.fence().is_some();
        let s = self.state.lock().expect("leader state");
        LeaderStatus {
            role: if leading { "leader" } else { "follower" },
            term: s.term_seen,
            token: self.token.clone(),
            lease_ttl_secs: self.ttl.as_secs_f64(),
        }
    }

    /// The Redis the lease lives in.
    pub fn redis(&self) -> &Broker {
        &self.redis
    }
}
