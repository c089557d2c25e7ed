//! Whether the analysis schema has been prepared (migrated), as a state the background preparation writes and the
//! tasks wait on. No database here: [`Readiness`] only records outcomes and answers "ready yet?".

use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Where the analysis schema stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// Not prepared yet: `attempts` attempts have failed so far, the last one with `last_error`.
    Pending {
        attempts: u64,
        last_error: Option<String>,
    },
    /// Migrated; the tasks may use the database.
    Ready,
}

impl SchemaState {
    pub fn is_ready(&self) -> bool {
        matches!(self, SchemaState::Ready)
    }

    fn attempts(&self) -> u64 {
        match self {
            SchemaState::Pending { attempts, .. } => *attempts,
            SchemaState::Ready => u64::MAX,
        }
    }

    /// Why the tasks cannot use the database in this state (`None` when ready).
    pub fn not_ready_reason(&self) -> Option<String> {
        match self {
            SchemaState::Ready => None,
            SchemaState::Pending {
                last_error: Some(e),
                ..
            } => Some(format!("analysis schema not ready: {e}")),
            SchemaState::Pending {
                last_error: None, ..
            } => Some("analysis schema not ready: its preparation has not finished".to_string()),
        }
    }
}

/// The schema state, shared by the preparation (which records outcomes) and the tasks (which wait for it).
#[derive(Debug)]
pub(crate) struct Readiness {
    state: watch::Sender<SchemaState>,
    retry_now: Notify,
}

impl Readiness {
    pub(crate) fn new() -> Readiness {
        Readiness {
            state: watch::Sender::new(SchemaState::Pending {
                attempts: 0,
                last_error: None,
            }),
            retry_now: Notify::new(),
        }
    }

    pub(crate) fn state(&self) -> SchemaState {
        self.state.borrow().clone()
    }

    /// Record the outcome of one preparation attempt. Once ready, the state stays ready.
    pub(crate) fn record(&self, outcome: Result<(), String>) {
        self.state.send_if_modified(|s| match (&*s, outcome) {
            (SchemaState::Ready, _) => false,
            (_, Ok(())) => {
                *s = SchemaState::Ready;
                true
            }
            (SchemaState::Pending { attempts, .. }, Err(e)) => {
                *s = SchemaState::Pending {
                    attempts: attempts.saturating_add(1),
                    last_error: Some(e),
                };
                true
            }
        });
    }

    /// Wait until the schema is ready, at most `bound`; `Err` carries why it is not.
    ///
    /// When an attempt has already failed, the caller does not sit out the preparation's backoff: it asks for an
    /// attempt now and takes that attempt's outcome. So while the database is down a task fails as soon as the
    /// database has refused once more, and the first task after it comes back finds the schema ready.
    pub(crate) async fn wait(&self, bound: Duration) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        let seen = {
            let s = rx.borrow_and_update();
            if s.is_ready() {
                return Ok(());
            }
            s.attempts()
        };
        // Ask for an attempt now: the first one (the preparation starts on first demand), or a new one when an
        // attempt already failed.
        self.retry_now.notify_one();
        // A timeout or a closed channel both leave the state as it is, which says why.
        let _ =
            tokio::time::timeout(bound, rx.wait_for(|s| s.is_ready() || s.attempts() > seen)).await;
        match self.state().not_ready_reason() {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// Resolves once a task needs the schema (the preparation waits for this before its first attempt).
    pub(crate) async fn demanded(&self) {
        self.retry_now.notified().await;
    }

    /// The preparation's pause between attempts: `delay`, cut short when a task asks for an attempt now.
    pub(crate) async fn pause(&self, delay: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.retry_now.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const BOUND: Duration = Duration::from_secs(30);

    #[test]
    fn records_failures_then_stays_ready() {
        let r = Readiness::new();
        assert_eq!(
            r.state().not_ready_reason().unwrap(),
            "analysis schema not ready: its preparation has not finished"
        );
        r.record(Err("connection refused".into()));
        r.record(Err("still refused".into()));
        assert_eq!(
            r.state(),
            SchemaState::Pending {
                attempts: 2,
                last_error: Some("still refused".into())
            }
        );
        assert_eq!(
            r.state().not_ready_reason().unwrap(),
            "analysis schema not ready: still refused"
        );
        r.record(Ok(()));
        r.record(Err("later failure".into()));
        assert!(r.state().is_ready());
        assert_eq!(r.state().not_ready_reason(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn nobody_preparing_means_not_ready_after_the_bound() {
        let r = Readiness::new();
        let t = tokio::time::Instant::now();
        let err = r.wait(BOUND).await.unwrap_err();
        assert_eq!(t.elapsed(), BOUND);
        assert!(err.contains("has not finished"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_task_gets_the_outcome_of_the_attempt_in_flight() {
        let r = Arc::new(Readiness::new());
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait(BOUND).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        r.record(Err("connection refused".into()));
        assert_eq!(
            waiter.await.unwrap().unwrap_err(),
            "analysis schema not ready: connection refused"
        );

        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait(BOUND).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        r.record(Ok(()));
        assert_eq!(waiter.await.unwrap(), Ok(()));
        // Ready is immediate from then on.
        assert_eq!(r.wait(Duration::ZERO).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failure_a_task_cuts_the_backoff_short() {
        let r = Arc::new(Readiness::new());
        r.record(Err("connection refused".into()));
        // The preparation pauses for a long backoff; a task arriving asks for an attempt now.
        let preparer = tokio::spawn({
            let r = r.clone();
            async move {
                let t = tokio::time::Instant::now();
                r.pause(Duration::from_secs(10)).await;
                let waited = t.elapsed();
                r.record(Ok(()));
                waited
            }
        });
        tokio::task::yield_now().await;
        let t = tokio::time::Instant::now();
        assert_eq!(r.wait(BOUND).await, Ok(()));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(preparer.await.unwrap() < Duration::from_secs(1));
    }
}
